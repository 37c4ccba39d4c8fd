"""Soft-target aggregators: combine per-teacher logits into the single target the student learns from.

Every aggregator only decides per-teacher, per-example weights ``w[t, b]`` (non-negative, summing to
one over teachers); the base class turns them into the mixed softened probabilities and mixed logits,
so all strategies produce targets the KD losses treat identically.

Logits are ``[teachers, batch, ..., classes]``: extra middle dims are independent distributions of one example
(QA: ``[T, B, 2, S]``, a start and an end distribution over the window's tokens); labels are then
``[batch, ...]`` (QA: ``[B, 2]``). Weights stay per example (``[T, B]``): confidence-style measures average
over the middle dims (QA: p(gold) averaged over start and end).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tmkd.registry import Registry

AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


@dataclass(frozen=True)
class SoftTarget:
    """What the student is distilled towards.

    ``probs`` [B, ..., C]: weighted mix of the teachers' softened probabilities (for KL);
    ``logits`` [B, ..., C]: weighted mix of the raw teacher logits (for MSE on logits);
    ``weights`` [T, B]: the teacher weights used, kept for logging/analysis.
    """

    probs: Tensor
    logits: Tensor
    weights: Tensor


def _upcast(x: Tensor) -> Tensor:
    # Softmax/entropy in half precision loses the small probabilities KD relies on.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _per_example(x: Tensor) -> Tensor:
    """[T, B, ...] -> [T, B]: the mean over an example's distributions (QA: start and end)."""
    return x.flatten(2).mean(-1) if x.dim() > 2 else x


def _gold_probs(probs: Tensor, labels: Tensor) -> Tensor:
    """probs [T, B, ..., C], labels [B, ...] -> each teacher's probability of the gold label(s), averaged over the
    middle dims: [T, B]."""
    index = labels.unsqueeze(0).unsqueeze(-1).expand(probs.shape[0], *labels.shape, 1)
    return _per_example(probs.gather(-1, index).squeeze(-1))


class Aggregator(nn.Module):
    """Base class: subclasses implement :meth:`weights`; :meth:`forward` validates and mixes."""

    @abstractmethod
    def weights(self, logits: Tensor, labels: Tensor | None, temperature: float) -> Tensor:
        """Per-teacher, per-example weights [T, B] for ``logits`` [T, B, C]; they sum to one over T."""

    def forward(self, logits: Tensor, labels: Tensor | None = None, temperature: float = 1.0) -> SoftTarget:
        _validate(logits, labels, temperature)
        logits = _upcast(logits)
        n_teachers, batch = logits.shape[:2]
        w = self.weights(logits, labels, temperature)
        if w.shape != (n_teachers, batch):
            raise RuntimeError(
                f"{type(self).__name__}.weights returned shape {tuple(w.shape)}, "
                f"expected (T, B) = ({n_teachers}, {batch})"
            )
        w = w.to(dtype=logits.dtype, device=logits.device)
        wb = w.view(n_teachers, batch, *([1] * (logits.dim() - 2)))
        probs = (wb * torch.softmax(logits / temperature, dim=-1)).sum(0)
        mixed_logits = (wb * logits).sum(0)
        return SoftTarget(probs=probs, logits=mixed_logits, weights=w)


def _validate(logits: Tensor, labels: Tensor | None, temperature: float) -> None:
    if not isinstance(logits, Tensor) or logits.dim() < 3:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"teacher logits must be a 3-D tensor [teachers, batch, classes] (or more: "
                         f"[teachers, batch, ..., classes]), got {shape}")
    if not logits.is_floating_point():
        raise ValueError(f"teacher logits must be floating point, got dtype {logits.dtype}")
    n_classes = logits.shape[-1]
    if 0 in logits.shape:
        raise ValueError(f"teacher logits have an empty dimension: shape {tuple(logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if labels is None:
        return
    expected = tuple(logits.shape[1:-1])
    if tuple(labels.shape) != expected:
        dims = "[batch]" if len(expected) == 1 else "[batch, ...]"
        raise ValueError(f"labels must have shape {dims} = {list(expected)} for teacher logits "
                         f"{tuple(logits.shape)}, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise ValueError(f"label value {bad} is outside [0, {n_classes}) for {n_classes} classes")


@AGGREGATORS.register("mean")
class MeanAggregator(Aggregator):
    """Uniform average: ``w[t, b] = 1 / T``."""

    def weights(self, logits: Tensor, labels: Tensor | None, temperature: float) -> Tensor:
        n_teachers, batch = logits.shape[:2]
        return torch.full((n_teachers, batch), 1.0 / n_teachers, dtype=logits.dtype, device=logits.device)


@AGGREGATORS.register("weighted")
class WeightedAggregator(Aggregator):
    """Fixed per-teacher weights from the config: ``w[t, b] = a_t / sum_s a_s`` for every example."""

    def __init__(self, weights: list[float]) -> None:
        super().__init__()
        values = [float(v) for v in weights]
        if not values:
            raise ValueError("weighted aggregator needs at least one teacher weight")
        if any(v < 0 for v in values):
            raise ValueError(f"teacher weights must be non-negative, got {values}")
        total = sum(values)
        if total <= 0:
            raise ValueError(f"teacher weights must not all be zero, got {values}")
        # Not persistent: the weights come from the config, not from checkpoints.
        self.register_buffer("teacher_weights", torch.tensor([v / total for v in values]), persistent=False)

    def weights(self, logits: Tensor, labels: Tensor | None, temperature: float) -> Tensor:
        n_teachers, batch = logits.shape[:2]
        if n_teachers != self.teacher_weights.numel():
            raise ValueError(
                f"weighted aggregator has {self.teacher_weights.numel()} weights but got logits "
                f"from {n_teachers} teachers"
            )
        w = self.teacher_weights.to(dtype=logits.dtype, device=logits.device)
        return w.unsqueeze(1).expand(n_teachers, batch)


@AGGREGATORS.register("confidence")
class ConfidenceAggregator(Aggregator):
    """Per-example weights from how confident each teacher is, with ``p_t = softmax(z_t / T)``.

    ``measure="gold"``:    ``w[t, b] = p_t[b, y_b] / sum_s p_s[b, y_b]`` (trust teachers that are
    right on this example); without labels it falls back to ``"entropy"``.
    ``measure="entropy"``: ``w[:, b] = softmax_t(-H(p_t[b]))`` with ``H(p) = -sum_c p_c log p_c``
    (label-free: trust peaked teachers).
    """

    MEASURES = ("gold", "entropy")

    def __init__(self, measure: str = "gold") -> None:
        super().__init__()
        if measure not in self.MEASURES:
            raise ValueError(f"unknown confidence measure {measure!r}; valid: {', '.join(self.MEASURES)}")
        self.measure = measure

    def weights(self, logits: Tensor, labels: Tensor | None, temperature: float) -> Tensor:
        scaled = logits / temperature
        if self.measure == "gold" and labels is not None:
            gold = _gold_probs(torch.softmax(scaled, dim=-1), labels)
            total = gold.sum(0, keepdim=True)
            # Every teacher may put (numerically) zero mass on the gold label: use uniform, not 0/0.
            safe_total = torch.where(total > 0, total, torch.ones_like(total))
            return torch.where(total > 0, gold / safe_total, torch.full_like(gold, 1.0 / gold.shape[0]))
        log_probs = torch.log_softmax(scaled, dim=-1)
        neg_entropy = _per_example((log_probs.exp() * log_probs).sum(-1))
        return torch.softmax(neg_entropy, dim=0)


@AGGREGATORS.register("best")
class BestTeacherAggregator(Aggregator):
    """Per example, all weight on one teacher: ``w[:, b] = onehot(argmax_t p_t[b, y_b])``.

    Without labels the teacher with the highest ``max_c p_t[b, c]`` wins; ties go to the lower index.
    """

    def weights(self, logits: Tensor, labels: Tensor | None, temperature: float) -> Tensor:
        probs = torch.softmax(logits / temperature, dim=-1)
        score = _gold_probs(probs, labels) if labels is not None else _per_example(probs.amax(dim=-1))
        winner = score.argmax(dim=0)
        return nn.functional.one_hot(winner, logits.shape[0]).T.to(logits.dtype).contiguous()


@AGGREGATORS.register("agreement")
class AgreementAggregator(Aggregator):
    """Per example, trust the teachers that agree with the ensemble: ``w[:, b] = softmax_t(-sharpness * d_t[b])``,
    ``d_t[b] = KL(p_t[b] || pbar[b])`` with ``pbar`` the teachers' mean softened distribution.

    Why: with three or more teachers, one that is wrong where the others agree (an outlier on this example) pulls
    a mean target towards its mistake; weighting by agreement shrinks it, label-free (so it also suits unlabelled
    text, unlike ``confidence``/``best`` on the gold label). ``sharpness=0`` is the mean; large values approach
    the teacher nearest the consensus (a soft medoid, a robust "median" that stays a mixture of whole
    distributions, as every aggregator's target is). KL from ``p_t`` to ``pbar`` is always finite, as
    ``pbar >= p_t / T``. "Agreement" means a majority only with three or more teachers; with two it merely leans
    towards the one KL puts nearer their mean.
    """

    def __init__(self, sharpness: float = 5.0) -> None:
        super().__init__()
        if not sharpness >= 0:
            raise ValueError(f"agreement aggregator: sharpness must be >= 0, got {sharpness}")
        self.sharpness = float(sharpness)

    def weights(self, logits: Tensor, labels: Tensor | None, temperature: float) -> Tensor:
        log_probs = torch.log_softmax(logits / temperature, dim=-1)
        log_mean = torch.logsumexp(log_probs, dim=0, keepdim=True) - math.log(logits.shape[0])
        divergence = _per_example((log_probs.exp() * (log_probs - log_mean)).sum(-1))  # [T, B]
        return torch.softmax(-self.sharpness * divergence, dim=0)


def build_aggregator(name: str, **kwargs: Any) -> Aggregator:
    """Build a registered aggregator from config, e.g. ``build_aggregator("weighted", weights=[.5, .5])``."""
    return AGGREGATORS.build(name, **kwargs)
