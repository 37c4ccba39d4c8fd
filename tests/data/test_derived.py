"""The derived QNLI-from-SQuAD corpus: sentence spans, pairs and labels, the dev-split and dev-overlap guards."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tmkd.data import DataError, get_task, load_splits
from tmkd.data.derived import qnli_pairs, split_sentences

ROOT = Path(__file__).resolve().parents[2]
# ../shared/data from the main checkout (README), ../../shared/data from a worktree under wt/
SHARED = next((p for p in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data")
               if (p / "squad" / "train.parquet").is_file()), ROOT / "no-shared-data")

TOWER = ("The tower is 3.5 km from the river. Visitors come from many places, e.g. from Spain. "
         "The tower opened in 1889.")
ADA = 'Ada wrote the first program. She worked with Babbage! "Was it in 1843?" asked the critics.'


def squad_row(qid: str, context: str, question: str, answer: str) -> dict:
    return {"id": qid, "title": "t", "context": context, "question": question,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]}}


SQUAD = [
    squad_row("q1", TOWER, "How far is the tower from the river?", "3.5 km"),
    squad_row("q2", TOWER, "When did the tower open?", "1889"),
    squad_row("q3", ADA, "Who did Ada work with?", "Babbage"),
    squad_row("q4", ADA, "Who asked?", "the critics"),
]
TOWER_SENTENCES = ["The tower is 3.5 km from the river.", "Visitors come from many places, e.g. from Spain.",
                   "The tower opened in 1889."]
ADA_SENTENCES = ["Ada wrote the first program.", "She worked with Babbage!", '"Was it in 1843?" asked the critics.']
# (question, sentence index, label): 0 entailment = the sentence holds the answer span, 1 not_entailment
EXPECTED = [(q, s, int(s != hit)) for q, hit in (("q1", 0), ("q2", 2)) for s in range(3)] + \
           [(q, s, int(s != hit)) for q, hit in (("q3", 1), ("q4", 2)) for s in range(3)]


def texts(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


def test_sentence_spans_are_exact_and_tricky_punctuation_is_documented():
    assert texts(TOWER) == TOWER_SENTENCES  # "3.5" (no space) and "e.g. from" (lower case) do not split
    assert texts(ADA) == ADA_SENTENCES      # "!" then an opening quote splits; '?" asked' (lower case) does not
    # initials, one-letter parts and titles do not end a sentence; the price: "the U.S. The" does not split either
    assert texts("Joan B. Kroc went to the U.S. Army. Mr. Smith came, e.g. The Times said. St. Louis won.") == \
        ["Joan B. Kroc went to the U.S. Army.", "Mr. Smith came, e.g. The Times said.", "St. Louis won."]
    assert texts("It moved to the U.S. The end.") == ["It moved to the U.S. The end."]
    assert texts("Sales rose 12%. 2001 was better?! Yes.") == ["Sales rose 12%.", "2001 was better?!", "Yes."]
    assert texts("  Leading space. Trailing space.  ") == ["Leading space.", "Trailing space."]
    spans = split_sentences(TOWER)
    assert all(TOWER[a:b].strip() == TOWER[a:b] for a, b in spans) and spans[0][0] == 0 and spans[-1][1] == len(TOWER)


def test_every_question_sentence_pair_with_its_derived_label():
    frame, stats = qnli_pairs(SQUAD)
    assert list(frame.columns[:4]) == ["question", "sentence", "label", "idx"]
    by_id = {r["id"]: r for r in SQUAD}
    sentences = {"q1": TOWER_SENTENCES, "q2": TOWER_SENTENCES, "q3": ADA_SENTENCES, "q4": ADA_SENTENCES}
    expected = [(by_id[q]["question"], sentences[q][s], label) for q, s, label in EXPECTED]
    assert list(zip(frame["question"], frame["sentence"], frame["label"], strict=True)) == expected
    assert frame["idx"].tolist() == list(range(12)) and frame["squad_id"].tolist() == [q for q, _, _ in EXPECTED]
    assert stats == {"questions": 4, "answer_in_no_sentence": 0, "pairs": 12, "entailment": 4}


def test_an_answer_cut_by_a_sentence_split_gives_only_not_entailment_pairs():
    row = squad_row("x", TOWER, "What?", "river. Visitors")  # crosses the first boundary
    frame, stats = qnli_pairs([row])
    assert frame["label"].tolist() == [1, 1, 1] and stats["answer_in_no_sentence"] == 1


def qnli_dev(questions: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"question": questions, "sentence": ["A sentence."] * len(questions),
                         "label": [i % 2 for i in range(len(questions))], "idx": range(len(questions))})


def write_data(root: Path, dev_questions: list[str] | None = None, squad: list[dict] = SQUAD) -> Path:
    (root / "squad").mkdir(parents=True, exist_ok=True)
    (root / "glue" / "qnli").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(squad).to_parquet(root / "squad" / "train.parquet", index=False)
    pd.DataFrame(squad).to_parquet(root / "squad" / "validation.parquet", index=False)  # stands in for SQuAD dev
    qnli_dev(dev_questions or ["Where is the dev question?", "Who wrote the dev set?"]).to_parquet(
        root / "glue" / "qnli" / "validation.parquet", index=False)
    return root


def test_the_task_reads_the_pairs_as_qnli_unlabelled_by_default_and_labelled_for_the_control(tmp_path):
    root = write_data(tmp_path)
    unlabelled = load_splits(get_task("qnli_from_squad"), root)
    assert len(unlabelled["train"]) == 12 and "label" not in unlabelled["train"].column_names
    assert unlabelled["validation"]["label"] == [0, 1]  # QNLI dev keeps its labels: it chooses the checkpoint
    labelled = load_splits(get_task("qnli_from_squad", train_labelled=True), root)["train"]
    assert labelled["label"] == [label for _, _, label in EXPECTED]
    assert labelled["sentence"] == unlabelled["train"]["sentence"]
    assert get_task("qnli_from_squad").label_names == get_task("qnli").label_names  # QNLI's teachers fit


def test_a_squad_dev_split_is_refused(tmp_path):
    root = write_data(tmp_path)
    task = get_task("qnli_from_squad", derived={"source_split": "validation"})
    with pytest.raises(DataError, match=r"source_split='validation' is not squad's train split.*dev split"):
        load_splits(task, root)


def test_pairs_sharing_a_question_with_the_eval_split_are_refused(tmp_path):
    # the same question as q2 with other spacing and case, as QNLI's and SQuAD's copies of a question may differ
    root = write_data(tmp_path, ["Who wrote the dev set?", "when did  the tower open? "])
    with pytest.raises(DataError, match=r"1 question\(s\) of the derived train pairs are also in eval split "
                                        r"'validation' \(e\.g\. 'When did the tower open\?'\)"):
        load_splits(get_task("qnli_from_squad"), root)


def test_max_pairs_takes_a_seeded_subset_in_corpus_order(tmp_path):
    root = write_data(tmp_path)
    pick = [load_splits(get_task("qnli_from_squad", derived={"max_pairs": 5, "seed": s}), root)["train"]["idx"]
            for s in (0, 0, 1)]
    assert pick[0] == pick[1] != pick[2]
    assert len(pick[0]) == 5 and pick[0] == sorted(pick[0]) and set(pick[0]) <= set(range(12))
    with pytest.raises(DataError, match=r"derived\.max_pairs must be a positive integer"):
        load_splits(get_task("qnli_from_squad", derived={"max_pairs": 0}), root)


@pytest.mark.skipif(not (SHARED / "squad" / "train.parquet").is_file(), reason="no ../shared/data here")
def test_pair_count_on_the_shared_squad_train_subset():
    frame, stats = qnli_pairs(pd.read_parquet(SHARED / "squad" / "train.parquet").to_dict("records"))
    assert stats["questions"] == 11877 and len(frame) == 54811  # the count README.md quotes


def test_the_source_split_is_what_a_runs_identity_fingerprints(tmp_path):
    """A derived train split has no file of its own: the SQuAD train file it is built from must count, else an edited
    source would not make a new run."""
    from tmkd.data.loading import local_split_files

    root = write_data(tmp_path)
    files = local_split_files(get_task("qnli_from_squad"), root)
    assert files["train"] == root / "squad" / "train.parquet"
    assert files["validation"] == root / "glue" / "qnli" / "validation.parquet"
