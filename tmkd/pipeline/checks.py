"""Training safeguards. A NaN/inf training loss or weight raises :class:`tmkd.finite.NonFiniteError`;
checkpoints are written atomically (:class:`AtomicCheckpointIO`).

Why a callback of our own: Lightning 2.x dropped ``Trainer(terminate_on_nan=...)``; ``detect_anomaly=True`` checks
every backward op (several times slower: debugging only); ``EarlyStopping(check_finite=True)`` only watches a
validation metric, and accuracy stays finite when every weight is NaN (argmax of NaN logits is class 0). The checks
here cost one small reduction per step and one pass over the weights per validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from torch import Tensor, nn

from tmkd.atomic import atomic_file
from tmkd.finite import NonFiniteError, describe, non_finite


def loss_of(outputs: Any) -> Tensor | None:
    """The loss a ``training_step`` returned (a tensor or a dict with ``loss``), else None (manual optimisation)."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), Tensor):
        return outputs["loss"]
    return None


def check_weights(model: nn.Module, where: str) -> None:
    """Raise when any parameter of ``model`` is NaN/inf (``where`` says when, for the message)."""
    bad = non_finite(model.named_parameters())  # not buffers: a mask buffer may hold -inf on purpose
    if bad:
        raise NonFiniteError(f"non-finite weights {where}: {describe(bad)} (the run diverged: lower the learning "
                             "rate or check the data)")


class FiniteChecks(pl.Callback):
    """Raise :class:`NonFiniteError` on a non-finite training loss or on non-finite weights.

    The loss flag stays on the device and is read every ``every_n_steps`` steps and before every validation and at
    the end of training, so a GPU run does not sync on every step; the weights are checked before each validation (a
    NaN model must not become the best checkpoint) and at the end of fitting.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self._bad: Tensor | None = None
        self._first_bad_step: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = loss_of(outputs)
        if loss is not None:
            bad = ~torch.isfinite(loss.detach()).all()
            self._bad = bad if self._bad is None else self._bad | bad
        if trainer.global_step % self.every_n_steps == 0:
            self._raise_if_bad(trainer)

    def _raise_if_bad(self, trainer: pl.Trainer) -> None:
        if self._bad is not None and bool(self._bad):
            raise NonFiniteError(f"training loss is NaN/inf (noticed at step {trainer.global_step}, epoch "
                                 f"{trainer.current_epoch}); the run diverged: lower the learning rate or check the "
                                 "data")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._raise_if_bad(trainer)
        check_weights(pl_module, f"before validation at step {trainer.global_step}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer)
        check_weights(pl_module, "at the end of training")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through :func:`tmkd.atomic.atomic_file`: fsynced, renamed into place, mode per
    umask, so a full disk or a crash leaves the previous ``last.ckpt`` intact instead of a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote or custom storage: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as handle:
            torch.save(checkpoint, handle)
        return None
