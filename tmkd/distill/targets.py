"""Teacher soft targets for whole splits, computed once and served from the on-disk cache.

The cache key covers the teacher's weights, the split's content, and the tokenisation (tokenizer
and max length), so a change to any of them computes new targets instead of reading stale ones.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from datasets import Dataset
from torch import Tensor
from torch.utils.data import DataLoader

from tmkd.data.tasks import TaskSpec
from tmkd.data.tokenize import MultiViewCollator, encode
from tmkd.distill.cache import SoftTargetCache, cache_key
from tmkd.distill.ensemble import TeacherEnsemble, tokenizer_fingerprint

log = logging.getLogger(__name__)


def split_fingerprint(ds: Dataset, task: TaskSpec) -> str:
    """Content hash of the texts and labels in row order (``datasets`` fingerprints of local files
    follow paths and times, not content, so they are not enough to rule out stale targets)."""
    digest = hashlib.sha256()
    for col in (*task.text_columns, task.label_column):
        digest.update(col.encode() + b"\0")
        for value in ds[col]:
            digest.update(str(value).encode() + b"\x1f")
    return digest.hexdigest()


class SoftTargetStore:
    """Per-split teacher logits [rows, teachers, classes], indexed by the datamodule's ``row_id``."""

    def __init__(self, ensemble: TeacherEnsemble, task: TaskSpec, max_length: int,
                 cache_dir: str | Path | None, batch_size: int = 64) -> None:
        self.ensemble = ensemble
        self.task = task
        self.max_length = max_length
        self.cache = SoftTargetCache(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0

    def key(self, teacher_index: int, split: str, data_print: str) -> str:
        t = self.ensemble.teachers[teacher_index]
        return cache_key(kind="soft_targets/v1", teacher=t.fingerprint, task=self.task.name, split=split,
                         data=data_print, tokenizer=tokenizer_fingerprint(t.tokenizer), max_length=self.max_length)

    def _compute(self, teacher_index: int, ds: Dataset, split: str, device: torch.device) -> Tensor:
        t = self.ensemble.teachers[teacher_index]
        encoded = encode(ds, {t.view: t.tokenizer}, self.task, self.max_length, split)
        loader = DataLoader(encoded, batch_size=self.batch_size, shuffle=False,
                            collate_fn=MultiViewCollator({t.view: t.tokenizer}))
        out = torch.empty(len(ds), self.task.num_labels)
        for batch in loader:
            inputs = {k: v.to(device) for k, v in batch["inputs"][t.view].items()}
            out[batch["row_id"]] = self.ensemble.teacher_logits(teacher_index, inputs).cpu()
        return out

    def split_logits(self, ds: Dataset, split: str, device: torch.device | str = "cpu") -> Tensor:
        """Teacher logits for every row of ``ds`` (which must carry ``row_id`` 0..n-1): [n, T, C]."""
        device = torch.device(device)
        data_print = split_fingerprint(ds, self.task)
        per_teacher = []
        for i, t in enumerate(self.ensemble.teachers):
            if self.cache is None:
                per_teacher.append(self._compute(i, ds, split, device))
                continue
            key = self.key(i, split, data_print)
            cached = self.cache.load(key)
            if cached is not None and cached.shape == (len(ds), self.task.num_labels):
                self.hits += 1
                per_teacher.append(cached)
                continue
            self.misses += 1
            log.info("soft targets: running teacher %s on %s/%s (%d rows)", t.name, self.task.name, split, len(ds))
            logits = self._compute(i, ds, split, device)
            self.cache.save(key, logits, meta={"teacher": t.name, "source": t.source, "split": split})
            per_teacher.append(logits)
        return torch.stack(per_teacher, dim=1)
