"""Distillation: the one module (:class:`tmkd.modules.base.StageModule`) with teachers, heads and KD terms.

:func:`distillation_module` assembles it from the ``distill`` settings: the teacher source (ensemble + soft-target
store, :class:`tmkd.modules.teachers.TeacherSource`), the heads (one; or one per teacher, m-o-m) and the objective
``alpha * KD + (1 - alpha) * CE + w * hidden`` (:func:`tmkd.distill.objective.objective_from_distill`) plus any
extra terms. 1-o-1, m-o-1 and m-o-m differ only in those arguments. On an unlabelled train split
(``task.train_labelled=false``) the objective is the teachers' aggregated soft targets alone: no CE term, no label
read (batches carry none), and :func:`check_label_free` refuses any setting that would need one. Logits follow the
task kind's layout (classification [B, C]; QA [B, 2, S] with teachers' [T, B, 2, S]); aggregators and KD losses
take either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedModel

from tmkd.data.datamodule import STUDENT
from tmkd.data.kinds import get_kind
from tmkd.data.tasks import TaskSpec
from tmkd.distill.aggregators import Aggregator, BestTeacherAggregator, ConfidenceAggregator
from tmkd.distill.ensemble import TeacherEnsemble
from tmkd.distill.objective import Objective, Term, objective_from_distill
from tmkd.modules.base import OptimConfig, StageModule
from tmkd.modules.heads import TeacherHeads, find_output_layer
from tmkd.modules.teachers import TeacherSource

__all__ = [
    "DistillConfig",
    "check_label_free",
    "distill_objective",
    "distillation_module",
    "find_output_layer",
]


@dataclass
class DistillConfig:
    """The ``distill`` config node (teachers are built separately)."""

    loss: str = "kl"
    temperature: float = 2.0
    alpha: float = 0.5
    cache: bool = True
    cache_dir: str | None = None
    hidden_weight: float = 0.0
    hidden_teacher: int = 0
    hidden_layer_map: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"distill.temperature must be positive, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"distill.alpha must be in [0, 1], got {self.alpha}")
        if self.hidden_weight < 0:
            raise ValueError(f"distill.hidden.weight must be >= 0, got {self.hidden_weight}")
        if self.hidden_weight > 0 and not self.hidden_layer_map:
            raise ValueError("distill.hidden.weight > 0 needs distill.hidden.layer_map {student_layer: teacher_layer}")


def check_label_free(task: TaskSpec, config: DistillConfig, aggregator: Aggregator | None = None) -> None:
    """On an unlabelled train split only the soft targets can train: refuse a CE term (``distill.alpha`` < 1) and an
    aggregator that weighs teachers by the gold label, naming the setting to change."""
    if task.train_labelled:
        return
    where = (f"task {task.name!r} has train_labelled=false (its train split is read as unlabelled text: no gold "
             "labels)")
    if config.alpha < 1:
        raise ValueError(f"distill.alpha={config.alpha} puts weight {1 - config.alpha:g} on the gold-label CE, but "
                         f"{where}: set distill.alpha=1.0 (teachers' soft targets only)")
    if isinstance(aggregator, ConfidenceAggregator) and aggregator.measure == "gold":
        raise ValueError(f"aggregator=confidence with measure=gold weighs teachers by the gold label, but {where}: "
                         "use aggregator.measure=entropy (label-free), or aggregator=mean / weighted")
    if isinstance(aggregator, BestTeacherAggregator):
        raise ValueError(f"aggregator=best picks the teacher most confident on the gold label, but {where}: use "
                         "aggregator=mean, weighted, or confidence with measure=entropy")


def distill_objective(config: DistillConfig, task: TaskSpec, aggregator: Aggregator | str | dict | None = None,
                      extra_terms: list[Term] | None = None) -> Objective:
    """The objective of ``config`` on ``task`` (no CE on an unlabelled train split), plus ``extra_terms``."""
    check_label_free(task, config, aggregator if isinstance(aggregator, Aggregator) else None)
    return objective_from_distill(
        alpha=config.alpha, temperature=config.temperature, loss=config.loss, labelled=task.train_labelled,
        aggregator=aggregator, hidden_weight=config.hidden_weight, hidden_layer_map=config.hidden_layer_map,
        hidden_teacher=config.hidden_teacher, extra=extra_terms)


def teacher_source(ensemble: TeacherEnsemble, task: TaskSpec, config: DistillConfig, max_length: int | None = None
                   ) -> TeacherSource:
    """The teachers' soft targets as ``config`` asks: cached on disk (``cache``), precomputed for the train split
    when cached or when the task kind always precomputes (QA), else computed online per batch."""
    return TeacherSource(ensemble, task, max_length or task.max_length, config.cache_dir if config.cache else None,
                         precompute=config.cache or get_kind(task.kind).precompute_targets)


def distillation_module(model: PreTrainedModel, task: TaskSpec, optim: OptimConfig | None, ensemble: TeacherEnsemble,
                        config: DistillConfig | None = None, aggregator: Aggregator | str | dict | None = None, *,
                        per_teacher_heads: bool = False, exact_teachers: int | None = None,
                        max_length: int | None = None, extra_terms: list[Term] | None = None,
                        view: str = STUDENT) -> StageModule:
    """Distil ``ensemble`` into ``model``: m-o-1 by default, m-o-m with ``per_teacher_heads`` (one head per teacher,
    folded into one layer on export), 1-o-1 with ``exact_teachers=1``. ``aggregator``: an :class:`Aggregator`, a
    registered name or ``{"name": ..., **options}`` (``weighted`` without weights: the teachers' own weights).
    Every check the command line makes happens here (label-free objective, hidden-state teacher, teacher count)."""
    config = config or DistillConfig()
    if exact_teachers is not None and len(ensemble) != exact_teachers:
        wanted = "one teacher" if exact_teachers == 1 else f"{exact_teachers} teachers"
        raise ValueError(f"{'one_to_one' if exact_teachers == 1 else 'this method'} takes exactly {wanted}, got "
                         f"{len(ensemble)}: {ensemble.names} (use many_to_one or many_to_many)")
    objective = distill_objective(config, task, aggregator or "mean", extra_terms)
    teachers = teacher_source(ensemble, task, config, max_length)
    # the objective binds (hidden-state projection) inside the module's __init__, before the heads are made: the
    # parameters are created in the order they always were
    module = StageModule(model, task, optim, view, objective=objective, teachers=teachers)
    if per_teacher_heads:
        module.heads = TeacherHeads(model, len(ensemble))
    return module
