"""Block movement pruning while a stage trains: a Lightning callback, so any stage (``prune`` node) prunes.

The callback prunes the module's ``.model`` (the HF model being trained) whatever trains it: fine-tuning,
one-to-one, many-to-one or many-to-many distillation. Timeline over the run's ``T`` optimizer steps
(``F = round(final_finetune_fraction * T)``)::

    0 .. T-F         Pruner schedule over T-F steps: warm-up (density 1), cubic decrease, cool-down (at target)
    T-F .. T         pruner.fill() ("hybrid filled": dead heads out, live heads dense again, structure frozen),
                     then the stage's own training of the surviving weights

What it needs from the module (``tmkd.modules.base``): ``.model``, ``export_model()``, ``log_score`` and three
hooks the module asks its trainer's callbacks for: :meth:`param_groups` (the scores at ``prune.score_lr``, no
weight decay), :meth:`loss_terms` (soft movement's penalty, :class:`PruneRegularization`) and
:meth:`provisional_prefix` (checkpoint selection, below).

Checkpoint selection: a dev score from before the structure is final says nothing about the pruned model, so
until then the module logs its scores under ``pruning/`` and ``val/<metric>`` as NaN (ModelCheckpoint ranks NaN
last); ``best.ckpt`` is therefore always a model with its final structure.

Resuming: the masks are parametrizations, so checkpoint keys are ``...weight.parametrizations.weight.original``
/ ``...scores`` / ``...fixed``. The Pruner is attached in :meth:`setup` (before Lightning restores a checkpoint),
and a state dict that holds filled (``fixed``) masks fills the pruner before it loads (a load-state-dict pre-hook),
so the keys match and a resumed run continues pruning where it stopped.

Export: ``module.export_model()`` is wrapped to return :func:`tmkd.prune.compact` of what it returned (for
many-to-many: the folded heads): a small dense ``tmkd_pruned_bert`` model without dead heads / FFN units.

Report: :meth:`run_metrics` (asked by ``tmkd.pipeline.train.run`` once the best checkpoint is loaded and was the
last model validated) builds the pruning report, writes it to the run folder and W&B (:mod:`tmkd.prune.report`)
and returns it for metrics.json. Task kinds come from ``tmkd.data.kinds``, so extractive QA prunes a
``BertForQuestionAnswering`` and is scored by the QA evaluator; the latency times the forward pass on one truncated
sequence per dev row (QA: one window per question), the same for both models.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn
from transformers import PreTrainedModel

from tmkd.data.datamodule import STUDENT
from tmkd.data.kinds import get_kind
from tmkd.data.tasks import TaskSpec
from tmkd.deploy.latency import torch_latency
from tmkd.prune.compact import compact
from tmkd.prune.config import PruneSettings
from tmkd.prune.pruner import DensityReport, Pruner
from tmkd.prune.regularizer import PruneRegularization
from tmkd.prune.report import model_sizes, write_report

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "tmkd_prune"  # the callback's state in a checkpoint (filled?, fill step, density before the fill)
PROVISIONAL = "pruning"  # the prefix of dev scores logged while the structure still changes


class PruneCallback(pl.Callback):
    """Prunes ``pl_module.model`` during ``trainer.fit`` as ``settings`` say (see module docs)."""

    def __init__(self, settings: PruneSettings, task: TaskSpec) -> None:
        self.settings = settings
        self.task = task
        self.kind = get_kind(task.kind)
        self.pruner: Pruner | None = None
        self.regularization: PruneRegularization | None = None
        self.dense: nn.Module | None = None  # the starting model, for the report
        self.fill_step: int | None = None
        self.pruned_report: DensityReport | None = None  # at the end of the schedule, before the fill
        self.report: dict[str, Any] | None = None

    # --- binding to the module ---------------------------------------------------------------------
    def bind(self, pl_module: pl.LightningModule) -> Pruner:
        """The Pruner of ``pl_module.model`` (made on the first call: checks block_size against the shapes)."""
        model = getattr(pl_module, "model", None)
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"prune needs a transformer to prune: {type(pl_module).__name__}.model is "
                            f"{type(model).__name__} (method=adapter trains an adapter on a frozen encoder, which "
                            "has no weights to prune)")
        if self.pruner is None:
            self.pruner = Pruner(model, self.settings.pruning)
            self.regularization = PruneRegularization(self.pruner)
        elif self.pruner.model is not model:
            raise RuntimeError("this PruneCallback prunes another model; make one callback per module")
        return self.pruner

    def attach(self, pl_module: pl.LightningModule) -> Pruner:
        """Keep a copy of the dense model (report), parametrize the weights, wrap the export. Idempotent."""
        pruner = self.bind(pl_module)
        if pruner.attached:
            return pruner
        self.dense = copy.deepcopy(pruner.model).cpu().eval()
        pruner.attach()
        pruner.model.register_load_state_dict_pre_hook(self._fill_before_loading_filled)
        export = pl_module.export_model

        def export_model() -> PreTrainedModel:
            """The compacted dense model (dead heads and FFN units removed); the module stays attached."""
            return compact(export()).eval()

        # An instance attribute on purpose: it composes with whatever export the module does first (many-to-many
        # folds its heads into the classifier) and holds for every caller of ``module.export_model()``.
        pl_module.export_model = export_model
        return pruner

    def _fill_before_loading_filled(self, module: nn.Module, state_dict: dict[str, Any], prefix: str,
                                    *args: Any) -> None:
        """A state dict with filled masks (``...fixed`` buffers) needs them to exist here before it loads."""
        assert self.pruner is not None
        if not self.pruner.filled and any(k.startswith(prefix) and k.endswith(".fixed") for k in state_dict):
            self.pruner.fill()  # creates the `fixed` buffers; the state dict then overwrites them

    # --- schedule ----------------------------------------------------------------------------------
    def schedule(self, total: int) -> None:
        """Split ``total`` optimizer steps into the pruning schedule and the final fine-tune."""
        assert self.pruner is not None
        final = round(self.settings.final_finetune_fraction * total)
        if self.settings.final_finetune_fraction > 0:
            final = max(final, 1)
        self.pruner.config.total_steps = total - final
        self.pruner.config.phases()  # fail now, not at the first batch, when warm-up + cool-down leave nothing
        self.fill_step = total - final if final else None

    def structure_final(self, step: int) -> bool:
        """True once the masks will not change any more (filled, or past the schedule without a fill)."""
        assert self.pruner is not None
        if self.pruner.filled:
            return True
        if self.fill_step is not None or not self.pruner.config.total_steps:
            return False
        total, _, cooldown = self.pruner.config.phases()
        return step >= total - cooldown

    # --- what the module asks its callbacks for --------------------------------------------------------
    def param_groups(self, pl_module: pl.LightningModule) -> list[dict[str, Any]]:
        """The scores as their own optimizer group at ``prune.score_lr``, without weight decay (decay would pull
        every score toward "undecided")."""
        pruner = self.attach(pl_module)
        return [{"params": pruner.score_parameters(), "lr": self.settings.score_lr, "weight_decay": 0.0}]

    def loss_terms(self, pl_module: pl.LightningModule) -> dict[str, PruneRegularization]:
        """Soft movement's penalty while it applies (``prune.mask=sigmoid``, before the fill)."""
        term = self.regularization
        return {term.name: term} if term is not None and term.active else {}

    def provisional_prefix(self, pl_module: pl.LightningModule) -> str | None:
        """``pruning`` while fitting a model whose structure still changes: its dev scores are logged under that
        prefix and never rank a checkpoint; ``None`` otherwise."""
        trainer = pl_module.trainer
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        return PROVISIONAL if fitting and not self.structure_final(trainer.global_step) else None

    # --- Lightning hooks ---------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.attach(pl_module)  # before Lightning restores a checkpoint: its keys are the parametrized model's

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.schedule(int(trainer.estimated_stepping_batches))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        assert self.pruner is not None
        step = trainer.global_step
        if self.fill_step is not None and step >= self.fill_step and not self.pruner.filled:
            self.pruned_report = self.pruner.density_report()
            self.pruner.fill()
            log.info("prune: filled at step %d (overall density %.4f before the fill, %.4f after)", step,
                     self.pruned_report.overall, self.pruner.density_report().overall)
        state = self.pruner.step(step)
        pl_module.log_dict({f"prune/{k}": float(v) for k, v in state.items()}, on_step=True, on_epoch=False)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is not None and self.pruner.attached:
            for key, value in self.pruner.density_report().flat("prune/").items():
                pl_module.log_score(key, float(value))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        assert self.pruner is not None
        checkpoint[CHECKPOINT_KEY] = {"filled": self.pruner.filled, "fill_step": self.fill_step,
                                      "pruned_report": self.pruned_report.as_dict() if self.pruned_report else None}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY) or {}
        if saved.get("pruned_report"):
            self.pruned_report = DensityReport.from_dict(saved["pruned_report"])
        self.fill_step = saved.get("fill_step", self.fill_step)

    # --- the report --------------------------------------------------------------------------------
    def run_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """``{"prune": report}`` for metrics.json; the report also goes to the run folder (rank 0) and W&B.

        Asked once the best checkpoint is loaded and was the last model validated: the dev metrics in
        ``trainer.callback_metrics`` are then the exported model's.
        """
        if self.report is None:
            self.report = self.build_report(trainer, pl_module)
            if trainer.is_global_zero:
                write_report(self.report, Path(trainer.default_root_dir), trainer.loggers)
        return {"prune": self.report}

    def build_report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Densities, heads kept, sizes, dev metrics and CPU latency of the pruned model vs the dense one.

        ``metric`` / ``value`` are the task's main metric (what checkpoints are ranked by); ``metrics`` / ``scores``
        are all the task's metrics on the first eval split (QA: EM and F1), from the same evaluator for both models.
        """
        assert self.pruner is not None
        task, config = self.task, self.pruner.config
        prefix = task.split_prefix(task.eval_splits[0])
        key = f"{prefix}/{task.main_metric}"
        keys = [f"{prefix}/{m}" for m in dict.fromkeys((task.main_metric, *task.metrics))]
        final = self.pruner.density_report()
        small = pl_module.export_model().cpu()
        dense = self.dense
        pruned_scores = {k: _metric(trainer.callback_metrics.get(k)) for k in keys}
        report: dict[str, Any] = {
            "mask": config.mask, "block_size": config.block_size,
            "target": {"attention": config.attention_target, "ffn": config.ffn_target},
            "final_finetune_fraction": self.settings.final_finetune_fraction, "fill_step": self.fill_step,
            "density": final.as_dict(),
            "density_before_fill": self.pruned_report.as_dict() if self.pruned_report else None,
            "task": task.name, "kind": task.kind, "metric": key, "metrics": keys,
            "pruned": {"value": pruned_scores[key], "scores": pruned_scores, **model_sizes(small)},
            "dense": {"value": None, "scores": {k: None for k in keys},
                      **(model_sizes(dense) if dense is not None else {})},
        }
        if dense is not None and self.settings.dense_eval:
            scores = self.dense_scores(trainer, pl_module, dense)
            report["dense"]["scores"] = {k: scores.get(k) for k in keys}
            report["dense"]["value"] = scores.get(key)
        report["encoder_weights_kept"] = final.overall
        if self.settings.latency and dense is not None:
            report["latency"] = self.measure_latency(trainer, dense, small)
        return report

    @torch.no_grad()
    def dense_scores(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dense: nn.Module
                     ) -> dict[str, float]:
        """The dense starting model's scores on the first eval split (same evaluator as the run's)."""
        dm = trainer.datamodule
        loaders = dm.val_dataloader()
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        split = self.task.eval_splits[0]
        device = pl_module.device
        dense = dense.to(device)
        evaluator = self.kind.evaluator(self.task).to(device)
        try:
            for batch in loader:
                batch = pl_module.transfer_batch_to_device(batch, device, 0)
                inputs = batch["inputs"][STUDENT]
                evaluator.update(self.kind.from_output(dense(**inputs), inputs), batch)
            scores = evaluator.compute(dm, split)
        finally:
            dense.cpu()
        return {f"{self.task.split_prefix(split)}/{k}": float(v) for k, v in scores.items()}

    def measure_latency(self, trainer: pl.Trainer, dense: nn.Module, small: nn.Module) -> dict[str, Any]:
        """One harness (tmkd.bench.latency), same texts and threads, for both; speed-up = dense / pruned."""

        dm = trainer.datamodule
        raw = dm.raw[self.task.eval_splits[0]]
        rows = min(self.settings.latency_rows, len(raw))
        texts = list(zip(*(raw[c][:rows] for c in self.task.text_columns), strict=True))
        tokenizer = dm.tokenizers[STUDENT]
        kwargs = {"batch_sizes": self.settings.batch_sizes, "threads": self.settings.threads,
                  "max_length": dm.max_length or self.task.max_length}
        out: dict[str, Any] = {"dense": torch_latency(dense, tokenizer, texts, **kwargs),
                               "pruned": torch_latency(small, tokenizer, texts, **kwargs)}
        # What is timed: the model's forward on one tokenised sequence per dev row (for QA: the (question, context)
        # pair cut to max_length, i.e. one window per question, start/end logits out; no window striding and no
        # answer decoding, which cost the same for both models).
        out["inputs"] = {"split": self.task.eval_splits[0], "rows": rows, "columns": list(self.task.text_columns),
                         "max_length": kwargs["max_length"], "per_row": "one sequence (truncated), forward only"}
        out["speedup"] = {b: out["dense"]["batches"][b]["ms_per_batch"] / out["pruned"]["batches"][b]["ms_per_batch"]
                          for b in out["pruned"]["batches"]}
        return out


def _metric(value: Any) -> float | None:
    return float(value) if value is not None else None
