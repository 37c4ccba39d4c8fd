"""Derived corpora: a task's train split built from another task's data (``TaskSpec.derived``).

``qnli_from_squad`` repeats QNLI's construction (Wang et al., 2019) on SQuAD v1.1 *train*: every question is paired
with every sentence of its paragraph, in QNLI's columns (``question``, ``sentence``, ``label``, ``idx``), so QNLI
teachers and students read it as QNLI. No lexical-overlap filter is applied (GLUE's QNLI dropped low-overlap pairs).
The derived ``label`` is QNLI's: 0 (entailment) when the sentence holds the answer span, by character offsets
(``answer_start <= span start`` and the answer's end within the sentence), else 1 (not_entailment). It is kept for a
control experiment; the task is unlabelled by default, so a soft-target stage never reads it.

Guards: the source must be SQuAD's train split (QNLI's dev set was built from SQuAD's dev split, so its pairs would
be the evaluation questions), and no derived question may appear in the task's eval splits (whitespace- and
case-normalised): the error names the overlap count and an example. ``max_pairs`` takes a seeded random subset
(row order kept; ``idx`` stays the pair's index in the whole corpus). The pairs are written once as Parquet under
the tmkd cache, in a folder named by their content hash, and read through the local-file loader like any split.

Sentence splitting (:func:`split_sentences`) is a plain deterministic rule, not a trained splitter (NLTK's punkt
needs a download; a fixed rule also keeps the corpus reproducible byte for byte): a sentence ends at ``.``, ``!``
or ``?`` (a run of them, plus closing quotes or brackets) that is followed by whitespace and then an uppercase
letter, a digit, or an opening quote or bracket; except a single ``.`` after a one-letter word part (initials
``Joan B. Kroc``, ``U.S. Army``, ``e.g. The``) or after a title abbreviation (:data:`NO_SPLIT_AFTER`: ``Mr.``,
``St.``, ``No.``, ``Op.``, ``Oct.``...). So ``3.5`` (no space) and ``e.g. the`` (lower case) do not split either, while
``in the U.S. The`` does not split where it should, and ``Inc. The`` splits. An answer cut by a split lies in no
sentence, and its question gets only label-1 pairs (counted in the build log).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset

from tmkd.data.sources import DataError, load_hub, load_local, resolve_data_dir, validate_split
from tmkd.data.synthetic import cache_root
from tmkd.data.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

OPTIONS = ("builder", "source", "source_split", "max_pairs", "seed")
_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(\s+)")  # sentence-final punctuation, closers, then whitespace
_OPENERS = "\"'\u201c\u2018(["
# titles and abbreviations that a capitalised word follows far more often than a new sentence
NO_SPLIT_AFTER = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "rev", "fr", "jr", "sr", "gen", "col", "lt",
                            "capt", "sgt", "gov", "sen", "rep", "mt", "ft", "no", "nos", "vol", "vs", "op", "pp",
                            "ca", "approx", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
                            "nov", "dec"})
ENTAILMENT, NOT_ENTAILMENT = 0, 1  # QNLI's label order (tmkd/data/tasks.py)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text`` (see the module docstring for the rule);
    spans exclude the whitespace between sentences and cover every other character."""
    start = len(text) - len(text.lstrip())
    spans: list[tuple[int, int]] = []
    for m in _END.finditer(text):
        nxt = m.end()
        if nxt >= len(text):
            break
        c = text[nxt]
        if (c.isupper() or c.isdigit() or c in _OPENERS) and not _abbreviation(text, m):
            spans.append((start, m.start(1)))
            start = nxt
    end = len(text.rstrip())
    if end > start:
        spans.append((start, end))
    return spans


def _abbreviation(text: str, m: re.Match[str]) -> bool:
    """Whether the ``.`` of ``m`` ends an initial / one-letter part (``B.``, ``U.S.``, ``e.g.``) or a title."""
    if text[m.start():m.start(1)].rstrip("\"'\u201d\u2019)]") != ".":
        return False
    word = text[:m.start()].rsplit(None, 1)[-1] if text[:m.start()].strip() else ""
    last = word.rsplit(".", 1)[-1].lstrip(_OPENERS)
    return (len(last) == 1 and last.isalpha()) or last.casefold() in NO_SPLIT_AFTER


def _answers(answers: Mapping[str, Any]) -> list[tuple[int, int]]:
    return [(int(s), int(s) + len(t)) for t, s in zip(answers["text"], answers["answer_start"], strict=True)]


def qnli_pairs(rows: Iterable[Mapping[str, Any]]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every (question, sentence of its context) pair of SQuAD-format rows (``id``, ``context``, ``question``,
    ``answers``), in row then sentence order, with QNLI's columns; and build counts for the log."""
    spans_of: dict[str, list[tuple[int, int]]] = {}
    out: dict[str, list[Any]] = {"question": [], "sentence": [], "label": [], "squad_id": []}
    stats = {"questions": 0, "answer_in_no_sentence": 0}
    for row in rows:
        context = row["context"]
        spans = spans_of.setdefault(context, split_sentences(context))
        answers = _answers(row["answers"])
        if not answers:
            raise DataError(f"SQuAD question {row['id']!r} has no answer: QNLI pairs need answerable questions "
                            "(SQuAD v1.1)")
        stats["questions"] += 1
        labels = [ENTAILMENT if any(s <= a and b <= e for a, b in answers) else NOT_ENTAILMENT for s, e in spans]
        stats["answer_in_no_sentence"] += ENTAILMENT not in labels
        for (s, e), label in zip(spans, labels, strict=True):
            out["question"].append(row["question"])
            out["sentence"].append(context[s:e])
            out["label"].append(label)
            out["squad_id"].append(row["id"])
    frame = pd.DataFrame(out)
    frame.insert(3, "idx", np.arange(len(frame), dtype=np.int64))
    stats["pairs"] = len(frame)
    stats["entailment"] = int((frame["label"] == ENTAILMENT).sum()) if len(frame) else 0
    return frame, stats


BUILDERS: dict[str, Callable[[Iterable[Mapping[str, Any]]], tuple[pd.DataFrame, dict[str, int]]]] = {
    "qnli_from_squad": qnli_pairs,
}


def options(task: TaskSpec) -> dict[str, Any]:
    """The task's ``derived`` options, checked."""
    opts = dict(task.derived or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise DataError(f"task {task.name!r}: unknown derived option(s) {unknown}; valid: {list(OPTIONS)}")
    if opts.get("builder") not in BUILDERS:
        raise DataError(f"task {task.name!r}: derived.builder={opts.get('builder')!r}; valid: {list(BUILDERS)}")
    cap = opts.get("max_pairs")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0):
        raise DataError(f"task {task.name!r}: derived.max_pairs must be a positive integer or null, got {cap!r}")
    return opts


def check_source_split(task: TaskSpec, source: TaskSpec, split: str) -> None:
    """Only the source's train split: QNLI's dev set *is* SQuAD's dev questions."""
    if split != source.train_split:
        dev = " (its dev split, from which QNLI's dev set was built)" if split in source.eval_splits else ""
        raise DataError(f"task {task.name!r}: derived.source_split={split!r} is not {source.name}'s train split "
                        f"({source.train_split!r}){dev}: pairs from it would put evaluation questions into training")


def _norm(question: Any) -> str:
    return " ".join(str(question).split()).casefold()


def check_no_overlap(task: TaskSpec, questions: Iterable[str], eval_ds: Dataset, split: str) -> None:
    """Refuse derived pairs whose question is also a question of an eval split (normalised text)."""
    column = task.text_columns[0]
    held_out = {_norm(q) for q in eval_ds[column]}
    shared = sorted({q for q in questions if _norm(q) in held_out})
    if shared:
        raise DataError(f"task {task.name!r}: {len(shared)} question(s) of the derived train pairs are also in eval "
                        f"split {split!r} (e.g. {shared[0]!r}): training on them leaks the evaluation questions; "
                        "build the pairs from the source's train split only")


def subset(frame: pd.DataFrame, max_pairs: int | None, seed: int) -> pd.DataFrame:
    """A seeded random subset of ``max_pairs`` rows in corpus order (all rows when null or larger)."""
    if max_pairs is None or max_pairs >= len(frame):
        return frame
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_pairs, replace=False))
    return frame.iloc[keep].reset_index(drop=True)


def materialise(name: str, frame: pd.DataFrame, split: str) -> Path:
    """Write ``frame`` as ``<split>.parquet`` once, in a cache folder named by its content (so never stale)."""
    digest = hashlib.sha256()
    for row in frame.itertuples(index=False):
        digest.update("\x1f".join(map(str, row)).encode() + b"\x1e")
    folder = cache_root() / "derived" / f"{name}-{digest.hexdigest()[:16]}"
    target = folder / f"{split}.parquet"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{split}.parquet.{os.getpid()}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, target)
    return folder


def load_source(source: TaskSpec, split: str, data_dir: str | os.PathLike | None) -> Dataset:
    """The source task's split, from ``data.dir`` or the hub, validated by its kind."""
    root = resolve_data_dir(data_dir)
    raw = load_local(root / (source.local_path or source.name), [split]) if root else load_hub(source, [split])
    return validate_split(raw[split], source, split)


def build_train_split(task: TaskSpec, data_dir: str | os.PathLike | None, eval_splits: Mapping[str, Dataset]
                      ) -> Dataset:
    """The derived train split of ``task``, checked against its (uncapped) eval splits."""
    opts = options(task)
    source = get_task(opts.get("source", "squad"))
    split = opts.get("source_split", source.train_split)
    check_source_split(task, source, split)
    frame, stats = BUILDERS[opts["builder"]](load_source(source, split, data_dir).to_list())
    for name, ds in eval_splits.items():
        check_no_overlap(task, frame["question"].unique(), ds, name)
    frame = subset(frame, opts.get("max_pairs"), int(opts.get("seed") or 0))
    log.info("%s: %d pairs from %d %s/%s questions (%d entailment; %d questions' answer in no sentence); using %d",
             task.name, stats["pairs"], stats["questions"], source.name, split, stats["entailment"],
             stats["answer_in_no_sentence"], len(frame))
    folder = materialise(task.name, frame, task.train_split)
    return load_local(folder, [task.train_split])[task.train_split]
