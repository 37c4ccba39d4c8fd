"""The synthetic QA task: hub schema, answers where answer_start says, the v2 share, caching by options."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from tmkd.data import synthetic_qa
from tmkd.data.synthetic import vocabulary
from tmkd.metrics.squad import evaluate, golds_from_rows


def test_roles_split_the_vocabulary():
    keys, stop, filler = synthetic_qa.roles()
    assert len(keys) == synthetic_qa.N_KEYS and stop not in keys and stop not in filler
    assert sorted([*keys, stop, *filler]) == vocabulary()


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_answers_sit_at_answer_start_and_the_unanswerable_share_is_exact(share):
    rows = synthetic_qa.generate_qa(200, seed=1, unanswerable=share)
    assert rows == synthetic_qa.generate_qa(200, seed=1, unanswerable=share)
    assert rows != synthetic_qa.generate_qa(200, seed=2, unanswerable=share)
    keys, stop, _ = synthetic_qa.roles()
    vocab = set(vocabulary())
    unanswerable = 0
    for row in rows:
        words = row["context"].split()
        assert set(words) <= vocab and row["question"] in keys
        texts, starts = row["answers"]["text"], row["answers"]["answer_start"]
        if not texts:
            unanswerable += 1
            assert starts == [] and row["question"] not in words
            continue
        (text,), (start,) = texts, starts
        assert row["context"][start:start + len(text)] == text
        assert words.count(row["question"]) == 1
        # the answer is what follows the question's key, up to the stop word
        after = words[words.index(row["question"]) + 1:]
        assert text == " ".join(after[:after.index(stop)])
        assert 1 <= len(text.split()) <= 3
    assert unanswerable == round(200 * share)


def test_a_rule_that_reads_the_context_scores_100():
    """The task is solvable from the text alone (what a small model has to learn)."""
    rows = synthetic_qa.generate_qa(100, seed=0, unanswerable=0.5, facts=4)
    keys, stop, _ = synthetic_qa.roles()

    def solve(question: str, context: str) -> str:
        words = context.split()
        if question not in words:
            return ""
        after = words[words.index(question) + 1:]
        return " ".join(after[:after.index(stop)])

    preds = {r["id"]: solve(r["question"], r["context"]) for r in rows}
    golds = golds_from_rows([r["id"] for r in rows], [r["answers"] for r in rows])
    assert evaluate(golds, preds)["exact"] == 100.0
    # ignoring the question (answer about the first key in the context) does not: 1 in 4 of the answerable half
    first = {r["id"]: solve(next(w for w in r["context"].split() if w in keys), r["context"]) for r in rows}
    assert evaluate(golds, first)["exact"] < 30.0


def test_materialise_writes_the_hub_schema_once_per_options(tmp_path, monkeypatch):
    monkeypatch.setenv("TMKD_CACHE_DIR", str(tmp_path))
    folder = synthetic_qa.materialise_qa("synth_qa", {"n_train": 30, "n_eval": 10, "unanswerable": 0.2})
    assert folder.parent == tmp_path / "synthetic"
    train = folder / "train.parquet"
    assert pq.read_schema(train).equals(synthetic_qa.SCHEMA, check_metadata=True)
    real = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "squad_v2" / "validation.parquet"
    if real.is_file():  # the same Arrow schema and `datasets` features as the real SQuAD v2 files
        assert pq.read_schema(train).equals(pq.read_schema(real), check_metadata=True)
    stamp = train.stat().st_mtime_ns
    # defaults filled in and option order do not change the key; files are not rewritten
    same = synthetic_qa.materialise_qa("synth_qa", {"unanswerable": 0.2, "n_eval": 10, "n_train": 30, "seed": 0})
    assert same == folder and train.stat().st_mtime_ns == stamp
    assert synthetic_qa.materialise_qa("synth_qa", {"n_train": 30, "n_eval": 10, "seed": 1}) != folder
    ds = load_dataset("parquet", data_files={s: str(folder / f"{s}.parquet") for s in ("train", "validation")})
    assert (len(ds["train"]), len(ds["validation"])) == (30, 10)
    assert ds["train"].column_names == ["id", "title", "context", "question", "answers"]
    assert sum(not a["text"] for a in ds["validation"]["answers"]) == 2
    assert not set(ds["train"]["id"]) & set(ds["validation"]["id"])
    assert ds["train"]["context"] != ds["validation"]["context"][:10]


def test_bad_options_are_errors():
    with pytest.raises(ValueError, match="unknown synthetic QA option"):
        synthetic_qa.materialise_qa("x", {"labels": 2})
    with pytest.raises(ValueError, match="unanswerable"):
        synthetic_qa.generate_qa(10, seed=0, unanswerable=1.0)
    with pytest.raises(ValueError, match="facts"):
        synthetic_qa.generate_qa(10, seed=0, facts=synthetic_qa.N_KEYS)
