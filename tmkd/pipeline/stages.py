"""Stage types: what ``method`` names. One entry per method says whether the stage trains from teachers and from gold
labels, and builds its module from a composed config.

Other code asks :func:`stage_type` instead of testing the method string (the planner: does this stage need
teachers trained first? the sweeps: which knobs apply?). Adding a stage type: a :class:`StageType` in
:data:`STAGE_TYPES` (and its ``configs/method/<name>.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from tmkd.data.datamodule import STUDENT
from tmkd.data.tasks import TaskSpec
from tmkd.models.build import ModelSpec, build_model, check_max_length
from tmkd.modules.base import FineTuneModule, OptimConfig, StageModule, require_labels
from tmkd.pipeline.adapter_factory import build_adapter_module
from tmkd.pipeline.distill_factory import build_distill_module
from tmkd.pipeline.settings import max_length_of, plain

Built = tuple[StageModule, dict[str, PreTrainedTokenizerBase]]


@dataclass(frozen=True)
class StageType:
    """One ``method``: ``uses_teachers`` (distils from ``distill.teachers``, which the planner trains first),
    ``uses_labels`` (trains on gold labels: refused on an unlabelled train split), and how to build it."""

    name: str
    uses_teachers: bool
    uses_labels: bool
    build: Callable[[DictConfig, TaskSpec, OptimConfig], Built]
    summary: str = ""
    # when teachers are optional (an adapter distils only with adapter.distill): decides from the resolved config
    teachers_if: Callable[[Mapping[str, Any]], bool] | None = None

    def distils(self, config: Mapping[str, Any]) -> bool:
        """Whether a run of this type with ``config`` distils from ``distill.teachers``."""
        return self.teachers_if(config) if self.teachers_if is not None else self.uses_teachers


def _student(cfg: DictConfig, task: TaskSpec) -> tuple:
    """The trained transformer (from an earlier stage with other labels or kind: head re-initialised)."""
    spec = ModelSpec.from_config(plain(cfg.model))
    model, tokenizer = build_model(spec, task, on_label_mismatch="reinit")
    check_max_length(model.config, max_length_of(cfg, task), f"model {spec.describe()}")
    return model, tokenizer


def _finetune(cfg: DictConfig, task: TaskSpec, optim: OptimConfig) -> Built:
    model, tokenizer = _student(cfg, task)
    return FineTuneModule(model, task, optim), {STUDENT: tokenizer}


def _distill(**options: object) -> Callable[[DictConfig, TaskSpec, OptimConfig], Built]:
    def build(cfg: DictConfig, task: TaskSpec, optim: OptimConfig) -> Built:
        model, tokenizer = _student(cfg, task)
        return build_distill_module(cfg, task, model, tokenizer, optim, **options)  # type: ignore[arg-type]
    return build


STAGE_TYPES: dict[str, StageType] = {s.name: s for s in (
    StageType("finetune", uses_teachers=False, uses_labels=True, build=_finetune,
              summary="gold labels only (teachers, baselines)"),
    StageType("one_to_one", uses_teachers=True, uses_labels=False, build=_distill(exact_teachers=1),
              summary="classic KD from exactly one teacher"),
    StageType("many_to_one", uses_teachers=True, uses_labels=False, build=_distill(),
              summary="N teachers -> aggregator -> one soft target -> one head"),
    StageType("many_to_many", uses_teachers=True, uses_labels=False, build=_distill(per_teacher_heads=True),
              summary="one student head per teacher, folded into one on export (TMKD)"),
    StageType("adapter", uses_teachers=False, uses_labels=True, build=build_adapter_module,
              teachers_if=lambda config: bool((config.get("adapter") or {}).get("distill")),
              summary="a hidden-state adapter on a frozen encoder (adapter.distill: also from teachers)"),
)}


def stage_type(method: str) -> StageType:
    """The stage type ``method`` names; an unknown one fails with the valid names."""
    if method == "prune":
        raise ValueError("method=prune is gone: pruning is an add-on of any stage, e.g. method=many_to_one "
                         "+prune=default (or /prune: default in an experiment's defaults)")
    if method not in STAGE_TYPES:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(STAGE_TYPES)}")
    return STAGE_TYPES[method]


def uses_teachers(config: Mapping[str, Any]) -> bool:
    """Whether a resolved run config distils from ``distill.teachers`` (so the planner trains, checks and hashes
    them): the question the planner and the sweeps ask instead of testing the method string."""
    return stage_type(config.get("method", "finetune")).distils(config)


def build_stage(cfg: DictConfig, task: TaskSpec) -> Built:
    """The module for ``cfg.method`` and the tokenizers (views) its batches need, student first. Gold-label stages
    are refused on unlabelled text before any model loads."""
    stage = stage_type(cfg.method)
    if stage.uses_labels:
        require_labels(task, stage.name)
    return stage.build(cfg, task, OptimConfig(**plain(cfg.optim)))
