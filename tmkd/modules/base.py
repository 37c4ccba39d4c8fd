"""The one training LightningModule, composed of parts; plus its optimiser, schedule, per-split metrics and
best-score tracking.

Parts: the student ``model``; the ``objective`` (:class:`tmkd.distill.objective.Objective`, a weighted sum of
terms); optionally the ``teachers`` (:class:`tmkd.modules.teachers.TeacherSource`, a callback that prepares the
soft targets) and the ``heads`` (:class:`tmkd.modules.heads.SingleHead`, or ``TeacherHeads``: one per teacher).
Fine-tuning is this module with no teachers and the gold loss alone (:class:`FineTuneModule`); every distillation
method is this module with teachers and KD terms (:func:`tmkd.modules.distill.distillation_module`). Pruning is a
callback that adds parameter groups (``param_groups(pl_module)``). A student other than an HF model (an adapter on
cached features, :mod:`tmkd.models.adapter_student`) only needs the HF calling shape (``model(**inputs)`` -> an output
with ``.logits``) and, when it is not itself what is exported, an ``export_model()``; what a stage reports beyond
scores comes from ``extras`` (callbacks with ``facts(module)``, e.g. :mod:`tmkd.modules.adapter`'s).
What depends on the task kind (logits layout, gold loss, validation metrics) comes from ``tmkd.data.kinds``:
classification logits are [B, C] scored by torchmetrics; QA logits are [B, 2, S], collected per window over
the epoch, post-processed into answers and scored by the official SQuAD evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from tmkd.data.datamodule import STUDENT
from tmkd.data.kinds import get_kind
from tmkd.data.tasks import TaskSpec
from tmkd.distill.objective import Objective, Step, gold_objective
from tmkd.modules.heads import SingleHead, TeacherHeads
from tmkd.modules.teachers import TeacherSource


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then linear decay to zero (the BERT recipe)."""

    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


class StageModule(pl.LightningModule):
    """The LightningModule of one stage, whatever it trains (a teacher or a student, classification or QA): trains
    ``model`` (the HF model of the task's kind) on ``task`` to minimise ``objective``.

    ``teachers`` serve the teachers' logits to the terms that need them; ``heads`` say how the student's logits are
    formed. ``extras`` are callbacks that travel with the module (handed to the trainer) and add run facts to
    metrics.json through ``facts(module) -> dict``. Without an objective a subclass must override :meth:`training_loss`.
    """

    def __init__(self, model: PreTrainedModel, task: TaskSpec, optim: OptimConfig | None = None,
                 view: str = STUDENT, *, objective: Objective | None = None, teachers: TeacherSource | None = None,
                 heads: SingleHead | TeacherHeads | None = None, extras: Sequence[pl.Callback] = ()) -> None:
        super().__init__()
        self.model = model.train()  # from_pretrained returns eval mode; Lightning keeps modes as found
        self.task = task
        self.optim = optim or OptimConfig()
        self.view = view
        self.kind = get_kind(task.kind)
        self.labelled = task.train_labelled  # False: batches carry no labels
        self.teachers = teachers
        self.extras = list(extras)
        if objective is not None:
            if not task.train_labelled:
                objective.check_label_free(task.name)
            if objective.needs_teachers and teachers is None:
                raise ValueError(f"objective terms {objective.names()} distil from teachers, but none were given")
            # builds what depends on student and teachers (hidden-state projection) before the heads, as the
            # parameters were always created in this order (same initialisation under a seed)
            objective.bind(model, teachers.ensemble if teachers is not None else None)
        self.objective = objective
        self.heads = heads if heads is not None else SingleHead()
        self.val_metrics = nn.ModuleList([self.kind.evaluator(task) for _ in task.eval_splits])
        self.best: dict[str, float] = {}
        # what the last validation epoch logged (``_best`` keys aside) and at which step: when that step's model is
        # the best checkpoint, ``train.run`` reports these scores instead of validating the same weights again
        self.last_scores: dict[str, float] = {}
        self.last_scores_step = -1

    # --- the step: parts composed ---------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective on this batch: teachers' logits first (a cache read, or the teachers' forward), then the
        student's, then each term in order."""
        if self.objective is None:
            raise NotImplementedError(f"{type(self).__name__} has no objective and does not override training_loss")
        inputs = batch["inputs"][self.view]
        labels = batch["labels"] if self.labelled else None  # unlabelled batches have no "labels" at all
        teacher_logits = None
        if self.teachers is not None and self.objective.needs_teachers:
            teacher_logits = self.teachers.logits(batch, self.view)
        logits, out = self.heads.logits(self.model, self.kind, inputs, hidden=self.objective.needs_hidden)
        ensemble = self.teachers.ensemble if self.teachers is not None else None
        step = Step(self.kind, logits, labels, teacher_logits, ensemble,
                    inputs, out, per_head=self.heads.per_head)
        return self.objective(step)

    def predict_logits(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.heads.predict(self.model, self.kind, inputs)

    def configure_callbacks(self) -> list[pl.Callback]:
        """The teacher source prepares the soft targets from the trainer's datamodule at the start of a fit; the
        extras come along."""
        return ([self.teachers] if self.teachers is not None else []) + self.extras

    def extra_metrics(self) -> dict[str, Any]:
        """Run facts for metrics.json beyond the student's scores (with teachers: theirs; then each extra's)."""
        facts = self.teachers.facts() if self.teachers is not None else {}
        for extra in self.extras:
            facts.update(extra.facts(self))  # type: ignore[attr-defined]
        return facts

    def eval_outputs(self) -> dict[str, Any]:
        """Files of the last validation (QA: ``predictions.json``, ``na_probs.json`` of the first eval split;
        other splits get a ``<prefix>_`` file-name prefix)."""
        files: dict[str, Any] = {}
        for i, (split, evaluator) in enumerate(zip(self.task.eval_splits, self.val_metrics, strict=True)):
            pre = "" if i == 0 else self.task.split_prefix(split) + "_"
            files.update({pre + name: obj for name, obj in evaluator.outputs().items()})
        return files

    def eval_predictions(self) -> dict[str, dict[str, Any]]:
        """Per-example predictions of the last validation, per eval split (classification; see
        ``Evaluator.predictions``): ``tmkd.pipeline.train.run`` saves the best checkpoint's."""
        tables = {split: evaluator.predictions() for split, evaluator in zip(self.task.eval_splits, self.val_metrics,
                                                                             strict=True)}
        return {split: table for split, table in tables.items() if table is not None}

    def export_model(self) -> PreTrainedModel:
        """The single model to ``save_pretrained`` (multi-head students fold their heads here; a student that is
        not itself its export, such as a span adapter with its frozen encoder, gives it by ``export_model()``)."""
        model = self.heads.fold(self.model)
        export = getattr(model, "export_model", None)
        return export() if callable(export) else model

    # --- loop ------------------------------------------------------------------------------------
    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.predict_logits(inputs)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, parts = self.training_loss(batch)
        for name, term in self.addon_loss_terms().items():  # e.g. soft movement pruning's penalty
            value = term(self, batch)
            loss = loss + value
            parts[name] = value.detach()
        bs = batch["row_id"].shape[0]  # unlabelled batches carry no labels
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self.predict_logits(batch["inputs"][self.view])
        self.val_metrics[dataloader_idx].update(logits, batch)

    def on_validation_epoch_end(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        provisional = next((p for hook in self.addon_hooks("provisional_prefix") if (p := hook(self))), None)
        for split, evaluator in zip(self.task.eval_splits, self.val_metrics, strict=True):
            prefix = self.task.split_prefix(split)
            for name, value in evaluator.compute(datamodule, split).items():
                value = float(value)
                if provisional:  # not the model the run ends with: logged, never a checkpoint's reason to be kept
                    self.log_score(f"{provisional}/{prefix}/{name}", value)
                    continue
                key = f"{prefix}/{name}"
                self.log_score(key, value, prog_bar=prefix == "val")
                if not self.trainer.sanity_checking and not name.endswith("_thresh"):
                    self.best[key] = max(self.best.get(key, float("-inf")), value)
                    self.log(f"{key}_best", self.best[key])
            evaluator.reset()
        if provisional:  # ModelCheckpoint ranks NaN last
            self.log_score(f"val/{self.task.main_metric}", float("nan"), prog_bar=True)

    def log_score(self, key: str, value: float, **kwargs: Any) -> None:
        """``log`` a validation score and remember it in ``last_scores`` (see ``__init__``)."""
        self.log(key, value, **kwargs)
        if not self.trainer.sanity_checking:
            if self.last_scores_step != self.global_step:
                self.last_scores, self.last_scores_step = {}, self.global_step
            self.last_scores[key] = value

    def configure_optimizers(self) -> Any:
        """AdamW over decay / no-decay groups, plus the groups add-on callbacks offer (pruning: its scores at
        their own lr), whose parameters leave the first two; linear warm-up then decay for every group."""
        extra = [group for hook in self.addon_hooks("param_groups") for group in hook(self)]
        taken = {id(p) for group in extra for p in group["params"]}
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad and id(param) not in taken:
                (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
             *extra],
            lr=self.optim.lr, eps=self.optim.eps,
        )
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.optim.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- add-ons: callbacks that change the optimiser, the loss or checkpoint ranking (tmkd.modules.pruning) ---
    def addon_hooks(self, name: str) -> list[Callable[..., Any]]:
        """Method ``name`` of each callback of this module's trainer that has one. Add-ons offer
        ``param_groups(module) -> list[dict]``, ``loss_terms(module) -> {name: term(module, batch) -> Tensor}`` and
        ``provisional_prefix(module) -> str | None`` (while not None: validation scores are logged under that prefix
        and ``val/<main metric>`` as NaN), so a stage gains pruning without a subclass."""
        callbacks = getattr(self._trainer, "callbacks", None) or []  # none when not attached (or a stand-in)
        return [hook for cb in callbacks if callable(hook := getattr(cb, name, None))]

    def addon_loss_terms(self) -> dict[str, Callable[[Any, dict[str, Any]], Tensor]]:
        return {name: term for hook in self.addon_hooks("loss_terms") for name, term in hook(self).items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tmkd_best"] = dict(self.best)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best = dict(checkpoint.get("tmkd_best", {}))


def require_labels(task: TaskSpec, method: str) -> None:
    """Refuse a method that trains on gold labels when the task's train split is read as unlabelled text."""
    if not task.train_labelled:
        raise ValueError(f"method={method} trains on gold labels, but task {task.name!r} has train_labelled=false "
                         "(its train split is read as unlabelled text): distil from teachers' soft targets only "
                         "(method=many_to_one / one_to_one / many_to_many with distill.alpha=1.0), or set "
                         "task.train_labelled=true if the labels are meant to be used")


class FineTuneModule(StageModule):
    """Plain supervised fine-tuning (teachers and no-KD baselines): the module with the gold loss alone."""

    def __init__(self, model: PreTrainedModel, task: TaskSpec, optim: OptimConfig | None = None,
                 view: str = STUDENT) -> None:
        require_labels(task, "finetune")
        super().__init__(model, task, optim, view, objective=gold_objective())
