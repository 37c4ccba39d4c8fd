"""Build ``method: adapter`` stages from a composed config: a hidden-state adapter student on a frozen encoder
(cached features, classification; :func:`tmkd.modules.adapter.adapter_module`) or on streamed per-token states (span
/ QA; :func:`tmkd.modules.adapter.span_adapter_module`), both trained by the one
:class:`~tmkd.modules.base.StageModule`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from tmkd.data.datamodule import STUDENT
from tmkd.data.tasks import TaskSpec
from tmkd.distill.objective import aggregator_for
from tmkd.features import FeatureStore
from tmkd.features.datamodule import FeatureViews
from tmkd.models.adapter import AdapterConfig, AdapterWithEncoder, HiddenStateAdapter
from tmkd.models.adapter_student import AdapterStudent, SpanAdapterStudent
from tmkd.models.build import check_max_length, usable_positions
from tmkd.modules.adapter import (
    ENSEMBLE_MEMBER,
    AdapterSettings,
    adapter_module,
    build_frozen_encoder,
    encoder_reference,
    span_adapter_module,
)
from tmkd.modules.base import OptimConfig, StageModule
from tmkd.pipeline.distill_factory import build_teachers, check_teacher_lengths, distill_config, select_teachers
from tmkd.pipeline.settings import plain


def build_adapter_module(cfg: DictConfig, task: TaskSpec, optim: OptimConfig
                         ) -> tuple[StageModule, dict[str, PreTrainedTokenizerBase]]:
    """The adapter module and its views (:class:`~tmkd.features.datamodule.FeatureViews`: they carry the features)."""
    settings = AdapterSettings.from_config(plain(cfg.get("adapter")))
    if task.kind == "qa":
        return build_span_adapter_module(cfg, task, optim, settings)
    if task.kind != "classification":  # before loading anything: the experiment composes, the run stops here
        raise ValueError(f"method adapter trains classification and qa tasks; {task.name!r} is {task.kind!r}")
    name = encoder_reference(cfg, settings)
    encoder, tokenizer = build_frozen_encoder(name, settings.layers)
    max_length = int(cfg.data.max_length or task.max_length)
    check_max_length(encoder.model.config, max_length, f"encoder {name}")
    cache_dir = settings.cache_dir or str(Path(cfg.paths.checkpoints) / ".features")
    store = FeatureStore(encoder, tokenizer, task, max_length=max_length, pooling=settings.pooling,
                         cache_dir=cache_dir, batch_size=settings.feature_batch_size)
    adapter = HiddenStateAdapter(AdapterConfig.for_encoder(
        encoder, num_labels=task.num_labels, projection_size=settings.projection_size,
        combination=settings.combination, skip=settings.skip, dropout=settings.dropout, pooling=settings.pooling))
    node = plain(cfg.distill)
    teachers = dcfg = aggregator = None
    if settings.distill:
        dcfg = distill_config(node)
        teachers = build_teachers(select_teachers(node["teachers"], node.get("use_teachers")), task)
        aggregator = aggregator_for(dict(node["aggregator"]), teachers.weights)
        teachers.assign_views(STUDENT, tokenizer)  # names the tokenised views the soft-target store encodes
        check_teacher_lengths(teachers, task, max_length)
    ensemble = None
    if settings.ensemble_with:
        ensemble = build_teachers([{"name": ENSEMBLE_MEMBER, "name_or_path": settings.ensemble_with}], task)
        ensemble.assign_views(STUDENT, tokenizer)
    student = AdapterStudent(adapter, name, encoder.fingerprint(), tokenizer, dict(task.id2label), max_length)
    module = adapter_module(student, task, optim, store, teachers=teachers, distill=dcfg, aggregator=aggregator,
                            ensemble_with=ensemble, ensemble_weight=settings.ensemble_weight,
                            targets_cache_dir=node.get("cache_dir") if node.get("cache", True) else None)
    return module, FeatureViews({STUDENT: tokenizer}, store)


def build_span_adapter_module(cfg: DictConfig, task: TaskSpec, optim: OptimConfig, settings: AdapterSettings
                              ) -> tuple[StageModule, dict[str, PreTrainedTokenizerBase]]:
    """A span adapter on streamed per-token states, trained like a QA fine-tune (its views: the tokenizer)."""
    refused = [k for k, on in (("distill", settings.distill), ("ensemble_with", settings.ensemble_with)) if on]
    if refused:  # before loading anything
        raise ValueError(f"adapter.{refused[0]} is not supported for span (qa) adapters yet: task {task.name!r} "
                         "trains a span adapter on gold answers only")
    name = encoder_reference(cfg, settings)
    encoder, tokenizer = build_frozen_encoder(name, settings.layers)
    # QA windows are cut at model_max_length: keep it within what the encoder embeds (as build_model does)
    tokenizer.model_max_length = min(int(tokenizer.model_max_length), usable_positions(encoder.model.config))
    adapter = HiddenStateAdapter(AdapterConfig.for_encoder(
        encoder, output="spans", projection_size=settings.projection_size, combination=settings.combination,
        skip=settings.skip, dropout=settings.dropout))
    max_length = int(cfg.data.max_length or task.max_length)
    check_max_length(encoder.model.config, max_length, f"encoder {name}")
    student = SpanAdapterStudent(AdapterWithEncoder(encoder, adapter), name, tokenizer, max_length)
    module = span_adapter_module(student, task, optim)
    return module, {STUDENT: tokenizer}
