"""Binary masks from learned scores, with the straight-through estimator, as ``torch.nn.utils.parametrize`` modules.

A mask is a grid of scores, one per block of ``(block_rows, block_cols)`` weights: square blocks for attention,
``(1, in_features)`` for FFN rows of the intermediate dense (a hidden unit's inputs) and ``(out_features, 1)`` for
the matching columns of the output dense (its outputs). The two FFN masks share one score Parameter, so a unit
lives or dies as a whole.

Straight-through: the forward pass binarises the scores; the backward pass treats the binariser as the identity,
so ``dL/dscore = sum over the block of dL/dW' * W`` (with ``W' = W * mask``): the *movement* score of Sanh et
al. 2020, which grows for weights moving away from zero and lets a pruned block come back.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def topk_count(density: float, n: int) -> int:
    """Blocks kept of ``n`` at ``density``: round half up, so the measured density is within half a block."""
    return min(n, max(0, math.floor(density * n + 0.5)))


class TopKSTE(torch.autograd.Function):
    """Keep the ``round(density * n)`` highest scores (ties broken by position, so repeated calls agree)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, scores: Tensor, density: float) -> Tensor:
        flat = scores.detach().reshape(-1)
        mask = torch.zeros_like(flat)
        k = topk_count(density, flat.numel())
        if k:
            mask[torch.argsort(flat, descending=True, stable=True)[:k]] = 1.0
        return mask.view_as(scores)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class ThresholdSTE(torch.autograd.Function):
    """Keep scores with ``sigmoid(score) > threshold`` (soft movement)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, scores: Tensor, threshold: float) -> Tensor:
        return (torch.sigmoid(scores.detach()) > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def expand_blocks(grid: Tensor, block_rows: int, block_cols: int) -> Tensor:
    """``(R/br, C/bc)`` -> ``(R, C)``: every grid cell repeated over its block (differentiable)."""
    gr, gc = grid.shape
    return grid[:, None, :, None].expand(gr, block_rows, gc, block_cols).reshape(gr * block_rows, gc * block_cols)


class ScoreMask(nn.Module):
    """Parametrization ``W -> W * expand(binarize(scores))`` for one linear layer's weight.

    ``scores`` is the learned Parameter (possibly shared with another ScoreMask, see the FFN); ``grid`` the shape it
    is viewed as for this matrix. ``level`` is the current top-k density or sigmoid threshold, set by
    :meth:`tmkd.prune.Pruner.step`. ``fixed`` (a bool tensor of the weight's shape), once set, replaces the learned
    mask: that is how "hybrid filled" freezes the structure for the final fine-tuning.
    """

    fixed: Tensor | None

    def __init__(self, scores: nn.Parameter, grid: tuple[int, int], block: tuple[int, int], mask: str,
                 level: float) -> None:
        super().__init__()
        self.scores = scores
        self.grid = grid
        self.block = block
        self.rule = mask  # "topk" | "sigmoid" (PruningConfig.mask)
        self.level = level
        self.register_buffer("fixed", None)

    def binary_grid(self) -> Tensor:
        """The 0/1 mask per block, shape ``grid`` (differentiable w.r.t. the scores by straight-through)."""
        scores = self.scores.view(self.grid)
        if self.rule == "topk":
            return TopKSTE.apply(scores, self.level)
        return ThresholdSTE.apply(scores, self.level)

    def mask(self) -> Tensor:
        """Full-resolution 0/1 mask of the weight's shape."""
        if self.fixed is not None:
            return self.fixed.to(self.scores.dtype)
        return expand_blocks(self.binary_grid(), *self.block)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask().to(weight.dtype)
