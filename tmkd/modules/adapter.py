"""``method: adapter``: a BERTVision hidden-state adapter trained on a frozen encoder's cached features.

The frozen encoder (``adapter.encoder``, else ``model.name_or_path``: a hub id, HF folder or tmkd run folder such
as a fine-tuned teacher) runs once per split, before ``trainer.fit``
(:class:`~tmkd.features.datamodule.FeatureDataModule`,
cached on disk by :class:`tmkd.features.FeatureStore`); epochs, resumed runs and later runs only read the cache.
Only the adapter trains: gold CE, or with ``adapter.distill: true`` ``alpha * KD + (1 - alpha) * CE`` against the
aggregated soft targets of ``distill.teachers`` (the distillation objective, store and aggregators; targets
are always precomputed, as batches carry features rather than text). Validation uses StageModule's metrics.

``adapter.ensemble_with`` names a fine-tuned model whose dev logits (through the soft-target cache) are averaged
with the adapter's (:func:`tmkd.models.adapter.ensemble_logits`, ``adapter.ensemble_weight`` = the adapter's
share); metrics.json reports the adapter alone, the model alone and the ensemble.

Span (QA) tasks train a ``output="spans"`` adapter through the fine-tuning path instead (:class:`SpanAdapterModule`):
per-token states are not cached (see :mod:`tmkd.features.cache`) but streamed from the frozen encoder every step
under ``no_grad`` (:meth:`tmkd.features.FrozenEncoder.hidden_states`), and the model the module trains is the QA
teacher wrapper (:class:`tmkd.models.adapter_teacher.AdapterForQuestionAnswering`), so batches, windows, loss,
EM/F1 and ``predictions.json`` are the QA fine-tune's. ``adapter.distill`` and ``adapter.ensemble_with`` are
classification-only for now.

Export: ``<run>/hf`` holds :func:`tmkd.models.adapter.save_adapter`'s files (the adapter, its config naming the
frozen encoder and its fingerprint, the tokenizer). It is a **tmkd predictor**, not a transformers model:
``AdapterClassifier.from_pretrained(<run>/hf)`` runs encoder + adapter and returns what the text-classification
pipeline returns; ``transformers.pipeline`` has no task for it (see :mod:`tmkd.models.adapter` for why). A span
adapter's export loads as a QA teacher (:func:`tmkd.models.adapter_teacher.load_adapter_teacher`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tmkd.data.datamodule import STUDENT
from tmkd.data.tasks import TaskSpec
from tmkd.distill.aggregators import Aggregator
from tmkd.distill.ensemble import TeacherEnsemble
from tmkd.distill.objective import Step, gold_objective, objective_from_distill
from tmkd.distill.targets import SoftTargetStore
from tmkd.features import FeatureStore, FrozenEncoder
from tmkd.features.datamodule import FeatureDataModule
from tmkd.models.adapter import (
    HiddenStateAdapter,
    ensemble_logits,
    load_encoder,
    save_adapter,
)
from tmkd.models.adapter_teacher import AdapterForQuestionAnswering
from tmkd.models.build import resolve_path
from tmkd.modules.base import FineTuneModule, OptimConfig, StageModule
from tmkd.modules.distill import DistillConfig

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


class AdapterExport(nn.Module):
    """What ``train.run`` exports: ``save_pretrained(dir)`` writes :func:`save_adapter`'s files, and its
    parameters are the adapter's alone (the run's trainable parameters, as metrics.json reports them)."""

    def __init__(self, adapter: HiddenStateAdapter, encoder: str, encoder_fingerprint: str,
                 tokenizer: PreTrainedTokenizerBase, id2label: dict[int, str], max_length: int) -> None:
        super().__init__()
        self.adapter = adapter
        self.encoder = encoder
        self.encoder_fingerprint = encoder_fingerprint
        self.tokenizer = tokenizer
        self.id2label = id2label
        self.max_length = max_length

    def save_pretrained(self, out_dir: str | Path) -> Path:
        return save_adapter(self.adapter, self.encoder, out_dir, id2label=self.id2label, max_length=self.max_length,
                            encoder_fingerprint=self.encoder_fingerprint, tokenizer=self.tokenizer)


class AdapterModule(StageModule):
    """Trains a :class:`HiddenStateAdapter` (``self.model``: the checkpoint holds the adapter only) from batches
    of cached features; the frozen encoder, teachers and ensemble model live outside the state dict."""

    def __init__(self, adapter: HiddenStateAdapter, task: TaskSpec, optim: OptimConfig, store: FeatureStore,
                 encoder_name: str, max_length: int, *, teachers: TeacherEnsemble | None = None,
                 distill: DistillConfig | None = None, aggregator: Aggregator | None = None,
                 ensemble_with: TeacherEnsemble | None = None, ensemble_weight: float = 0.5,
                 targets_cache_dir: str | None = None) -> None:
        """``targets_cache_dir``: the soft-target cache of teachers and the ensemble model (None: not cached)."""
        super().__init__(adapter, task, optim, view=STUDENT)  # type: ignore[arg-type]  # an nn.Module, not HF
        if task.kind != "classification":
            raise ValueError(f"AdapterModule trains classification tasks from cached features; {task.name!r} is "
                             f"{task.kind!r} (span adapters train with SpanAdapterModule, on streamed states)")
        if (teachers is None) != (distill is None):
            raise ValueError("adapter distillation needs both teachers and a distill config")
        self.store = store
        self.encoder_name = encoder_name
        self.encoder_fingerprint = store.encoder.fingerprint()
        self.max_length = max_length
        self.kd_teachers = teachers
        self.cfg = distill
        # the distillation objective (alpha * KD + (1 - alpha) * CE), or the gold loss alone; no hidden-state term:
        # the adapter has no hidden states of its own to match
        self.objective = gold_objective() if distill is None else objective_from_distill(
            alpha=distill.alpha, temperature=distill.temperature, loss=distill.loss, labelled=True,
            aggregator=aggregator or "mean")
        self.objective.bind(adapter, teachers)
        self.targets = (SoftTargetStore(teachers, task, max_length, targets_cache_dir)
                        if teachers is not None else None)
        self._train_targets: Tensor | None = None  # [rows, T, C]
        self.teacher_scores: dict[str, dict[str, float]] = {}
        self.ensemble_with = ensemble_with
        self.ensemble_weight = ensemble_weight
        self.ensemble_targets = (SoftTargetStore(ensemble_with, task, max_length, targets_cache_dir)
                                 if ensemble_with is not None else None)

    # --- data ------------------------------------------------------------------------------------
    def predict_logits(self, inputs: dict[str, Tensor]) -> Tensor:
        """``inputs`` is a feature batch (``features`` [B, layers, hidden])."""
        return self.model(inputs["features"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.val_metrics[dataloader_idx].update(self.predict_logits(batch), batch)

    def on_fit_start(self) -> None:
        if self.kd_teachers is None:
            return
        dm = self.trainer.datamodule
        self.kd_teachers.to(self.device, torch.bfloat16 if self.device.type == "cuda" else None)
        assert self.targets is not None
        for split in self.task.eval_splits:  # the teachers' own dev scores, next to the adapter's
            logits = self.targets.split_logits(dm.raw[split], split, self.device)
            prefix = self.task.split_prefix(split)
            for i, name in enumerate(self.kd_teachers.names):
                scores = self.kind.score(self.task, dm, split, logits[:, i])
                self.teacher_scores.setdefault(name, {}).update({f"{prefix}/{k}": v for k, v in scores.items()})
        train = self.task.train_split
        self._train_targets = self.targets.split_logits(dm.raw[train], train, self.device).to(self.device)
        self.kd_teachers.to("cpu")  # targets are in memory now: give the memory back

    # --- loss ------------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.predict_logits(batch)
        teacher_logits = None
        if self.cfg is not None:
            if self._train_targets is None:
                raise RuntimeError("soft targets were not prepared (on_fit_start did not run)")
            teacher_logits = self._train_targets[batch["row_id"].to(self._train_targets.device)].transpose(0, 1)
            teacher_logits = teacher_logits.float()
        return self.objective(Step(self.kind, logits, batch["labels"], teacher_logits))

    # --- evaluation, ensembling, export --------------------------------------------------------------
    def _datamodule(self, datamodule: FeatureDataModule | None) -> FeatureDataModule:
        return datamodule if datamodule is not None else self.trainer.datamodule

    @torch.no_grad()
    def adapter_logits(self, split: str, datamodule: FeatureDataModule | None = None) -> Tensor:
        """The adapter's logits for every row of ``split`` (row order), from the cached features."""
        dm = self._datamodule(datamodule)
        was_training = self.model.training
        self.model.eval()
        try:
            out = [self.model(b["features"].to(self.device)).float().cpu() for b in dm.split_loader(split)]
        finally:
            self.model.train(was_training)
        return torch.cat(out)

    def dev_logits(self, split: str, datamodule: FeatureDataModule | None = None) -> dict[str, Tensor]:
        """``adapter``, ``model`` (the fine-tuned ``ensemble_with``) and ``ensemble`` logits for ``split``
        (the trainer's datamodule unless one is given)."""
        if self.ensemble_targets is None or self.ensemble_with is None:
            raise ValueError("adapter.ensemble_with is not set: there is no model to ensemble with")
        dm = self._datamodule(datamodule)
        self.ensemble_with.to(self.device)
        try:
            model = self.ensemble_targets.split_logits(dm.raw[split], split, self.device)[:, 0].float().cpu()
        finally:
            self.ensemble_with.to("cpu")
        adapter = self.adapter_logits(split, dm)
        return {"adapter": adapter, "model": model,
                "ensemble": ensemble_logits(adapter, model, self.ensemble_weight)}

    def _scores(self, logits: Tensor, labels: Tensor) -> dict[str, float]:
        evaluator = self.kind.evaluator(self.task)
        evaluator.update(logits, {"labels": labels})
        return evaluator.compute(None, "")

    def ensemble_metrics(self) -> dict[str, Any]:
        """Dev metrics of adapter alone, model alone and their weighted mean of logits, per eval split."""
        out: dict[str, Any] = {}
        dm = self.trainer.datamodule
        for split in self.task.eval_splits:
            labels = torch.as_tensor(dm.raw[split][self.task.label_column])
            prefix = self.task.split_prefix(split)
            for who, logits in self.dev_logits(split).items():
                out.setdefault(who, {}).update({f"{prefix}/{k}": v for k, v in self._scores(logits, labels).items()})
        return out

    def extra_metrics(self) -> dict[str, Any]:
        store = self.store
        metrics: dict[str, Any] = {
            "adapter": adapter_facts(self.model, self.encoder_name, pooling=self.model.config.pooling),
            "feature_seconds": round(store.seconds, 2),
            "encoder_forward_batches": store.encoder.forward_batches,
            "feature_cache": {"hits": store.hits, "misses": store.misses},
        }
        if self.kd_teachers is not None and self.targets is not None:
            metrics["teachers"] = {t["name"]: {**t, **self.teacher_scores.get(t["name"], {})}
                                   for t in self.kd_teachers.describe()}
            metrics["soft_target_cache"] = {"hits": self.targets.hits, "misses": self.targets.misses}
            metrics["teacher_forward_batches"] = self.kd_teachers.forward_batches
        if self.ensemble_with is not None:
            metrics["ensemble"] = {"with": self.ensemble_with.teachers[0].source, "weight": self.ensemble_weight,
                                   **self.ensemble_metrics()}
        return metrics

    def export_model(self) -> AdapterExport:  # type: ignore[override]
        return AdapterExport(self.model, self.encoder_name, self.encoder_fingerprint, self.store.tokenizer,
                             dict(self.task.id2label), self.max_length)


class SpanAdapterModule(FineTuneModule):
    """Trains a span adapter on a frozen encoder's per-token states, streamed each step: ``self.model`` is
    :class:`AdapterForQuestionAnswering` (frozen encoder + adapter, HF ``QuestionAnsweringModelOutput``), so the
    QA fine-tune's batches, gold loss, EM/F1 and predictions apply unchanged. The encoder has ``requires_grad``
    off and stays in eval mode (:meth:`FrozenEncoder.train`), so only the adapter reaches the optimiser; its
    states are computed under ``no_grad``. The checkpoint holds the encoder's weights too (as the teacher's
    ``state_dict`` does); the export holds the adapter alone."""

    def __init__(self, model: AdapterForQuestionAnswering, task: TaskSpec, optim: OptimConfig, encoder_name: str,
                 tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        if task.kind != "qa":
            raise ValueError(f"SpanAdapterModule trains span (qa) tasks; {task.name!r} is {task.kind!r}")
        if model.model.adapter.config.output != "spans":
            raise ValueError("SpanAdapterModule needs a spans adapter")
        super().__init__(model, task, optim, view=STUDENT)  # type: ignore[arg-type]  # an nn.Module, not HF
        self.encoder_name = encoder_name
        self.encoder_fingerprint = model.model.encoder.fingerprint()
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def adapter(self) -> HiddenStateAdapter:
        return self.model.model.adapter

    @property
    def encoder(self) -> FrozenEncoder:
        return self.model.model.encoder

    def extra_metrics(self) -> dict[str, Any]:
        return {
            "adapter": adapter_facts(self.adapter, self.encoder_name, output="spans"),
            "encoder_forward_batches": self.encoder.forward_batches,
        }

    def export_model(self) -> AdapterExport:  # type: ignore[override]
        return AdapterExport(self.adapter, self.encoder_name, self.encoder_fingerprint, self.tokenizer, {},
                             self.max_length)


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
