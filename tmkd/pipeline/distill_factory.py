"""Build a distillation run: teachers (already trained: the planner runs them first), aggregator, module, views."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tmkd.data.datamodule import STUDENT
from tmkd.data.holdout import Holdout
from tmkd.data.tasks import TaskSpec
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.distill.objective import Term, build_term
from tmkd.models.adapter_teacher import find_adapter_export, load_adapter_teacher
from tmkd.models.build import ModelSpec, build_model, check_max_length
from tmkd.modules.base import OptimConfig, StageModule
from tmkd.modules.distill import DistillConfig, check_label_free, distillation_module
from tmkd.pipeline.settings import build_holdout, max_length_of, plain

log = logging.getLogger(__name__)
TEACHER_KEYS = {"name", "weight", "run"}


def build_teachers(specs: list[dict[str, Any]], task: TaskSpec) -> TeacherEnsemble:
    if not specs:
        raise ValueError("distillation needs teachers: set distill.teachers (see configs/experiment/m_o_1_rte.yaml)")
    teachers = []
    for i, spec in enumerate(specs):
        if spec.get("run"):
            raise ValueError(f"teacher {spec.get('name', i)!r} has a `run` that was not planned: run it through "
                             "`python -m tmkd.run` (the planner trains it first and points name_or_path at it)")
        weight = float(spec.get("weight", 1.0))
        if weight < 0:
            raise ValueError(f"teacher {spec.get('name', i)!r}: weight must be >= 0, got {weight}")
        model, tokenizer, source = build_teacher_model(spec, task, spec.get("name") or f"t{i}")
        teachers.append(Teacher(spec.get("name") or f"t{i}", model, tokenizer, weight, source))
    return TeacherEnsemble(teachers, task)


def build_teacher_model(spec: dict[str, Any], task: TaskSpec, name: str
                        ) -> tuple[nn.Module, PreTrainedTokenizerBase, str]:
    """(model, tokenizer, source) of one teacher: a HF model (:func:`build_model`), or frozen encoder + adapter
    when ``name_or_path`` holds a saved adapter (an export or an adapter run's folder; detected, not declared)."""
    model_keys = {k: v for k, v in spec.items() if k not in TEACHER_KEYS}
    export = find_adapter_export(spec["name_or_path"]) if spec.get("name_or_path") else None
    if export is None:
        model_spec = ModelSpec.from_config(model_keys)
        model, tokenizer = build_model(model_spec, task)
        return model, tokenizer, model_spec.describe()
    other = sorted(k for k, v in model_keys.items() if k != "name_or_path" and v is not None)
    if other:
        raise ValueError(f"teacher {name!r}: {spec['name_or_path']} is a saved adapter; {other} apply to HF "
                         "models only (an adapter runs with the encoder and tokenizer it was trained on)")
    return load_adapter_teacher(export, task)


def warn_teacher_holdout(specs: list[dict[str, Any]], holdout: Holdout | None) -> list[str]:
    """With ``data.holdout`` on, a teacher that trained on the held-out rows leaks their labels into the soft
    targets, and held-out scores then flatter the student. Teachers the planner trains get the same ``data.*``
    overrides (so the same holdout); a teacher named by folder or hub id is the user's responsibility: warn unless
    its run folder's config.yaml shows the same holdout. Returns the warnings (also logged)."""
    if holdout is None:
        return []
    warnings = []
    for i, spec in enumerate(specs):
        name, where = spec.get("name") or f"t{i}", spec.get("name_or_path")
        saved = next((Path(d) / "config.yaml" for d in ((where, Path(where).parent) if where else ())
                      if (Path(d) / "config.yaml").is_file()), None)
        if saved is None:
            warnings.append(f"teacher {name!r} ({where or 'no name_or_path'}) is not a tmkd run "
                            f"folder: make sure it did not train on the held-out rows ({holdout.describe()}), or "
                            "its soft targets leak their labels")
            continue
        theirs = Holdout.from_config((OmegaConf.load(saved).get("data") or {}).get("holdout"))
        if theirs != holdout:
            warnings.append(f"teacher {name!r} ({saved.parent}) was trained with data.holdout {theirs}, this run "
                            f"holds out {holdout}: it may have trained on the held-out rows, whose labels its "
                            "soft targets then leak; train it with the same data.holdout")
    for w in warnings:
        log.warning(w)
    return warnings


def check_teacher_lengths(ensemble: TeacherEnsemble, task: TaskSpec, max_length: int) -> None:
    """Teachers read the data cut to the student's ``max_length`` (after :meth:`TeacherEnsemble.assign_views`):
    each must embed that many positions. A QA teacher with its own tokenizer re-cuts windows to what it embeds."""
    for t in ensemble.teachers:
        if task.kind != "qa" or t.view == STUDENT:
            check_max_length(t.model.config, max_length, f"teacher {t.name!r} ({t.source})")


def select_teachers(specs: list[dict[str, Any]], names: list[str] | None) -> list[dict[str, Any]]:
    """The teachers named in ``distill.use_teachers`` (in that order), or all when it is null."""
    if names is None:
        return specs
    by_name = {s.get("name"): s for s in specs}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"distill.use_teachers names {missing} not in distill.teachers {list(by_name)}")
    return [by_name[n] for n in names]


def distill_config(node: dict[str, Any]) -> DistillConfig:
    hidden = node.get("hidden") or {}
    return DistillConfig(
        loss=node["loss"], temperature=float(node["temperature"]), alpha=float(node["alpha"]),
        cache=bool(node["cache"]), cache_dir=node.get("cache_dir"),
        hidden_weight=float(hidden.get("weight", 0.0)), hidden_teacher=int(hidden.get("teacher", 0)),
        hidden_layer_map={int(k): int(v) for k, v in (hidden.get("layer_map") or {}).items()},
    )


def extra_terms(cfg: DictConfig) -> list[Term]:
    """Terms added by config (``objective.terms.<registered name>: {weight: ..., <options>}``, e.g. from a
    ``configs/objective/<name>.yaml``), after the ones the ``distill`` knobs make."""
    node = plain(cfg.get("objective")) or {}
    unknown = sorted(set(node) - {"terms"})
    if unknown:
        raise ValueError(f"unknown objective option(s) {unknown}: the objective node holds `terms` only")
    return [build_term(name, **(options or {})) for name, options in (node.get("terms") or {}).items()]


def build_distill_module(cfg: DictConfig, task: TaskSpec, model: PreTrainedModel,
                         tokenizer: PreTrainedTokenizerBase, optim: OptimConfig, *, per_teacher_heads: bool = False,
                         exact_teachers: int | None = None
                         ) -> tuple[StageModule, dict[str, PreTrainedTokenizerBase]]:
    """The distillation module of ``cfg`` (teachers, aggregator, objective) and the views its batches need.
    Checks that need no teacher run first (label-free objective), so a bad setting fails before teachers load."""
    node = plain(cfg.distill)
    dcfg = distill_config(node)
    check_label_free(task, dcfg)  # alpha < 1 on unlabelled text fails here, before any teacher loads
    terms = extra_terms(cfg)
    specs = select_teachers(node["teachers"], node.get("use_teachers"))
    warn_teacher_holdout(specs, build_holdout(cfg))
    ensemble = build_teachers(specs, task)
    extra_views = ensemble.assign_views(STUDENT, tokenizer)
    check_teacher_lengths(ensemble, task, max_length_of(cfg, task))
    aggregator = dict(node["aggregator"])  # ``weighted`` without weights: the teachers' own (the objective's rule)
    max_length = cfg.data.max_length or task.max_length
    module = distillation_module(model, task, optim, ensemble, dcfg, aggregator, per_teacher_heads=per_teacher_heads,
                                 exact_teachers=exact_teachers, max_length=max_length, extra_terms=terms)
    precomputed = dcfg.cache or module.kind.precompute_targets  # else teachers read their own views online
    views = {STUDENT: tokenizer, **({} if precomputed else extra_views)}
    return module, views
