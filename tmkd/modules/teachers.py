"""The teacher source of a distillation module: the ensemble, its soft-target store, and the train split's targets.

It is a Lightning callback (the module hands it to the trainer through ``configure_callbacks``): at the start of a
fit it reads the trainer's datamodule (raw splits, encoded features, tokenizers), scores each teacher on the eval
splits (the student's metrics, same post-processing) and, when precomputed, loads the whole train split's teacher
logits, so the module itself never reads ``trainer.datamodule``. QA teachers always run ahead of training, per
student window (cached on disk with ``distill.cache``, else kept in memory for the run), as a teacher with another
tokenizer needs the student's windows re-tokenised.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from tmkd.data.kinds import get_kind
from tmkd.data.tasks import TaskSpec
from tmkd.distill.ensemble import TeacherEnsemble
from tmkd.distill.targets import SoftTargetStore


class TeacherSource(pl.Callback):
    """Serves teachers' logits for a training batch: precomputed by ``row_id`` when available, else online."""

    def __init__(self, ensemble: TeacherEnsemble, task: TaskSpec, max_length: int, cache_dir: str | None,
                 precompute: bool | None = None) -> None:
        """``cache_dir``: the soft-target cache (None: not cached on disk); ``precompute``: hold the train split's
        targets in memory (default: when cached, or when the task kind always precomputes, as QA does)."""
        self.ensemble = ensemble
        self.task = task
        self.kind = get_kind(task.kind)
        self.store = SoftTargetStore(ensemble, task, max_length, cache_dir)
        self.precompute = (cache_dir is not None or self.kind.precompute_targets) if precompute is None \
            else precompute
        self.train_targets: Tensor | None = None  # [rows, T, C] (QA: [windows, T, 2, S]) when precomputed
        self.teacher_scores: dict[str, dict[str, float]] = {}
        self._world_size = 1

    def __len__(self) -> int:
        return len(self.ensemble)

    @property
    def state_key(self) -> str:  # one per module; Lightning keys callback state by this
        return "TeacherSource"

    # --- Lightning hooks ---------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dtype = torch.bfloat16 if pl_module.device.type == "cuda" else None
        self.ensemble.to(pl_module.device, dtype)
        self._world_size = trainer.world_size
        if self.precompute and trainer.world_size > 1:
            # Under DDP rank 0 computes and writes the soft targets once; the other ranks wait, then read
            # the very same files (cache hits), instead of every rank running every teacher.
            if trainer.is_global_zero:
                self.prepare(trainer.datamodule, pl_module.device)
            trainer.strategy.barrier("tmkd-soft-targets")
            if not trainer.is_global_zero:
                self.prepare(trainer.datamodule, pl_module.device)
        else:
            self.prepare(trainer.datamodule, pl_module.device)

    def prepare(self, dm: Any, device: torch.device) -> None:
        """Teachers' dev scores, and (precomputed) the whole train split's teacher logits, from datamodule ``dm``
        (``raw``, ``encoded``, ``tokenizers``, ``main_view``)."""

        def split_logits(split: str) -> Tensor:
            return self.store.split_logits(dm.raw[split], split, device, features=dm.encoded[split],
                                           student_tokenizer=dm.tokenizers[dm.main_view], view=dm.main_view)

        for split in self.task.eval_splits:  # teachers' own scores, reported next to the student's
            logits = split_logits(split)
            prefix = self.task.split_prefix(split)
            for i, name in enumerate(self.ensemble.names):
                scores = self.kind.score(self.task, dm, split, logits[:, i])
                self.teacher_scores.setdefault(name, {}).update({f"{prefix}/{k}": v for k, v in scores.items()})
        if self.precompute:
            self.train_targets = split_logits(self.task.train_split).to(device)

    # --- serving -----------------------------------------------------------------------------------
    def logits(self, batch: dict[str, Any], view: str) -> Tensor:
        """[T, B, ...]: precomputed (cache) when available, else by running the teachers on this batch."""
        if self.train_targets is not None:
            targets = self.train_targets[batch["row_id"].to(self.train_targets.device)].transpose(0, 1)
            return self.kind.fit_targets(targets, batch["inputs"][view])
        return self.ensemble.logits(batch["inputs"])

    def facts(self) -> dict[str, Any]:
        """metrics.json's teacher facts: each teacher's scores, cache hits and misses, forward passes (per rank)."""
        stats = [self.store.hits, self.store.misses, self.ensemble.forward_batches]
        per_rank = [stats]
        if self._world_size > 1 and torch.distributed.is_initialized():
            per_rank = [None] * self._world_size
            torch.distributed.all_gather_object(per_rank, stats)
        return {"teachers": {t["name"]: {**t, **self.teacher_scores.get(t["name"], {})}
                             for t in self.ensemble.describe()},
                "soft_target_cache": {"hits": self.store.hits, "misses": self.store.misses},
                "teacher_forward_batches": self.ensemble.forward_batches,
                "per_rank": [{"cache_hits": h, "cache_misses": m, "teacher_forward_batches": f}
                             for h, m, f in per_rank]}
