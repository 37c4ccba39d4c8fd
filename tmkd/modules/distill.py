"""Distillation LightningModules: one base, three thin subclasses (1-o-1, m-o-1, m-o-m).

The base owns the teacher ensemble, the soft targets (cached per split, or online), the
``alpha * KD + (1 - alpha) * CE`` objective and the optional hidden-state loss; subclasses only say
how teacher logits become targets and how student heads are formed. On an unlabelled train split
(``task.train_labelled=false``) the objective is the teachers' aggregated soft targets alone: no CE term, no label
read (batches carry none), and :func:`check_label_free` refuses any setting that would need one. Logits follow the
task kind's layout (classification [B, C]; QA [B, 2, S] with teachers' [T, B, 2, S]); aggregators and KD losses
take either. QA teachers always run ahead of training, per student window (cached on disk with ``distill.cache``,
else kept in memory for the run), as a teacher with another tokenizer needs the student's windows re-tokenised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from tmkd.data.datamodule import STUDENT
from tmkd.data.tasks import TaskSpec
from tmkd.distill.aggregators import Aggregator, BestTeacherAggregator, ConfidenceAggregator, build_aggregator
from tmkd.distill.ensemble import TeacherEnsemble
from tmkd.distill.losses import HiddenStateLoss, build_kd_loss, combined_loss
from tmkd.distill.targets import SoftTargetStore
from tmkd.modules.base import ClassifierModule, OptimConfig


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


class DistillModule(ClassifierModule):
    """Shared distillation loop. ``soft_targets`` serves cached per-split teacher logits by ``row_id``."""

    def __init__(self, model: PreTrainedModel, task: TaskSpec, optim: OptimConfig, ensemble: TeacherEnsemble,
                 config: DistillConfig, aggregator: Aggregator | None = None, max_length: int | None = None,
                 view: str = STUDENT) -> None:
        super().__init__(model, task, optim, view)
        self.ensemble = ensemble
        self.cfg = config
        self.aggregator = aggregator or build_aggregator("mean")
        check_label_free(task, config, self.aggregator)
        self.labelled = task.train_labelled  # False: no CE, batches carry no labels
        self.kd_loss = build_kd_loss(config.loss)
        self.store = SoftTargetStore(ensemble, task, max_length or task.max_length,
                                     config.cache_dir if config.cache else None)
        self._train_targets: Tensor | None = None  # [rows, T, C] (QA: [windows, T, 2, S]) when precomputed
        self.precompute = config.cache or self.kind.precompute_targets
        self.teacher_scores: dict[str, dict[str, float]] = {}
        self.hidden_loss: HiddenStateLoss | None = None
        if config.hidden_weight > 0:
            teacher = ensemble.teachers[config.hidden_teacher]
            self.hidden_loss = HiddenStateLoss(model.config.hidden_size, teacher.model.config.hidden_size,
                                               config.hidden_layer_map)

    # --- teachers --------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        dtype = torch.bfloat16 if self.device.type == "cuda" else None
        self.ensemble.to(self.device, dtype)
        if self.precompute and self.trainer.world_size > 1:
            # Under DDP rank 0 computes and writes the soft targets once; the other ranks wait, then read
            # the very same files (cache hits), instead of every rank running every teacher.
            if self.trainer.is_global_zero:
                self._prepare_targets()
            self.trainer.strategy.barrier("tmkd-soft-targets")
            if not self.trainer.is_global_zero:
                self._prepare_targets()
        else:
            self._prepare_targets()

    def _prepare_targets(self) -> None:
        """Teachers' dev scores (the student's metrics, same post-processing), and (precomputed) the whole train
        split's teacher logits."""
        dm = self.trainer.datamodule

        def split_logits(split: str) -> Tensor:
            return self.store.split_logits(dm.raw[split], split, self.device, features=dm.encoded[split],
                                           student_tokenizer=dm.tokenizers[dm.main_view], view=dm.main_view)

        for split in self.task.eval_splits:  # teachers' own scores, reported next to the student's
            logits = split_logits(split)
            prefix = self.task.split_prefix(split)
            for i, name in enumerate(self.ensemble.names):
                scores = self.kind.score(self.task, dm, split, logits[:, i])
                self.teacher_scores.setdefault(name, {}).update({f"{prefix}/{k}": v for k, v in scores.items()})
        if self.precompute:
            self._train_targets = split_logits(self.task.train_split).to(self.device)

    def teacher_logits(self, batch: dict[str, Any]) -> Tensor:
        """[T, B, ...]: precomputed (cache) when available, else by running the teachers on this batch."""
        if self._train_targets is not None:
            targets = self._train_targets[batch["row_id"].to(self._train_targets.device)].transpose(0, 1)
            return self.kind.fit_targets(targets, batch["inputs"][self.view])
        return self.ensemble.logits(batch["inputs"])

    def extra_metrics(self) -> dict[str, Any]:
        stats = [self.store.hits, self.store.misses, self.ensemble.forward_batches]
        per_rank = [stats]
        if self._trainer is not None and self._trainer.world_size > 1 and torch.distributed.is_initialized():
            per_rank = [None] * self._trainer.world_size
            torch.distributed.all_gather_object(per_rank, stats)
        return {"teachers": {t["name"]: {**t, **self.teacher_scores.get(t["name"], {})}
                             for t in self.ensemble.describe()},
                "soft_target_cache": {"hits": self.store.hits, "misses": self.store.misses},
                "teacher_forward_batches": self.ensemble.forward_batches,
                "per_rank": [{"cache_hits": h, "cache_misses": m, "teacher_forward_batches": f}
                             for h, m, f in per_rank]}

    # --- loss --------------------------------------------------------------------------------------
    def student_logits(self, inputs: dict[str, Tensor], hidden: bool) -> tuple[Tensor, Any]:
        """Training-time logits ([B, ...], or [heads, B, ...] for m-o-m) and the raw model output."""
        out = self.model(**inputs, output_hidden_states=hidden)
        return self.kind.from_output(out, inputs), out

    def distill_loss(self, logits: Tensor, teacher_logits: Tensor, labels: Tensor | None
                     ) -> tuple[Tensor, Tensor | None]:
        """(KD loss, CE loss) for this module's way of forming targets; CE is ``None`` without labels."""
        raise NotImplementedError

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        inputs = batch["inputs"][self.view]
        labels = batch["labels"] if self.labelled else None  # unlabelled batches have no "labels" at all
        teacher_logits = self.teacher_logits(batch)
        logits, out = self.student_logits(inputs, hidden=self.hidden_loss is not None)
        kd, ce = self.distill_loss(logits, teacher_logits, labels)
        if ce is None:  # soft targets only (check_label_free made sure alpha is 1)
            loss, parts = kd, {"kd": kd.detach()}
        else:
            loss = combined_loss(kd, ce, self.cfg.alpha)
            parts = {"kd": kd.detach(), "ce": ce.detach()}
        if self.hidden_loss is not None:
            teacher_hidden = self.ensemble.hidden_states(self.cfg.hidden_teacher, inputs)
            hid = self.hidden_loss(out.hidden_states, teacher_hidden, inputs["attention_mask"])
            loss = loss + self.cfg.hidden_weight * hid
            parts["hidden"] = hid.detach()
        return loss, parts


class ManyToOneModule(DistillModule):
    """m-o-1: N teachers -> aggregator -> one soft target -> a single-head student."""

    def distill_loss(self, logits: Tensor, teacher_logits: Tensor, labels: Tensor | None
                     ) -> tuple[Tensor, Tensor | None]:
        target = self.aggregator(teacher_logits, labels, self.cfg.temperature)
        kd = self.kd_loss(logits.float(), target, self.cfg.temperature)
        return kd, None if labels is None else self.kind.gold_loss(logits, labels)


class OneToOneModule(ManyToOneModule):
    """1-o-1: classic Hinton distillation from a single teacher."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(self.ensemble) != 1:
            raise ValueError(f"one_to_one takes exactly one teacher, got {len(self.ensemble)}: "
                             f"{self.ensemble.names} (use many_to_one or many_to_many)")


def find_output_layer(model: PreTrainedModel) -> nn.Linear:
    """The final linear layer (BERT ``classifier``, RoBERTa/MPNet ``classifier.out_proj``, QA ``qa_outputs``)."""
    found = [m for _, m in model.named_modules() if isinstance(m, nn.Linear)
             and m.out_features == model.config.num_labels]
    if not found:
        raise ValueError(f"no output layer with {model.config.num_labels} outputs in {type(model).__name__}")
    return found[-1]


class ManyToManyModule(DistillModule):
    """m-o-m (the TMKD multi-head student): a shared encoder with one output head per teacher.

    Head ``i`` is a copy of the classifier's final linear layer, fed the same features, and learns
    teacher ``i``'s soft targets. The gold-label CE applies to the prediction, which is the *mean of the
    heads' logits*. A mean of linear heads is itself one linear layer (mean weight, mean bias), so the
    export writes that layer into the classifier: the saved model is an ordinary single-head
    classifier that computes exactly what the multi-head student predicted.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        out_layer = find_output_layer(self.model)
        self.heads = nn.ModuleList([nn.Linear(out_layer.in_features, out_layer.out_features)
                                    for _ in range(len(self.ensemble))])
        for head in self.heads:
            head.load_state_dict(out_layer.state_dict())
        out_layer.requires_grad_(False)  # replaced by the heads; rewritten on export
        self._features: Tensor | None = None
        self._per_head = build_aggregator("mean")  # head i follows teacher i alone
        out_layer.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        self._features = args[0]

    def student_logits(self, inputs: dict[str, Tensor], hidden: bool) -> tuple[Tensor, Any]:
        out = self.model(**inputs, output_hidden_states=hidden)
        features, self._features = self._features, None
        return torch.stack([self.kind.from_head(head(features), inputs) for head in self.heads]), out

    def predict_logits(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.student_logits(inputs, hidden=False)[0].mean(0)

    def distill_loss(self, logits: Tensor, teacher_logits: Tensor, labels: Tensor | None
                     ) -> tuple[Tensor, Tensor | None]:
        kd = torch.stack([
            self.kd_loss(logits[i].float(), self._per_head(teacher_logits[i:i + 1], labels, self.cfg.temperature),
                         self.cfg.temperature)
            for i in range(len(self.heads))
        ]).mean()
        return kd, None if labels is None else self.kind.gold_loss(logits.mean(0), labels)

    def export_model(self) -> PreTrainedModel:
        out_layer = find_output_layer(self.model)
        with torch.no_grad():
            out_layer.weight.copy_(torch.stack([h.weight for h in self.heads]).mean(0))
            out_layer.bias.copy_(torch.stack([h.bias for h in self.heads]).mean(0))
        return self.model


MODULES: dict[str, type[DistillModule]] = {
    "one_to_one": OneToOneModule, "many_to_one": ManyToOneModule, "many_to_many": ManyToManyModule,
}

