"""Teacher soft targets for whole splits, computed once and served from the on-disk cache.

The cache key covers the teacher's weights, the split's content, and the tokenisation (tokenizer
and max length), so a change to any of them computes new targets instead of reading stale ones.
Classification entries also store a content hash per row, so rows that a teacher has already labelled in another
split (a held-out cut of the train split, the same dev set read by a derived task) are reused, not run again.

Classification: ``[rows, T, C]`` float32 by ``row_id``. Extractive QA: per student *window* (feature row),
``[n_features, T, 2, max_length]`` float16 (start, end), padded to the student's ``max_length`` with
:data:`tmkd.data.qa.FILL`: every position is stored (not only the context), so a batch slices it as is.
Cost: ``2 * max_length * 2`` bytes per window and teacher, i.e. ~1.5 KB at 384 tokens; the full SQuAD 2.0
train split (~132k windows at 384 / stride 128) takes ~203 MB (193 MiB) on disk per teacher.
A teacher with the student's tokenizer reads the student's own windows; any other reads, per student window,
the question plus exactly the window's context characters (``context_span``) with its own tokenizer, and its
start/end logits are mapped onto the student's tokens (:func:`tmkd.data.qa.map_span_logits`). QA keys add the
student's tokenizer, the window settings and the teacher's tokenizer and window length.

Speed (the build is pure inference): rows are run longest first in batches of similar length (little padding),
and results go back to their own rows, so the stored tensor, and its cache key, do not depend on the order they
were computed in; ``inference_mode``, ``batch_size`` rows per forward pass (default 128), the ensemble's dtype
(bf16 on GPU) and, on CUDA, pinned host memory with asynchronous copies and a single device-to-host copy at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from datasets import Dataset
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from tmkd.data import qa
from tmkd.data.kinds import get_kind
from tmkd.data.loading import row_fingerprints, split_fingerprint
from tmkd.data.sampling import length_batches
from tmkd.data.tasks import TaskSpec
from tmkd.data.tokenize import SEP, encode, tokenizer_fingerprint, view_lengths
from tmkd.distill.cache import SoftTargetCache
from tmkd.distill.ensemble import TeacherEnsemble
from tmkd.fingerprint import cache_key, tensor_checksum
from tmkd.finite import NonFiniteError
from tmkd.models.build import usable_positions

log = logging.getLogger(__name__)


DEFAULT_BATCH_SIZE = 128  # inference only: no activations kept, so batches can be larger than training's


def refuse_non_finite(logits: Tensor, teacher: str, task: str, split: str) -> None:
    """Non-finite soft targets never reach the cache or the student: a diverged teacher stops the run here."""
    if not bool(torch.isfinite(logits).all()):
        share = float((~torch.isfinite(logits)).float().mean()) * 100
        raise NonFiniteError(f"teacher {teacher!r} gives non-finite soft targets on {task}/{split} ({share:.1f}% of "
                             "the values are NaN/inf): the teacher has diverged; retrain it (e.g. a lower learning "
                             "rate) or drop it from distill.teachers")


def to_device(inputs: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Host tensors onto ``device``; on CUDA through pinned memory, asynchronously (overlaps the previous batch)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in inputs.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in inputs.items()}


def row_prints(ds: Dataset, task: TaskSpec) -> tuple[Tensor, str]:
    """Each row's 64-bit text print and the split's part of a cache key, derived from them: one pass over the
    texts, and the key every classification entry of these rows is stored under (with the teacher's family)."""
    prints = torch.tensor(row_fingerprints(ds, task), dtype=torch.long)
    return prints, tensor_checksum(prints)


class SoftTargetStore:
    """Per-split teacher logits [rows, teachers, classes], indexed by the datamodule's ``row_id``."""

    def __init__(self, ensemble: TeacherEnsemble, task: TaskSpec, max_length: int,
                 cache_dir: str | Path | None, batch_size: int = DEFAULT_BATCH_SIZE, sort_by_length: bool = True
                 ) -> None:
        if batch_size <= 0:
            raise ValueError(f"soft-target batch_size must be positive, got {batch_size}")
        self.ensemble = ensemble
        self.task = task
        self.max_length = max_length
        self.cache = SoftTargetCache(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.sort_by_length = sort_by_length  # False: dataset order (the plain loop; benchmarks and tests)
        self.kind = get_kind(task.kind)
        self.hits = 0
        self.misses = 0
        self.teacher_headroom = 64  # QA: extra tokens for a teacher that splits a window's context finer

    def family(self, teacher_index: int) -> str:
        """What a teacher's logits for a row depend on besides the row's texts: its weights, its tokenizer and the
        max length. Every classification entry of a teacher starts with this prefix."""
        t = self.ensemble.teachers[teacher_index]
        return cache_key(kind="soft_targets/rows/v1", teacher=t.fingerprint,
                         tokenizer=tokenizer_fingerprint(t.tokenizer), max_length=self.max_length)

    def key(self, teacher_index: int, texts_print: str) -> str:
        """A split's entry: the teacher's family and the content hash of the split's texts (not its labels, task
        or split name, which the logits do not depend on: QNLI dev read by a derived task is the same entry)."""
        return f"{self.family(teacher_index)}-{cache_key(texts=texts_print)}"

    def _known_rows(self, family: str) -> tuple[Tensor, Tensor]:
        """Every row this teacher family has already labelled (any split, task or cut): sorted row prints and
        their logits. Entries of another width or with non-finite values are skipped."""
        assert self.cache is not None
        prints, logits = [], []
        for key in self.cache.keys(family + "-"):
            entry = self.cache.load_indexed(key)
            if entry is None or entry[1] is None:
                continue
            values, index = entry
            if values.ndim == 2 and values.shape[1] == self.task.num_labels and bool(torch.isfinite(values).all()):
                prints.append(index)
                logits.append(values.float())
        if not prints:
            return torch.empty(0, dtype=torch.long), torch.empty(0, self.task.num_labels)
        all_prints, order = torch.sort(torch.cat(prints))
        return all_prints, torch.cat(logits)[order]

    def _reuse_or_compute(self, teacher_index: int, ds: Dataset, split: str, device: torch.device,
                          prints: Tensor) -> Tensor:
        """A split's logits: rows an earlier pass of the same teacher labelled (a held-out cut of the train split,
        the same dev set read by another task) are reused, and only the others run through the teacher."""
        known, known_logits = self._known_rows(self.family(teacher_index))
        out = torch.empty(len(ds), self.task.num_labels)
        found = torch.zeros(len(ds), dtype=torch.bool)
        if known.numel():
            pos = torch.searchsorted(known, prints).clamp(max=known.numel() - 1)
            found = known[pos] == prints
            out[found] = known_logits[pos[found]]
        missing = (~found).nonzero().flatten().tolist()
        if found.any():
            log.info("soft targets: %d of %d rows of %s/%s already labelled by teacher %s", len(ds) - len(missing),
                     len(ds), self.task.name, split, self.ensemble.teachers[teacher_index].name)
        if missing:
            subset = ds.select(missing).remove_columns("row_id").add_column("row_id", list(range(len(missing))))
            out[missing] = self._compute(teacher_index, subset, split, device)
        return out

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        if self.sort_by_length:
            return length_batches(lengths, self.batch_size)
        return [list(range(a, min(a + self.batch_size, len(lengths)))) for a in range(0, len(lengths), self.batch_size)]

    def _compute(self, teacher_index: int, ds: Dataset, split: str, device: torch.device) -> Tensor:
        """One teacher's logits for every row of ``ds``, in row order ([rows, classes], float32, on the CPU)."""
        t = self.ensemble.teachers[teacher_index]
        encoded = encode(ds, {t.view: t.tokenizer}, self.task, self.max_length, split)
        keys = [c for c in encoded.column_names if c.startswith(t.view + SEP)]
        table = encoded.select_columns([*keys, "row_id"]).to_dict()  # Python lists once, not an Arrow read per row
        columns = {c[len(t.view) + 1:]: table[c] for c in keys}
        batches = self._batches([len(x) for x in columns["input_ids"]])
        row_ids = torch.tensor(table["row_id"], dtype=torch.long)
        results = []
        for rows in batches:
            padded = t.tokenizer.pad({k: [col[r] for r in rows] for k, col in columns.items()}, return_tensors="pt")
            results.append(self.ensemble.teacher_logits(teacher_index, to_device(padded, device)))
        out = torch.empty(len(ds), self.task.num_labels)
        if results:  # one device-to-host copy (a sync) for the whole split instead of one per batch
            order = torch.tensor([r for rows in batches for r in rows], dtype=torch.long)
            out[row_ids[order]] = torch.cat(results).float().cpu()
        return out

    def split_logits(self, ds: Dataset, split: str, device: torch.device | str = "cpu",
                     features: Dataset | None = None, student_tokenizer: PreTrainedTokenizerBase | None = None,
                     view: str = "student") -> Tensor:
        """Teacher logits for every row of ``ds`` (which must carry ``row_id`` 0..n-1): [n, T, C].

        QA: for every student window of ``features`` (the datamodule's ``encoded[split]``, ``view`` its student
        view, ``student_tokenizer`` its tokenizer): [n_features, T, 2, max_length], float16.
        """
        device = torch.device(device)
        if self.kind.name == "qa":
            if features is None or student_tokenizer is None:
                raise ValueError("QA soft targets are per student window: pass features and student_tokenizer")
            data_print = split_fingerprint(ds, self.task, labelled=self.task.split_labelled(split))
            return self._qa_split_logits(ds, features, student_tokenizer, view, split, data_print, device)
        if self.cache is not None:
            prints, texts_print = row_prints(ds, self.task)
        per_teacher = []
        for i, t in enumerate(self.ensemble.teachers):
            if self.cache is None:
                per_teacher.append(self._compute(i, ds, split, device))
                refuse_non_finite(per_teacher[-1], t.name, self.task.name, split)
                continue
            key = self.key(i, texts_print)
            cached = self._finite(self.cache.load(key), key)
            if cached is not None and cached.shape == (len(ds), self.task.num_labels):
                self.hits += 1
                per_teacher.append(cached)
                continue
            self.misses += 1
            log.info("soft targets: teacher %s on %s/%s (%d rows)", t.name, self.task.name, split, len(ds))
            logits = self._reuse_or_compute(i, ds, split, device, prints)
            refuse_non_finite(logits, t.name, self.task.name, split)
            self.cache.save(key, logits, meta={"teacher": t.name, "source": t.source, "task": self.task.name,
                                               "split": split}, index=prints)
            per_teacher.append(logits)
        return torch.stack(per_teacher, dim=1)

    def _finite(self, cached: Tensor | None, key: str) -> Tensor | None:
        """A cached entry with NaN/inf (written before such targets were refused) is dropped and recomputed."""
        if cached is not None and not bool(torch.isfinite(cached).all()):
            assert self.cache is not None
            log.warning("soft-target cache file %s holds non-finite values; deleting it", self.cache.path(key))
            self.cache.path(key).unlink(missing_ok=True)
            return None
        return cached

    # --- extractive QA -------------------------------------------------------------------------------------------
    def teacher_max_length(self, teacher_index: int) -> int:
        """A teacher's window length for re-tokenised student windows: the student's plus headroom, within what
        the teacher's tokenizer and position embeddings allow."""
        t = self.ensemble.teachers[teacher_index]
        return min(self.max_length + self.teacher_headroom, int(t.tokenizer.model_max_length),
                   usable_positions(t.model.config))

    def _qa_split_logits(self, ds: Dataset, features: Dataset, student_tokenizer: PreTrainedTokenizerBase,
                         view: str, split: str, data_print: str, device: torch.device) -> Tensor:
        n, length = len(features), self.max_length
        per_teacher = []
        for i, t in enumerate(self.ensemble.teachers):
            same = qa.same_tokenizer(t.tokenizer, student_tokenizer)
            t_max = length if same else self.teacher_max_length(i)
            key = cache_key(kind="soft_targets/qa/v1", teacher=t.fingerprint, task=self.task.name, split=split,
                            data=data_print, student_tokenizer=tokenizer_fingerprint(student_tokenizer),
                            max_length=length, doc_stride=self.task.doc_stride,
                            tokenizer=tokenizer_fingerprint(t.tokenizer), teacher_max_length=t_max)
            cached = self._finite(self.cache.load(key), key) if self.cache is not None else None
            if cached is not None and cached.shape == (n, 2, length):
                self.hits += 1
                per_teacher.append(cached)
                continue
            self.misses += self.cache is not None
            log.info("soft targets: running teacher %s on %s/%s (%d windows, %s)", t.name, self.task.name, split, n,
                     "student's windows" if same else "its own tokenisation, mapped")
            logits = (self._qa_same(i, features, student_tokenizer, view, device) if same
                      else self._qa_mapped(i, ds, features, t_max, device, view))
            refuse_non_finite(logits, t.name, self.task.name, split)
            if self.cache is not None:
                self.cache.save(key, logits, meta={"teacher": t.name, "source": t.source, "split": split,
                                                   "layout": "features x (start, end) x max_length, fp16"})
            per_teacher.append(logits)
        return torch.stack(per_teacher, dim=1)

    def _qa_same(self, index: int, features: Dataset, tokenizer: PreTrainedTokenizerBase, view: str,
                 device: torch.device) -> Tensor:
        """Same tokenizer: the teacher reads the student's own windows (identical tokens and positions)."""
        out = torch.full((len(features), 2, self.max_length), qa.FILL, dtype=torch.float16)
        cols = [c for c in features.column_names if c.startswith(view + SEP)]
        table = features.select_columns(cols).to_dict()
        columns = {c[len(view) + 1:]: table[c] for c in cols}
        for rows in self._batches([len(x) for x in columns["input_ids"]]):
            padded = tokenizer.pad({k: [col[r] for r in rows] for k, col in columns.items()}, return_tensors="pt")
            logits = self.ensemble.teacher_logits(index, to_device(padded, device)).cpu()
            out[rows, :, : logits.shape[-1]] = logits.to(torch.float16)
        return out

    def _qa_mapped(self, index: int, ds: Dataset, features: Dataset, t_max: int, device: torch.device,
                   view: str) -> Tensor:
        """Other tokenizer: per student window, the question plus the window's context characters, tokenised by
        the teacher; its start/end logits moved onto the student's tokens. Windows are batched by the student's
        window length, a close proxy of the teacher's (same characters)."""
        t = self.ensemble.teachers[index]
        questions, contexts = ds["question"], ds["context"]
        out = torch.empty((len(features), 2, self.max_length), dtype=torch.float16)
        for rows in self._batches(view_lengths(features, view)):
            chunk = features[rows]
            examples = chunk["example_index"]
            enc = qa.teacher_features([questions[r] for r in examples], [contexts[r] for r in examples],
                                      chunk["context_span"], t.tokenizer, t_max)
            t_offsets = enc.pop("offset_mapping")
            logits = self.ensemble.teacher_logits(index, to_device(t.tokenizer.pad(enc, return_tensors="pt"),
                                                                   device)).cpu()
            for j, which in enumerate(("start", "end")):
                mapped = qa.map_span_logits(logits[:, j], t_offsets, chunk["offset_mapping"], which,
                                            student_length=self.max_length)
                out[rows, j] = mapped.to(torch.float16)
        return out
