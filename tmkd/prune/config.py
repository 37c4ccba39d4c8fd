"""Pruning hyper-parameters and the cubic sparsity schedule (Zhu & Gupta 2017, as used by movement pruning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Method = Literal["topk", "sigmoid"]
ScoreInit = Literal["constant", "uniform", "magnitude"]

METHODS: tuple[str, ...] = ("topk", "sigmoid")
SCORE_INITS: tuple[str, ...] = ("constant", "uniform", "magnitude")


@dataclass
class PruningConfig:
    """Block movement pruning of a BERT-style encoder's linear layers.

    ``method``:

    - ``"topk"`` (default): each matrix keeps exactly its ``round(density * n)`` highest-scoring blocks (FFN:
      units), with ``density`` following the cubic schedule. Chosen as the default because it hits the requested
      density exactly, per matrix, at every step: a density sweep *is* the sweep it names, runs at the same
      target are comparable, and tests can assert the density.
    - ``"sigmoid"`` (soft movement, the nn_pruning "hybrid filled" papers' best results): a block is kept while
      ``sigmoid(score) > threshold``; the threshold ramps 0 -> ``sigmoid_threshold`` and an L1 penalty on
      ``sigmoid(scores)`` ramps 0 -> ``regularization_weight`` on the same schedule. The final density is *not*
      controlled (it falls out of the penalty weight, the score lr and the task loss), so it needs tuning per
      model and task; the density targets are unused by this method. The penalty is ``lambda`` times the
      expected fraction of weights kept, so its gradient per score is about ``lambda / number_of_scores``
      (BERT-base: ~10^4 scores): expect ``regularization_weight`` in the tens to hundreds at a score lr ~1e-2.

    Densities are fractions of weights kept, in (0, 1]: ``target_density`` for all encoder linear weights, or
    ``attention_density`` (Q/K/V/output, square ``block_size`` blocks) and ``ffn_density`` (whole hidden units)
    separately. Step counts: ``total_steps`` (optimizer steps of the run; may be set after construction, it is
    read on every :meth:`Pruner.step`), ``warmup_*`` at density 1, ``cooldown_*`` at the target; ``*_steps``
    wins over ``*_fraction`` (of ``total_steps``) when given.

    ``score_init``: ``constant`` (every score = ``score_init_scale``; pure movement decides, as in the papers),
    ``uniform`` (U(-scale, scale), breaks ties randomly) or ``magnitude`` (mean |w| of the block / unit divided by
    the matrix mean, so top-k starts as magnitude pruning).
    """

    method: Method = "topk"
    target_density: float = 0.5
    attention_density: float | None = None
    ffn_density: float | None = None
    block_size: int = 32
    total_steps: int | None = None
    warmup_steps: int | None = None
    warmup_fraction: float = 0.1
    cooldown_steps: int | None = None
    cooldown_fraction: float = 0.2
    regularization_weight: float = 1.0
    sigmoid_threshold: float = 0.1
    score_init: ScoreInit = "constant"
    score_init_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("target_density", "attention_density", "ffn_density"):
            value = getattr(self, name)
            if value is not None and not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1] (fraction of weights kept), got {value}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {self.block_size!r}")
        for name in ("warmup_fraction", "cooldown_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("total_steps", "warmup_steps", "cooldown_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.regularization_weight < 0:
            raise ValueError(f"regularization_weight must be >= 0, got {self.regularization_weight}")
        if not 0.0 < self.sigmoid_threshold < 1.0:
            raise ValueError(f"sigmoid_threshold must be in (0, 1), got {self.sigmoid_threshold}")
        if self.score_init not in SCORE_INITS:
            raise ValueError(f"score_init must be one of {SCORE_INITS}, got {self.score_init!r}")
        if self.score_init == "uniform" and self.score_init_scale <= 0:
            raise ValueError("score_init='uniform' needs score_init_scale > 0 (the half-width of the range)")

    @property
    def attention_target(self) -> float:
        return float(self.attention_density if self.attention_density is not None else self.target_density)

    @property
    def ffn_target(self) -> float:
        return float(self.ffn_density if self.ffn_density is not None else self.target_density)

    def phases(self) -> tuple[int, int, int]:
        """``(total, warmup, cooldown)`` in steps; raises when ``total_steps`` is unset or the phases overlap."""
        if not self.total_steps:
            raise ValueError("PruningConfig.total_steps must be set (> 0) before scheduling; "
                             "e.g. pruner.config.total_steps = trainer.estimated_stepping_batches")
        total = int(self.total_steps)
        warmup = self.warmup_steps if self.warmup_steps is not None else round(self.warmup_fraction * total)
        cooldown = self.cooldown_steps if self.cooldown_steps is not None else round(self.cooldown_fraction * total)
        if warmup + cooldown >= total:
            raise ValueError(f"warmup ({warmup}) + cooldown ({cooldown}) steps leave no pruning phase "
                             f"in total_steps={total}")
        return total, int(warmup), int(cooldown)

    def progress(self, step: int) -> float:
        """Cubic schedule position in [0, 1]: 0 during warm-up, ``1 - (1 - p)^3`` while pruning, 1 in cool-down.

        Density at ``step`` is ``1 - (1 - target) * progress``: it falls fast first, when the network can still
        recover, and flattens near the target.
        """
        total, warmup, cooldown = self.phases()
        span = total - warmup - cooldown
        p = min(max((step - warmup) / span, 0.0), 1.0)
        return 1.0 - (1.0 - p) ** 3

    def densities(self, step: int) -> tuple[float, float]:
        """Scheduled ``(attention, ffn)`` densities at ``step`` (top-k)."""
        r = self.progress(step)
        return 1.0 - (1.0 - self.attention_target) * r, 1.0 - (1.0 - self.ffn_target) * r
