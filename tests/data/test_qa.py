"""QA windows and labels, answer post-processing, and teacher -> student span-logit mapping across tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import BertTokenizerFast

from tmkd.data import qa
from tmkd.data.synthetic import vocabulary
from tmkd.data.synthetic_qa import generate_qa
from tmkd.metrics.squad import evaluate, golds_from_rows
from tmkd.models.tokenizers import SPECIALS, synthetic_tokenizer

MPNET = "sentence-transformers/all-mpnet-base-v2"
WORDS = vocabulary()


def split_tokenizer() -> BertTokenizerFast:
    """A WordPiece tokenizer over the same words that cuts two thirds of them into pieces (no download)."""
    vocab = list(SPECIALS)
    for i, w in enumerate(WORDS):
        pieces = [w] if i % 3 == 2 else [w[:2], "##" + w[2:]] if i % 3 == 0 else [w[:2], "##" + w[2:4], "##" + w[4:]]
        vocab += [p for p in pieces if p not in vocab]
    tok = BertTokenizerFast(vocab={p: i for i, p in enumerate(vocab)}, do_lower_case=True)
    tok.model_max_length = 512
    return tok


def _char_spans(words: list[str]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return spans


# ---------------------------------------------------------------------------------------------- windows + labels

CONTEXT_WORDS = WORDS[:40]
CONTEXT = " ".join(CONTEXT_WORDS)
SPANS = _char_spans(CONTEXT_WORDS)
QUESTION = f"  {WORDS[50]} {WORDS[51]}"  # leading whitespace is stripped


def _answer(first: int, last: int) -> dict[str, list]:
    return {"text": [" ".join(CONTEXT_WORDS[first:last + 1])], "answer_start": [SPANS[first][0]]}


def _rows(*answers: dict[str, list]) -> dict[str, list]:
    n = len(answers)
    return {"question": [QUESTION] * n, "context": [CONTEXT] * n, "row_id": list(range(n)), "answers": list(answers)}


def test_windows_cover_the_context_with_the_stride_and_label_answers():
    # [CLS] q q [SEP] <11 context words> [SEP]: windows start at context words 0, 7, 14, 21, 28, 35 (4 overlap)
    tok = synthetic_tokenizer()
    rows = _rows(_answer(2, 4), _answer(9, 11), _answer(8, 9), {"text": [], "answer_start": []})
    out = qa.prepare_features(rows, tok, max_length=16, doc_stride=4, train=True)
    assert out["example_index"] == [r for r in range(4) for _ in range(6)]
    starts = [0, 7, 14, 21, 28, 35]
    assert out["context_span"][:6] == [[SPANS[s][0], SPANS[min(s + 10, 39)][1]] for s in starts]
    assert "token_type_ids" in out and all(len(x) <= 16 for x in out["input_ids"])
    offsets = out["offset_mapping"][1]
    assert offsets[:4] == [qa.NO_OFFSET] * 4 and offsets[-1] == qa.NO_OFFSET
    assert offsets[4:-1] == [list(SPANS[w]) for w in range(7, 18)]

    def labels(row: int) -> list[tuple[int, int]]:
        return list(zip(out["start_positions"][6 * row:6 * row + 6], out["end_positions"][6 * row:6 * row + 6],
                        strict=True))

    assert labels(0) == [(6, 8)] + [(0, 0)] * 5  # words 2..4 only in window 0
    assert labels(1) == [(0, 0), (6, 8)] + [(0, 0)] * 4  # words 9..11 straddle window 0's end -> CLS there
    assert labels(2) == [(12, 13), (5, 6)] + [(0, 0)] * 4  # words 8..9 fit in windows 0 and 1
    assert labels(3) == [(0, 0)] * 6  # unanswerable
    for f in range(12):
        s, e = out["start_positions"][f], out["end_positions"][f]
        if s:
            assert tok.decode(out["input_ids"][f][s:e + 1]) == rows["answers"][out["example_index"][f]]["text"][0]


def test_answer_starting_or_ending_mid_token_labels_the_tokens_holding_it():
    tok = split_tokenizer()
    word = next(w for i, w in enumerate(WORDS) if i % 3 == 0)  # "xy" + "##zzz"
    context = f"{WORDS[2]} {word} {WORDS[5]}"
    a = context.index(word)
    rows = {"question": [WORDS[8]], "context": [context], "row_id": [0],
            "answers": [{"text": [word[3:]], "answer_start": [a + 3]}]}  # the answer starts inside "##zzz"
    out = qa.prepare_features(rows, tok, max_length=32, doc_stride=4, train=True)
    s, e = out["start_positions"][0], out["end_positions"][0]
    assert s == e and tok.convert_ids_to_tokens(out["input_ids"][0][s]) == "##" + word[2:]


def test_features_survive_datasets_map_and_arrow():
    tok = synthetic_tokenizer()
    ds = Dataset.from_dict(_rows(_answer(9, 11), _answer(30, 31)))
    feats = ds.map(qa.prepare_features, batched=True, remove_columns=ds.column_names,
                   fn_kwargs={"tokenizer": tok, "max_length": 16, "doc_stride": 4, "train": True})
    direct = qa.prepare_features(ds[:], tok, max_length=16, doc_stride=4, train=True)
    assert len(feats) == 12 and feats[:] == direct
    assert np.asarray(feats.with_format("numpy")[0]["offset_mapping"]).shape == (16, 2)


def test_prepare_features_rejects_bad_settings():
    tok = synthetic_tokenizer()
    rows = _rows(_answer(2, 4))
    with pytest.raises(ValueError, match="larger than doc_stride"):
        qa.prepare_features(rows, tok, max_length=16, doc_stride=16, train=True)
    with pytest.raises(ValueError, match=r"1 question\(s\) \(row_id 0; longest 2 tokens\).*raise max_length"):
        qa.prepare_features(rows, tok, max_length=8, doc_stride=4, train=False)  # 8 - 3 - 2 = 3 < 5
    with pytest.raises(ValueError, match="no 'answers' column"):
        qa.prepare_features({k: v for k, v in rows.items() if k != "answers"}, tok, max_length=16, doc_stride=4,
                            train=True)
    with pytest.raises(ValueError, match="no 'row_id' column"):
        qa.prepare_features({k: v for k, v in rows.items() if k != "row_id"}, tok, max_length=16, doc_stride=4,
                            train=False)
    left = synthetic_tokenizer()
    left.padding_side = "left"
    with pytest.raises(ValueError, match="pads on the left"):
        qa.prepare_features(rows, left, max_length=16, doc_stride=4, train=False)
    with pytest.raises(ValueError, match="model_max_length"):
        qa.prepare_features(rows, tok, max_length=1024, doc_stride=4, train=False)


# ------------------------------------------------------------------------------------------------- postprocess


def _window(context_words: int, offset: int = 0) -> list[list[int]]:
    """[CLS] q [SEP] c_offset .. c_(offset+n-1) [SEP] over a context of 5-letter words."""
    spans = _char_spans(["xxxxx"] * (offset + context_words))[offset:]
    return [qa.NO_OFFSET] * 3 + [list(s) for s in spans] + [qa.NO_OFFSET]


EX = {"id": ["a", "b"], "context": ["aaaaa bbbbb ccccc ddddd", "w0000 w1111 w2222 w3333 w4444 w5555"]}


def test_postprocess_picks_the_best_valid_span():
    feats = {"example_index": [0], "offset_mapping": [_window(4)]}
    #              CLS  q   SEP  aaaaa bbbbb ccccc ddddd SEP
    start = [[0.0, 9.0, 0.0, 0.5, 5.0, 0.0, 0.0, 0.0]]  # the question token is best, but not context
    end = [[0.0, 0.0, 0.0, 8.0, 0.0, 4.0, 1.0, 0.0]]  # end at aaaaa would precede the start bbbbb
    preds, na = qa.postprocess(EX, feats, start, end)
    assert preds == {"a": "bbbbb ccccc"}  # 5 + 4 beats (aaaaa, aaaaa) 0.5 + 8
    assert na["a"] == pytest.approx(0.0 - 9.0)
    longer = [[0.0, 0.0, 0.0, 8.0, 0.0, 4.0, 4.5, 0.0]]
    assert qa.postprocess(EX, feats, start, longer)[0]["a"] == "bbbbb ccccc ddddd"  # 5 + 4.5
    # at most 2 tokens: (bbbbb..ddddd) is out; at most 1: (aaaaa, aaaaa) 8.5 beats (bbbbb, bbbbb) 5
    assert qa.postprocess(EX, feats, start, longer, max_answer_length=2)[0]["a"] == "bbbbb ccccc"
    assert qa.postprocess(EX, feats, start, longer, max_answer_length=1)[0]["a"] == "aaaaa"
    # n_best=1 only pairs the single best start with the single best end: (bbbbb, aaaaa) is invalid -> no span
    preds, na = qa.postprocess(EX, feats, start, end, n_best=1)
    assert preds == {"a": ""} and na["a"] == float("inf")


def test_postprocess_aggregates_windows_and_applies_the_null_threshold():
    # example b: window 1 covers words 0..3, window 2 words 2..5; logits padded to 10 (ignored past the window)
    feats = {"example_index": [0, 1, 1], "offset_mapping": [_window(4), _window(4), _window(4, offset=2)]}
    start = np.full((3, 10), -5.0)
    end = np.full((3, 10), -5.0)
    start[0, 3], end[0, 4] = 2.0, 2.0  # a: "aaaaa bbbbb" = 4
    start[0, 0], end[0, 0] = 1.0, 1.0  # a: null 2
    start[1, 4], end[1, 4] = 1.0, 1.0  # b window 1: "w1111" = 2
    start[2, 5], end[2, 6] = 3.0, 2.0  # b window 2: "w4444 w5555" = 5 (positions 5, 6 = words 4, 5)
    start[1, 0], end[1, 0] = 4.0, 4.0  # b: null 8 in window 1 ...
    start[2, 0], end[2, 0] = 3.0, 3.5  # ... and 6.5 in window 2: the minimum counts
    start[:, 8:] = end[:, 8:] = 50.0  # padding beyond the windows
    preds, na = qa.postprocess(EX, feats, torch.tensor(start), end)
    assert preds == {"a": "aaaaa bbbbb", "b": "w4444 w5555"}
    assert na == pytest.approx({"a": 2.0 - 4.0, "b": 6.5 - 5.0})
    v2, _ = qa.postprocess(EX, feats, start, end, version_2=True, null_threshold=1.0)
    assert v2 == {"a": "aaaaa bbbbb", "b": ""}  # margin 1.5 > 1.0
    v2, _ = qa.postprocess(EX, feats, start, end, version_2=True, null_threshold=1.5)
    assert v2["b"] == "w4444 w5555"  # not strictly above
    # ragged per-window lists work as well, and examples without any window get no prediction
    ragged = [list(start[0, :8]), list(start[1, :8]), list(start[2, :8])]
    ragged_end = [list(end[0, :8]), list(end[1, :8]), list(end[2, :8])]
    assert qa.postprocess(EX, feats, ragged, ragged_end)[0] == preds
    only_a = {"example_index": [0], "offset_mapping": [_window(4)]}
    assert list(qa.postprocess(EX, only_a, start[:1], end[:1])[0]) == ["a"]


def test_gold_labels_round_trip_through_postprocess_to_a_perfect_score():
    rows = generate_qa(40, seed=3, unanswerable=0.25, context_words=40)
    examples = {k: [r[k] for r in rows] for k in rows[0]} | {"row_id": list(range(len(rows)))}
    tok = synthetic_tokenizer()
    feats = qa.prepare_features(examples, tok, max_length=24, doc_stride=6, train=True)
    assert len(feats["input_ids"]) > 2 * len(rows)  # several windows per question
    width = max(len(x) for x in feats["input_ids"])
    start = torch.full((len(feats["input_ids"]), width), -10.0)
    end = start.clone()
    rows_f = torch.arange(len(start))
    start[rows_f, torch.tensor(feats["start_positions"])] = 10.0
    end[rows_f, torch.tensor(feats["end_positions"])] = 10.0
    preds, na = qa.postprocess(examples, feats, start, end, version_2=True)
    golds = golds_from_rows(examples["id"], examples["answers"])
    assert evaluate(golds, preds)["exact"] == 100.0
    assert all((na[k] > 0) == (not v) for k, v in golds.items())
    # the same from Datasets and a list of per-window tensors (as collected batch by batch)
    from_ds = qa.postprocess(Dataset.from_dict(examples), Dataset.from_dict(feats), list(start), list(end),
                             version_2=True)
    assert from_ds == (preds, na)


# ------------------------------------------------------------------------------------------ cross-tokenizer maps


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x.double(), dim=-1)


def _mass_by_student_token(t_logits: torch.Tensor, t_off: list, s_off: list, which: str) -> dict[int, float]:
    """Expected student probabilities, by brute force: teacher probability (over CLS + context) summed per student
    token containing the teacher token's first (start) or last (end) character."""
    keep = [0] + [i for i, o in enumerate(t_off) if o[0] >= 0]
    p = _softmax(t_logits[keep])
    mass: dict[int, float] = {}
    for k, i in enumerate(keep):
        if i == 0:
            mass[0] = mass.get(0, 0.0) + float(p[k])
            continue
        char = t_off[i][0] if which == "start" else t_off[i][1] - 1
        j = next(j for j, o in enumerate(s_off) if o[0] <= char < o[1])
        mass[j] = mass.get(j, 0.0) + float(p[k])
    return mass


def _check_mass(t_logits, t_off, s_off, which) -> torch.Tensor:
    mapped = qa.map_span_logits(t_logits, t_off, s_off, which)
    assert mapped.shape == (len(s_off),)
    expected = _mass_by_student_token(t_logits, t_off, s_off, which)
    p = _softmax(mapped)
    for j in range(len(s_off)):
        assert float(p[j]) == pytest.approx(expected.get(j, 0.0), rel=1e-5, abs=1e-9), (which, j)
    filled = [j for j in range(len(s_off)) if j not in expected]
    assert torch.all(mapped[filled] == qa.FILL)
    return mapped


@pytest.mark.parametrize("fine_teacher", [True, False])
def test_mapping_between_synthetic_tokenizers_that_split_words_differently(fine_teacher):
    whole, split = synthetic_tokenizer(), split_tokenizer()
    teacher, student = (split, whole) if fine_teacher else (whole, split)
    words = [WORDS[i] for i in (0, 2, 1, 3, 5, 4, 6, 9, 7)]  # all three kinds of split
    context = " ".join(words)
    s = qa.prepare_features({"question": [WORDS[8]], "context": [context], "row_id": [0]}, student,
                            max_length=64, doc_stride=8, train=False)
    t = qa.teacher_window_inputs(WORDS[8], context, s["context_span"][0], teacher, max_length=64)
    assert not qa.same_tokenization(t["offset_mapping"], s["offset_mapping"][0])
    torch.manual_seed(0)
    t_logits = torch.randn(len(t["input_ids"])) * 3
    for which in ("start", "end"):
        mapped = _check_mass(t_logits, t["offset_mapping"], s["offset_mapping"][0], which)
        assert mapped[0] == t_logits[0]  # CLS -> CLS
    # a fine teacher merges the pieces of a word by logsumexp (word 0 = 2 pieces); a coarse one only fills the
    # student piece holding the word's first (start) / last (end) character
    n_q = 3  # [CLS] q [SEP]
    first = qa.map_span_logits(t_logits, t["offset_mapping"], s["offset_mapping"][0], "start")
    last = qa.map_span_logits(t_logits, t["offset_mapping"], s["offset_mapping"][0], "end")
    if fine_teacher:
        pieces = t_logits[n_q:n_q + 2]
        assert first[n_q] == pytest.approx(float(torch.logsumexp(pieces, 0)))
        assert last[n_q] == pytest.approx(float(torch.logsumexp(pieces, 0)))
    else:
        assert first[n_q] == t_logits[n_q] and first[n_q + 1] == qa.FILL
        assert last[n_q + 1] == t_logits[n_q] and last[n_q] == qa.FILL


def test_identical_tokenization_maps_to_the_identity():
    student, renumbered = synthetic_tokenizer(), synthetic_tokenizer(seed=7)
    assert qa.same_tokenizer(student, synthetic_tokenizer()) and not qa.same_tokenizer(student, renumbered)
    s = qa.prepare_features(_rows(_answer(2, 4)), student, max_length=16, doc_stride=4, train=False)
    t = qa.teacher_features([QUESTION] * 6, [CONTEXT] * 6, s["context_span"], renumbered, max_length=16)
    assert t["input_ids"] != s["input_ids"]  # other ids ...
    assert t["offset_mapping"] == s["offset_mapping"]  # ... same tokens
    logits = torch.randn(6, 16)
    for which in ("start", "end"):
        mapped = qa.map_span_logits(logits, t["offset_mapping"], s["offset_mapping"], which, student_length=16)
        for r, offsets in enumerate(s["offset_mapping"]):
            keep = [0] + [i for i, o in enumerate(offsets) if o[0] >= 0]
            assert torch.equal(mapped[r, keep], logits[r, keep])
            rest = [i for i in range(16) if i not in keep]
            assert torch.all(mapped[r, rest] == qa.FILL)


def test_batched_mapping_with_padding_and_shared_offsets():
    t_off = [[-1, -1], [0, 2], [2, 5], [6, 11], [-1, -1]]
    s_off = [[-1, -1], [-1, -1], [0, 5], [6, 11], [-1, -1], [-1, -1]]
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 99.0], [0.0, 0.0, 0.0, 0.0, 0.0, 99.0]])  # last: padding
    out = qa.map_span_logits(logits, t_off, s_off, "start")
    assert out.shape == (2, 6)
    expected = torch.tensor([1.0, qa.FILL, float(torch.logsumexp(torch.tensor([2.0, 3.0]), 0)), 4.0, qa.FILL, qa.FILL])
    assert torch.allclose(out[0], expected)
    half = qa.map_span_logits(logits.half(), [t_off, t_off], torch.tensor([s_off, s_off]), "end")
    assert half.dtype == torch.float16 and half[1, 2] == pytest.approx(float(np.log(2)), abs=1e-3)
    with pytest.raises(ValueError, match="'start' or 'end'"):
        qa.span_index_map(t_off, s_off, "middle")  # type: ignore[arg-type]


def test_teacher_windows_are_cut_at_max_length(caplog):
    whole, split = synthetic_tokenizer(), split_tokenizer()
    s = qa.prepare_features({"question": [WORDS[50]], "context": [" ".join(WORDS[:12])], "row_id": [0]}, whole,
                            max_length=16, doc_stride=4, train=False)
    t = qa.teacher_features([WORDS[50]], [" ".join(WORDS[:12])], s["context_span"][:1], split, max_length=16)
    assert len(t["input_ids"][0]) == 16 and "exceed max_length=16" in caplog.text
    mapped = qa.map_span_logits(torch.zeros(16), t["offset_mapping"][0], s["offset_mapping"][0], "start")
    assert mapped[-2] == qa.FILL  # the student's last context word was cut from the teacher's window
    with pytest.raises(ValueError, match="is not inside a context"):
        qa.teacher_features(["q"], ["short"], [[0, 50]], whole, max_length=16)


def test_real_minilm_and_mpnet_windows(minilm):
    from huggingface_hub import try_to_load_from_cache
    from transformers import AutoTokenizer

    if not isinstance(try_to_load_from_cache(MPNET, "tokenizer.json"), str):  # as conftest.hf_cached
        pytest.skip(f"{MPNET} is not in the HF cache")
    student, teacher = AutoTokenizer.from_pretrained(minilm), AutoTokenizer.from_pretrained(MPNET)
    assert not qa.same_tokenizer(student, teacher)
    context = ("The unaffordable Schwarzenegger-led café hosted 12,000 photosynthesizing guests in 1987, "
               "notwithstanding extraordinarily uncharacteristic thunderstorms. ") * 2
    s = qa.prepare_features({"question": ["Who led the café?"], "context": [context], "row_id": [0]}, student,
                            max_length=24, doc_stride=6, train=False)
    mid_word = 0
    for i, (s_off, span) in enumerate(zip(s["offset_mapping"], s["context_span"], strict=True)):
        t = qa.teacher_window_inputs("Who led the café?", context, span, teacher, max_length=64)
        assert next(o for o in t["offset_mapping"] if o[0] >= 0)[0] == span[0]
        ctx_ids = [x for x, o in zip(s["input_ids"][i], s_off, strict=True) if o[0] >= 0]
        starts_mid_word = student.convert_ids_to_tokens(ctx_ids[0]).startswith("##")
        mid_word += starts_mid_word
        logits = torch.randn(len(t["input_ids"])) * 2
        for which in ("start", "end"):
            mapped = _check_mass(logits, t["offset_mapping"], s_off, which)
            if not starts_mid_word:  # same vocabulary: only positions shift (MPNet has </s></s>)
                ctx = [j for j, o in enumerate(s_off) if o[0] >= 0]
                t_ctx = [j for j, o in enumerate(t["offset_mapping"]) if o[0] >= 0]
                assert torch.equal(mapped[ctx], logits[t_ctx].to(mapped.dtype))
    assert mid_word >= 1  # a window starting inside a word is re-split by the teacher, and still maps
