"""Pruning hyper-parameters and the cubic sparsity schedule (Zhu & Gupta 2017, as used by movement pruning)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Mask = Literal["topk", "sigmoid"]
ScoreInit = Literal["constant", "uniform", "magnitude"]

MASKS: tuple[str, ...] = ("topk", "sigmoid")
SCORE_INITS: tuple[str, ...] = ("constant", "uniform", "magnitude")


@dataclass
class PruningConfig:
    """Block movement pruning of a BERT-style encoder's linear layers.

    ``mask`` (how scores become a 0/1 mask; named apart from the stage type ``method``):

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

    mask: Mask = "topk"
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
        if self.mask not in MASKS:
            raise ValueError(f"prune.mask must be one of {MASKS}, got {self.mask!r}")
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


@dataclass
class PruneSettings:
    """The ``prune`` config node of a stage: the :class:`PruningConfig` keys plus what the run adds around them
    (scores' lr, the final hybrid-filled fine-tune, the report's dense evaluation and CPU latency)."""

    pruning: PruningConfig = field(default_factory=PruningConfig)
    score_lr: float = 1e-2
    final_finetune_fraction: float = 0.2
    dense_eval: bool = True  # score the dense starting model on dev for the report (one extra dev pass)
    latency: bool = True  # CPU latency of dense vs pruned (tmkd.bench.latency)
    latency_rows: int = 64
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.final_finetune_fraction < 1.0:
            raise ValueError(f"prune.final_finetune_fraction must be in [0, 1), got {self.final_finetune_fraction}")
        if self.score_lr <= 0:
            raise ValueError(f"prune.score_lr must be positive, got {self.score_lr}")

    @classmethod
    def from_node(cls, node: Mapping[str, Any], report: Mapping[str, Any] | None = None) -> PruneSettings:
        """From the ``prune`` node (unknown keys fail loudly) and the run's ``report`` node (latency options)."""
        node = dict(node)
        own = {f.name for f in fields(cls)} - {"pruning", "latency", "latency_rows", "batch_sizes", "threads"}
        pruning_keys = {f.name for f in fields(PruningConfig)} - {"total_steps"}
        unknown = sorted(set(node) - own - pruning_keys)
        if unknown:
            hint = " (prune.method is now prune.mask: `method` names the stage type)" if "method" in unknown else ""
            raise ValueError(f"unknown prune keys {unknown}; valid: {sorted(own | pruning_keys)}{hint}")
        pruning = PruningConfig(**{k: v for k, v in node.items() if k in pruning_keys})
        report = report or {}
        return cls(pruning=pruning, **{k: v for k, v in node.items() if k in own},
                   latency=bool(report.get("latency", True)), latency_rows=int(report.get("latency_rows", 64)),
                   batch_sizes=tuple(int(b) for b in report.get("batch_sizes", (1, 32))),
                   threads=int(report.get("threads", 1)))
