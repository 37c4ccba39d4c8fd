"""``method: adapter``: a BERTVision hidden-state adapter trained as a *student* of the one training module.

An adapter is a student like any other (:class:`tmkd.modules.base.StageModule` trains it, with the same objective,
teacher source and metrics); only its inputs differ. The frozen encoder (``adapter.encoder``, else
``model.name_or_path``: a hub id, HF folder or tmkd run folder such as a fine-tuned teacher) runs once per split,
before ``trainer.fit`` (:class:`~tmkd.features.datamodule.FeatureDataModule`, cached on disk by
:class:`tmkd.features.FeatureStore`), and batches carry the features as the student's ``inputs``
(:class:`tmkd.models.adapter_student.AdapterStudent`). Gold CE, or with ``adapter.distill: true``
``alpha * KD + (1 - alpha) * CE`` against the aggregated soft targets of ``distill.teachers`` served by the usual
:class:`~tmkd.modules.teachers.TeacherSource` (always precomputed, by ``row_id``: batches carry no text to run the
teachers on).

What an adapter adds is two callbacks (the module's ``extras``): :class:`AdapterFacts` (metrics.json's ``adapter``
entry: encoder, layers, trainable size, learned layer mix; the feature pass's counters) and :class:`EnsembleWith`
(``adapter.ensemble_with`` names a fine-tuned model whose dev logits, through the soft-target cache, are averaged
with the adapter's, :func:`tmkd.models.adapter.ensemble_logits`, ``adapter.ensemble_weight`` = the adapter's share;
metrics.json reports the adapter alone, the model alone and the ensemble).

Span (QA) tasks train a ``output="spans"`` adapter as a QA student instead
(:class:`tmkd.models.adapter_student.SpanAdapterStudent`): per-token states are not cached (see
:mod:`tmkd.features.cache`) but streamed from the frozen encoder every step under ``no_grad``, so batches, windows,
loss, EM/F1 and ``predictions.json`` are the QA fine-tune's. ``adapter.distill`` and ``adapter.ensemble_with`` are
classification-only for now.

Export: ``<run>/hf`` holds :func:`tmkd.models.adapter.save_adapter`'s files (the adapter, its config naming the
frozen encoder and its fingerprint, the tokenizer). It is a **tmkd predictor**, not a transformers model:
``AdapterClassifier.from_pretrained(<run>/hf)`` runs encoder + adapter and returns what the text-classification
pipeline returns; ``transformers.pipeline`` has no task for it (see :mod:`tmkd.models.adapter` for why). A span
adapter's export loads as a QA teacher (:func:`tmkd.models.adapter_teacher.load_adapter_teacher`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tmkd.data.datamodule import STUDENT
from tmkd.data.tasks import TaskSpec
from tmkd.distill.aggregators import Aggregator
from tmkd.distill.ensemble import TeacherEnsemble
from tmkd.distill.objective import gold_objective, objective_from_distill
from tmkd.distill.targets import SoftTargetStore
from tmkd.features import FeatureStore, FrozenEncoder
from tmkd.features.datamodule import FeatureDataModule
from tmkd.models.adapter import HiddenStateAdapter, ensemble_logits, load_encoder
from tmkd.models.adapter_student import AdapterStudent, SpanAdapterStudent
from tmkd.models.build import resolve_path
from tmkd.modules.base import OptimConfig, StageModule, require_labels
from tmkd.modules.distill import DistillConfig
from tmkd.modules.teachers import TeacherSource

ADAPTER = "adapter"
ENSEMBLE_MEMBER = "ensemble_with"  # the fine-tuned model's name in its one-member TeacherEnsemble


@dataclass
class AdapterSettings:
    """The ``adapter`` config node (configs/adapter/default.yaml)."""

    encoder: str | None = None
    layers: list[int] | None = None
    pooling: str = "cls"
    projection_size: int = 128
    combination: str = "softmax"
    skip: bool = True
    dropout: float = 0.1
    distill: bool = False
    ensemble_with: str | None = None
    ensemble_weight: float = 0.5
    cache_dir: str | None = None
    feature_batch_size: int = 64

    def __post_init__(self) -> None:
        if not 0.0 <= self.ensemble_weight <= 1.0:
            raise ValueError(f"adapter.ensemble_weight must be in [0, 1], got {self.ensemble_weight}")
        if self.feature_batch_size <= 0:
            raise ValueError(f"adapter.feature_batch_size must be positive, got {self.feature_batch_size}")

    @classmethod
    def from_config(cls, node: dict[str, Any] | None) -> AdapterSettings:
        data = dict(node or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown adapter option(s) {unknown}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


class AdapterFacts(pl.Callback):
    """metrics.json's adapter facts: the ``adapter`` entry (:func:`adapter_facts`), the frozen encoder's forward
    passes and, for cached features, the feature pass's time and cache hits."""

    def __init__(self, adapter: HiddenStateAdapter, encoder_name: str, encoder: FrozenEncoder,
                 store: FeatureStore | None = None, **extra: Any) -> None:
        self.adapter = adapter
        self.encoder_name = encoder_name
        self.encoder = encoder
        self.store = store
        self.extra = extra  # e.g. pooling / output, shown in the ``adapter`` entry

    def facts(self, pl_module: pl.LightningModule) -> dict[str, Any]:
        facts: dict[str, Any] = {"adapter": adapter_facts(self.adapter, self.encoder_name, **self.extra),
                                 "encoder_forward_batches": self.encoder.forward_batches}
        if self.store is not None:
            facts["feature_seconds"] = round(self.store.seconds, 2)
            facts["feature_cache"] = {"hits": self.store.hits, "misses": self.store.misses}
        return facts


class EnsembleWith(pl.Callback):
    """``adapter.ensemble_with``: the dev scores of the adapter, of a fine-tuned model (its logits through the
    soft-target store) and of their weighted mean of logits, per eval split, reported once the best checkpoint is
    loaded. Remembers the datamodule of the fit (feature batches for the adapter, raw splits for the model)."""

    def __init__(self, model: TeacherEnsemble, task: TaskSpec, max_length: int, weight: float,
                 cache_dir: str | None) -> None:
        self.model = model  # a one-member ensemble
        self.task = task
        self.weight = weight
        self.store = SoftTargetStore(model, task, max_length, cache_dir)
        self.datamodule: FeatureDataModule | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.datamodule = trainer.datamodule  # type: ignore[attr-defined]

    @torch.no_grad()
    def adapter_logits(self, module: StageModule, split: str, dm: FeatureDataModule) -> Tensor:
        """The student's logits for every row of ``split`` (row order), from the cached features."""
        was_training = module.model.training
        module.model.eval()
        try:
            out = [module.predict_logits({k: v.to(module.device) for k, v in b["inputs"][module.view].items()})
                   .float().cpu() for b in dm.split_loader(split)]
        finally:
            module.model.train(was_training)
        return torch.cat(out)

    def dev_logits(self, module: StageModule, split: str, datamodule: FeatureDataModule | None = None
                   ) -> dict[str, Tensor]:
        """``adapter``, ``model`` (the fine-tuned ``ensemble_with``) and ``ensemble`` logits for ``split`` (the fit's
        datamodule unless one is given)."""
        dm = datamodule if datamodule is not None else self.datamodule
        if dm is None:
            raise RuntimeError("EnsembleWith has no datamodule: pass one, or call it after trainer.fit")
        self.model.to(module.device)
        try:
            model = self.store.split_logits(dm.raw[split], split, module.device)[:, 0].float().cpu()
        finally:
            self.model.to("cpu")
        adapter = self.adapter_logits(module, split, dm)
        return {"adapter": adapter, "model": model, "ensemble": ensemble_logits(adapter, model, self.weight)}

    def facts(self, pl_module: pl.LightningModule) -> dict[str, Any]:
        module: StageModule = pl_module  # type: ignore[assignment]
        scores: dict[str, Any] = {}
        assert self.datamodule is not None, "EnsembleWith.facts runs after trainer.fit"
        for split in self.task.eval_splits:
            labels = torch.as_tensor(self.datamodule.raw[split][self.task.label_column])
            prefix = self.task.split_prefix(split)
            for who, logits in self.dev_logits(module, split).items():
                evaluator = module.kind.evaluator(self.task)
                evaluator.update(logits, {"labels": labels})
                scores.setdefault(who, {}).update(
                    {f"{prefix}/{k}": v for k, v in evaluator.compute(None, "").items()})
        return {"ensemble": {"with": self.model.teachers[0].source, "weight": self.weight, **scores}}


def adapter_module(student: AdapterStudent, task: TaskSpec, optim: OptimConfig | None, store: FeatureStore, *,
                   teachers: TeacherEnsemble | None = None, distill: DistillConfig | None = None,
                   aggregator: Aggregator | str | dict | None = None, ensemble_with: TeacherEnsemble | None = None,
                   ensemble_weight: float = 0.5, targets_cache_dir: str | None = None) -> StageModule:
    """The training module of a classification adapter on cached features: gold CE, or with ``teachers`` and
    ``distill`` the distillation objective with targets served by ``row_id``; ``ensemble_with``: a one-member
    ensemble to report the adapter + model ensemble with. ``targets_cache_dir``: the soft-target cache of teachers
    and the ensemble model (None: not cached on disk)."""
    if task.kind != "classification":
        raise ValueError(f"an adapter on cached features trains classification tasks; {task.name!r} is "
                         f"{task.kind!r} (span adapters train with span_adapter_module, on streamed states)")
    if (teachers is None) != (distill is None):
        raise ValueError("adapter distillation needs both teachers and a distill config")
    source = None
    objective = gold_objective()
    if distill is not None:
        if distill.hidden_weight > 0:
            raise ValueError(f"distill.hidden.weight={distill.hidden_weight}, but an adapter has no hidden states of "
                             "its own to match (its encoder is frozen): set distill.hidden.weight=0")
        objective = objective_from_distill(alpha=distill.alpha, temperature=distill.temperature, loss=distill.loss,
                                           labelled=True, aggregator=aggregator or "mean")
        # feature batches carry no text to run the teachers on: the train split's targets are always precomputed
        source = TeacherSource(teachers, task, student.max_length, targets_cache_dir,  # type: ignore[arg-type]
                               precompute=True)
    extras: list[pl.Callback] = [AdapterFacts(student.adapter, student.encoder, store.encoder, store,
                                              pooling=student.config.pooling)]
    if ensemble_with is not None:
        extras.append(EnsembleWith(ensemble_with, task, student.max_length, ensemble_weight, targets_cache_dir))
    return StageModule(student, task, optim, STUDENT, objective=objective, teachers=source,  # type: ignore[arg-type]
                       extras=extras)


def span_adapter_module(student: SpanAdapterStudent, task: TaskSpec, optim: OptimConfig | None) -> StageModule:
    """The training module of a span adapter on streamed states: a QA fine-tune of the adapter student."""
    if task.kind != "qa":
        raise ValueError(f"a span adapter trains span (qa) tasks; {task.name!r} is {task.kind!r}")
    require_labels(task, "adapter")
    facts = AdapterFacts(student.adapter, student.encoder_name, student.model.encoder, output="spans")
    return StageModule(student, task, optim, STUDENT, objective=gold_objective(),  # type: ignore[arg-type]
                       extras=[facts])


def adapter_facts(adapter: HiddenStateAdapter, encoder_name: str, **extra: Any) -> dict[str, Any]:
    """metrics.json's ``adapter`` entry: the frozen encoder, the layers read, the trainable size, the learned mix."""
    mix = adapter.layer_weights()
    return {"encoder": encoder_name, **extra, "layers": list(adapter.config.layers),
            "trainable_params": sum(p.numel() for p in adapter.parameters() if p.requires_grad),
            "layer_weights": None if mix is None else [round(float(w), 4) for w in mix.detach()]}


# --- building helpers (tmkd.pipeline.adapter_factory builds the module) ---------------------------------------
def encoder_reference(cfg: DictConfig, settings: AdapterSettings) -> str:
    """The frozen encoder: ``adapter.encoder``, else ``model.name_or_path`` (a plan stage's ``init_from``)."""
    name = settings.encoder or cfg.model.get("name_or_path")
    if not name:
        raise ValueError("method adapter needs a pretrained frozen encoder: set adapter.encoder or "
                         "model.name_or_path (hub id, HF folder or tmkd run folder); a tiny random model has no "
                         "name for the export to refer to")
    return str(name)


def build_frozen_encoder(name: str, layers: list[int] | None) -> tuple[FrozenEncoder, PreTrainedTokenizerBase]:
    """Encoder and tokenizer exactly as :meth:`AdapterClassifier.from_pretrained` loads them (``AutoModel``), so
    the weights fingerprint recorded at export matches the one checked at load."""
    path = resolve_path(name)
    return FrozenEncoder(load_encoder(path), layers=layers), AutoTokenizer.from_pretrained(path)
