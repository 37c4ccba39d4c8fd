"""Soft movement pruning's penalty as an objective term: ``term(module, batch) -> Tensor``, added to the loss."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from tmkd.prune.pruner import Pruner


class PruneRegularization:
    """``lambda(step) * expected fraction of encoder weights kept`` (:meth:`Pruner.regularization_loss`).

    Only ``prune.mask=sigmoid`` has it (top-k hits its density by construction), and only until the fill freezes
    the structure; the term then returns 0. Weight 1: the schedule's ``regularization_weight`` already scales it.
    Neither the module nor the batch is read: the penalty depends on the scores alone.
    """

    name = "prune_reg"

    def __init__(self, pruner: Pruner) -> None:
        self.pruner = pruner

    @property
    def active(self) -> bool:
        return self.pruner.config.mask == "sigmoid" and not self.pruner.filled

    def __call__(self, module: Any, batch: Any) -> Tensor:
        return self.pruner.regularization_loss()
