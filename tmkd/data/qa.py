"""Extractive QA (SQuAD v1.1 / v2.0): window features, answer post-processing, cross-tokenizer span logits.

Contexts longer than a model's input are read as overlapping windows ("features"), as in Hugging Face's
``run_qa.py``; this module is that logic as reusable functions, plus what distillation needs when a teacher's
tokenizer differs from the student's:

- :func:`prepare_features` cuts (question, context) rows into windows, with start/end labels for training;
- :func:`postprocess` turns per-window start/end logits back into one answer text per question;
- :func:`teacher_features` / :func:`teacher_window_inputs` give a teacher the *same* windows as the student:
  the question plus exactly the context characters a student window covers (its ``context_span``), tokenised
  with the teacher's own tokenizer, offsets relative to the full context;
- :func:`map_span_logits` moves the teacher's start/end logits onto the student's tokens through character
  offsets, so a distillation loss can compare distributions over the same positions.

Conventions shared by every function here:

- ``offset_mapping`` holds ``[start_char, end_char)`` (relative to the full context) for context tokens and
  ``[-1, -1]`` (:data:`NO_OFFSET`) for every other token (question, special tokens, padding): a fixed-shape
  integer pair stores in Arrow without nulls and converts to numpy/torch as is, and -1 is never a real offset.
- ``context_span`` is ``[first_char, end_char)`` of the context a window covers (half-open, like offsets):
  ``context[first_char:end_char]`` is the window's context text.
- Position 0 of every window is the CLS token (``[CLS]`` / ``<s>``): it is the "no answer" label and the null
  score position. Tokenizers that pad on the left would move it, so they are rejected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

NO_OFFSET: list[int] = [-1, -1]
"""Offset of a token that is not context (question, special tokens, padding)."""

FILL: float = -1e4
"""Logit given to student positions that no teacher token maps to: ~zero probability after a softmax at any
usual temperature, yet finite (``-inf`` gives NaN in a softmax over an all-masked row and in KL terms), and
representable in fp16/bf16."""


def _some(items: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in list(items)[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _column(table: Any, name: str, what: str) -> list[Any]:
    """One column of a dict of lists or a ``datasets.Dataset``, with an error naming what lacks it."""
    names = table.column_names if hasattr(table, "column_names") else list(table)
    if name not in names:
        raise ValueError(f"{what} have no {name!r} column (columns: {list(names)})")
    return list(table[name])


def _has_column(table: Any, name: str) -> bool:
    return name in (table.column_names if hasattr(table, "column_names") else table)


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; QA windows need its offset mapping")
    if tokenizer.padding_side != "right":
        raise ValueError(f"{type(tokenizer).__name__} pads on the {tokenizer.padding_side}; QA features need "
                         "right padding (position 0 is the CLS / no-answer position in every padded batch)")
    if max_length > tokenizer.model_max_length:
        raise ValueError(f"max_length={max_length} exceeds the tokenizer's model_max_length="
                         f"{tokenizer.model_max_length}")


def _check_room(tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], row_ids: Sequence[Any],
                max_length: int, min_context: int, what: str) -> None:
    """Fail clearly where the tokenizer would (a panic for stride >= room, an opaque error for long questions)."""
    n_special = tokenizer.num_special_tokens_to_add(pair=True)
    q_lens = [len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]
    bad = [(r, n) for r, n in zip(row_ids, q_lens, strict=True) if max_length - n_special - n < min_context]
    if bad:
        longest = max(n for _, n in bad)
        raise ValueError(
            f"{len(bad)} question(s) ({what} {_some([r for r, _ in bad])}; longest {longest} tokens) leave fewer than "
            f"{min_context} context tokens in max_length={max_length} with {n_special} special tokens; "
            "raise max_length" + (" or lower doc_stride" if what == "row_id" else "")
        )


def prepare_features(examples: Mapping[str, Sequence[Any]], tokenizer: PreTrainedTokenizerBase,
                     max_length: int = 384, doc_stride: int = 128, *, train: bool) -> dict[str, list[Any]]:
    """Cut a batch of SQuAD rows into overlapping windows, for ``Dataset.map(batched=True)``.

    ``examples`` has ``question``, ``context``, ``row_id`` (the caller's 0..n-1 row numbers) and, for
    ``train``, ``answers`` (``{"text": [...], "answer_start": [...]}``; empty lists = unanswerable). Windows
    overlap by ``doc_stride`` tokens, so a window count differs from the row count: map with
    ``remove_columns=ds.column_names``.

    Returns ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes them), unpadded;
    ``example_index`` (the source row's ``row_id``); ``offset_mapping`` (context tokens only, else
    :data:`NO_OFFSET`); ``context_span``; and for ``train`` ``start_positions`` / ``end_positions``: the tokens
    holding the first gold answer's first and last characters, or 0 (CLS) when the question is unanswerable or
    the window does not contain the whole answer (the model must learn "not in this window").
    """
    if not isinstance(max_length, int) or not isinstance(doc_stride, int) or doc_stride < 0 or max_length <= 0:
        raise ValueError(f"max_length and doc_stride must be non-negative integers (max_length > 0), got "
                         f"max_length={max_length!r}, doc_stride={doc_stride!r}")
    if max_length <= doc_stride:
        raise ValueError(f"max_length ({max_length}) must be larger than doc_stride ({doc_stride}): windows overlap "
                         "by doc_stride tokens and must still advance")
    _check_tokenizer(tokenizer, max_length)
    # Some SQuAD questions start with lots of whitespace, which only wastes window room.
    questions = [q.lstrip() for q in _column(examples, "question", "examples")]
    contexts = _column(examples, "context", "examples")
    row_ids = _column(examples, "row_id", "examples")
    answers = _column(examples, "answers", "training examples") if train else None
    _check_room(tokenizer, questions, row_ids, max_length, doc_stride + 1, "row_id")

    enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    sample_map = enc.pop("overflow_to_sample_mapping")
    all_offsets = enc.pop("offset_mapping")
    out: dict[str, list[Any]] = {k: list(v) for k, v in enc.items()}
    out.update(example_index=[], offset_mapping=[], context_span=[])
    if train:
        out.update(start_positions=[], end_positions=[])

    for i, offsets in enumerate(all_offsets):
        sample = sample_map[i]
        seq_ids = enc.sequence_ids(i)
        if seq_ids[0] is not None:
            raise ValueError(f"{type(tokenizer).__name__} does not start a pair with a special token; "
                             "QA features need one at position 0 (the no-answer position)")
        ctx = [j for j, s in enumerate(seq_ids) if s == 1]
        if not ctx:
            raise ValueError(f"row_id {row_ids[sample]!r}: the context has no tokens")
        out["example_index"].append(row_ids[sample])
        out["offset_mapping"].append([list(o) if s == 1 else [-1, -1] for o, s in zip(offsets, seq_ids,
                                                                                         strict=True)])
        span = [offsets[ctx[0]][0], offsets[ctx[-1]][1]]
        out["context_span"].append(span)
        if train:
            start, end = _label(answers[sample], [offsets[j] for j in ctx], span)  # type: ignore[index]
            out["start_positions"].append(ctx[0] + start if start >= 0 else 0)
            out["end_positions"].append(ctx[0] + end if end >= 0 else 0)
    return out


def _label(answer: Mapping[str, Sequence[Any]], ctx_offsets: Sequence[Sequence[int]], span: Sequence[int]
           ) -> tuple[int, int]:
    """(first, last) index among the window's context tokens of the first gold answer, (-1, -1) for CLS."""
    if not answer["answer_start"]:
        return -1, -1
    start_char = int(answer["answer_start"][0])
    end_char = start_char + len(answer["text"][0])
    if not (span[0] <= start_char and end_char <= span[1]):
        return -1, -1
    # First token ending after the start, last token starting before the end: the tokens holding the first and
    # last characters (or the nearest inside the answer when it starts or ends on whitespace).
    first = next(k for k, (_, e) in enumerate(ctx_offsets) if e > start_char)
    last = max(k for k, (s, _) in enumerate(ctx_offsets) if s < end_char) if end_char > start_char else first
    return (first, last) if last >= first else (-1, -1)


def _rows(logits: Any) -> Any:
    """Per-feature logits as something indexable by feature: a 2-D array, or the given list (ragged is fine)."""
    if isinstance(logits, torch.Tensor):
        return logits.detach().float().cpu().numpy()
    return logits


def _vector(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def postprocess(examples: Any, features: Any, start_logits: Any, end_logits: Any, n_best: int = 20,
                max_answer_length: int = 30, version_2: bool = False, null_threshold: float = 0.0
                ) -> tuple[dict[str, str], dict[str, float]]:
    """Answer text per question from per-window start/end logits.

    ``examples`` (dict of lists or Dataset) has ``id`` and ``context`` (and ``row_id``; else row i is
    row_id i); ``features`` has ``example_index`` and ``offset_mapping`` from :func:`prepare_features`;
    logits are ``[n_features, seq_len]`` arrays/tensors (padding beyond a window's length is ignored) or lists
    of per-window arrays. Per window, the ``n_best`` best start and end tokens *among context tokens* are
    paired (end >= start, at most ``max_answer_length`` tokens) and scored start + end logit; the best span
    over all of a question's windows wins. Questions without any window get no prediction.

    The null score is the minimum over windows of ``start[0] + end[0]`` (CLS). The returned no-answer score is
    ``null_score - best_span_score``: a logit margin, not a probability (``inf`` when no valid span exists).
    With ``version_2`` the answer is "" when that margin exceeds ``null_threshold``. To tune the threshold, run
    with ``version_2=False`` (always the best span) and pass the scores as ``na_probs`` to
    :func:`tmkd.metrics.squad.evaluate` with ``na_prob_thresh=null_threshold`` (its default 1.0 is meant for
    probabilities and would blank every margin above 1): its ``best_f1_thresh`` is on this scale and is the
    ``null_threshold`` to use.
    """
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(f"n_best and max_answer_length must be >= 1, got {n_best} and {max_answer_length}")
    ids = _column(examples, "id", "examples")
    contexts = _column(examples, "context", "examples")
    row_ids = _column(examples, "row_id", "examples") if _has_column(examples, "row_id") else range(len(ids))
    position = {r: i for i, r in enumerate(row_ids)}
    example_index = _column(features, "example_index", "features")
    offsets = _column(features, "offset_mapping", "features")
    starts, ends = _rows(start_logits), _rows(end_logits)
    if not len(starts) == len(ends) == len(example_index):
        raise ValueError(f"{len(example_index)} features but {len(starts)} start and {len(ends)} end logit rows")
    unknown = sorted({r for r in example_index if r not in position}, key=repr)
    if unknown:
        raise ValueError(f"features point at row_id(s) not in examples: {_some(unknown)}")

    best: dict[int, tuple[float, int, int]] = {}  # example position -> (score, start_char, end_char)
    null: dict[int, float] = {}
    for f, row in enumerate(example_index):
        ex = position[row]
        off = np.asarray(offsets[f], dtype=np.int64).reshape(-1, 2)
        s, e = _vector(starts[f]), _vector(ends[f])
        n = min(len(off), len(s), len(e))
        null[ex] = min(null.get(ex, np.inf), float(s[0] + e[0]))
        ctx = np.flatnonzero(off[:n, 0] >= 0)
        if ctx.size == 0:
            continue
        k = min(n_best, ctx.size)
        top_s = ctx[np.argsort(-s[ctx], kind="stable")[:k]]
        top_e = ctx[np.argsort(-e[ctx], kind="stable")[:k]]
        scores = s[top_s][:, None] + e[top_e][None, :]
        length = top_e[None, :] - top_s[:, None] + 1
        scores = np.where((length >= 1) & (length <= max_answer_length), scores, -np.inf)
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        score = float(scores[i, j])
        if score > best.get(ex, (-np.inf,))[0]:
            best[ex] = (score, int(off[top_s[i], 0]), int(off[top_e[j], 1]))

    predictions: dict[str, str] = {}
    na_scores: dict[str, float] = {}
    for ex in null:
        score, a, b = best.get(ex, (-np.inf, 0, 0))
        margin = null[ex] - score
        na_scores[ids[ex]] = float(margin)
        no_answer = score == -np.inf or (version_2 and margin > null_threshold)
        predictions[ids[ex]] = "" if no_answer else contexts[ex][a:b]
    return predictions, na_scores


# --------------------------------------------------------------------------------------------------------------
# Teachers with another tokenizer


def teacher_features(questions: Sequence[str], contexts: Sequence[str], context_spans: Sequence[Sequence[int]],
                     tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict[str, list[Any]]:
    """A teacher's inputs for student windows: each question with exactly its window's context characters.

    Batched (lists of equal length, one entry per student window). Returns the teacher's ``input_ids``,
    ``attention_mask`` (``token_type_ids``) and ``offset_mapping`` relative to the *full* context
    (:data:`NO_OFFSET` outside the context), ready for :func:`map_span_logits`. A window the teacher needs more
    than ``max_length`` tokens for is cut at the end (logged): student tokens past the cut get :data:`FILL`,
    so give the teacher some headroom over the student's ``max_length``.
    """
    if not len(questions) == len(contexts) == len(context_spans):
        raise ValueError(f"{len(questions)} questions, {len(contexts)} contexts, {len(context_spans)} spans")
    _check_tokenizer(tokenizer, max_length)
    questions = [q.lstrip() for q in questions]
    _check_room(tokenizer, questions, range(len(questions)), max_length, 1, "window")
    pieces = []
    for i, ((a, b), context) in enumerate(zip(context_spans, contexts, strict=True)):
        if not 0 <= a < b <= len(context):
            raise ValueError(f"window {i}: context_span {[a, b]} is not inside a context of {len(context)} chars")
        pieces.append(context[a:b])
    enc = tokenizer(questions, pieces, truncation="only_second", max_length=max_length,
                    return_offsets_mapping=True, padding=False)
    all_offsets = enc.pop("offset_mapping")
    out: dict[str, list[Any]] = {k: list(v) for k, v in enc.items()}
    out["offset_mapping"] = []
    cut = 0
    for i, offsets in enumerate(all_offsets):
        seq_ids = enc.sequence_ids(i)
        if seq_ids[0] is not None:
            raise ValueError(f"{type(tokenizer).__name__} does not start a pair with a special token; "
                             "QA features need one at position 0 (the no-answer position)")
        a, b = context_spans[i]
        shifted = [[o[0] + a, o[1] + a] if s == 1 else [-1, -1] for o, s in zip(offsets, seq_ids, strict=True)]
        ends = [o[1] for o in shifted if o[0] >= 0]
        cut += not ends or ends[-1] < b
        out["offset_mapping"].append(shifted)
    if cut:
        log.warning("%d of %d teacher windows exceed max_length=%d and were cut at the end", cut, len(questions),
                    max_length)
    return out


def teacher_window_inputs(question: str, context: str, context_span: Sequence[int],
                          teacher_tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict[str, list[Any]]:
    """One window of :func:`teacher_features`: the encoding plus ``offset_mapping`` relative to the full context."""
    batch = teacher_features([question], [context], [context_span], teacher_tokenizer, max_length)
    return {k: v[0] for k, v in batch.items()}


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two fast tokenizers encode every text identically (same vocabulary, rules and special tokens).

    Then a teacher should read the student's own features: re-tokenising a window that starts inside a word
    (windows advance by tokens) would split that word differently from the student.
    """

    def _spec(tok: PreTrainedTokenizerBase) -> dict[str, Any]:
        spec = json.loads(tok.backend_tokenizer.to_str())
        spec.pop("truncation", None)  # per-call state, set by the last __call__
        spec.pop("padding", None)
        return spec

    return _spec(a) == _spec(b)


def _offsets(x: Any) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.astype(np.int64, copy=False)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"offsets must have shape [n_tokens, 2], got {arr.shape}")
    return arr


def same_tokenization(teacher_offsets: Any, student_offsets: Any) -> bool:
    """Whether two windows have the same context tokens at the same positions (the mapping is then the identity).

    True for identical tokenizers on identical windows, and also for tokenizers that only number their
    vocabularies differently; padding and non-context positions are ignored.
    """
    t, s = _offsets(teacher_offsets), _offsets(student_offsets)
    t_ctx, s_ctx = np.flatnonzero(t[:, 0] >= 0), np.flatnonzero(s[:, 0] >= 0)
    return np.array_equal(t_ctx, s_ctx) and np.array_equal(t[t_ctx], s[s_ctx])


def span_index_map(teacher_offsets: Any, student_offsets: Any, which: Literal["start", "end"]) -> np.ndarray:
    """For each teacher token of one window, the student token its start (or end) logit goes to, or -1.

    A start logit goes to the student token containing the teacher token's first character, an end logit to the
    one containing its last character (if that character is in no student token, e.g. whitespace inside the
    teacher token: the first / last student token overlapping the teacher token). Position 0 (CLS) maps to
    position 0; other non-context tokens map nowhere.
    """
    if which not in ("start", "end"):
        raise ValueError(f"which must be 'start' or 'end', got {which!r}")
    t, s = _offsets(teacher_offsets), _offsets(student_offsets)
    out = np.full(len(t), -1, dtype=np.int64)
    if len(t) and len(s):
        out[0] = 0
    if same_tokenization(t, s):
        ctx = np.flatnonzero(t[:, 0] >= 0)
        out[ctx] = ctx
        return out
    s_ctx = np.flatnonzero((s[:, 0] >= 0) & (s[:, 1] > s[:, 0]))
    t_ctx = np.flatnonzero((t[:, 0] >= 0) & (t[:, 1] > t[:, 0]))
    if s_ctx.size == 0 or t_ctx.size == 0:
        return out
    order = s_ctx[np.argsort(s[s_ctx, 0], kind="stable")]
    s_start, s_end = s[order, 0], s[order, 1]
    t_start, t_end = t[t_ctx, 0], t[t_ctx, 1]
    char = t_start if which == "start" else t_end - 1
    j = np.searchsorted(s_start, char, side="right") - 1  # last student token starting at or before char
    jc = j.clip(0)
    inside = (j >= 0) & (s_end[jc] > char)
    if which == "start":  # else the first student token starting inside the teacher token
        nxt = (j + 1).clip(max=len(order) - 1)
        target = np.where(inside, j, np.where((j + 1 < len(order)) & (s_start[nxt] < t_end), j + 1, -1))
    else:  # else the last student token ending inside the teacher token
        target = np.where(inside | ((j >= 0) & (s_end[jc] > t_start)), j, -1)
    out[t_ctx] = np.where(target >= 0, order[target.clip(0)], -1)
    return out


def _offset_rows(x: Any, n_rows: int, what: str) -> list[np.ndarray]:
    """Per-row offsets from one shared [T, 2] window or per-row windows ([B, T, 2] or a ragged list)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        rows = [x] * n_rows if x.ndim == 2 else list(x.reshape(-1, *x.shape[-2:]))
    else:
        shared = len(x) > 0 and len(x[0]) > 0 and np.isscalar(x[0][0])
        rows = [x] * n_rows if shared else list(x)
    if len(rows) != n_rows:
        raise ValueError(f"{what} offsets have {len(rows)} rows for {n_rows} rows of logits")
    return [_offsets(r) for r in rows]


def map_span_logits(teacher_logits: torch.Tensor, teacher_offsets: Any, student_offsets: Any,
                    which: Literal["start", "end"], fill: float = FILL, student_length: int | None = None
                    ) -> torch.Tensor:
    """Teacher start or end logits ``[..., n_teacher_tokens]`` moved onto student tokens ``[..., n_student_tokens]``.

    Offsets are one window (``[T, 2]``, shared by every row) or one per row of the flattened leading dims
    (``[B, T, 2]`` or a list of ragged windows, padded rows being fine); both relative to the full context, as
    :func:`prepare_features` and :func:`teacher_features` give them. Each teacher token goes where
    :func:`span_index_map` says; several teacher tokens on one student token combine by logsumexp, which sums
    their probability mass (exact at temperature 1: softmax over the result = the teacher's probabilities
    summed per student token, renormalised over the mapped tokens). Student tokens receiving nothing (question,
    special tokens, padding, context tokens no teacher token starts/ends in) get ``fill`` (:data:`FILL`); mask
    padding in the loss as usual. ``student_length`` defaults to the longest student window.
    """
    lead, n_t = teacher_logits.shape[:-1], teacher_logits.shape[-1]
    x = teacher_logits.reshape(-1, n_t).float()
    n_rows = x.shape[0]
    t_rows = _offset_rows(teacher_offsets, n_rows, "teacher")
    s_rows = _offset_rows(student_offsets, n_rows, "student")
    n_s = student_length if student_length is not None else max((len(r) for r in s_rows), default=0)
    index = np.full((n_rows, n_t), n_s, dtype=np.int64)  # n_s = a dump slot for tokens that map nowhere
    for r, (t, s) in enumerate(zip(t_rows, s_rows, strict=True)):
        if len(t) > n_t:
            raise ValueError(f"row {r}: {len(t)} teacher offsets for {n_t} teacher logits")
        if len(s) > n_s:
            raise ValueError(f"row {r}: {len(s)} student offsets for student_length={n_s}")
        m = span_index_map(t, s, which)
        index[r, : len(m)] = np.where(m >= 0, m, n_s)
    idx = torch.from_numpy(index).to(x.device)
    peak = torch.full((n_rows, n_s + 1), -torch.inf, device=x.device).scatter_reduce(1, idx, x, "amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    mass = torch.zeros_like(peak).scatter_add(1, idx, torch.exp(x - peak.gather(1, idx)))
    out = torch.where(mass > 0, torch.log(mass.clamp_min(torch.finfo(mass.dtype).tiny)) + peak,
                      torch.full_like(mass, fill))
    return out[:, :n_s].reshape(*lead, n_s).to(teacher_logits.dtype)
