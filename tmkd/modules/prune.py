"""Block movement pruning while distilling: ``method: prune``.

One run prunes the model it starts from (a fine-tuned teacher-sized model or a student, usually an earlier stage's
``hf/`` via ``init_from``) while it learns the teacher ensemble's soft targets, exactly as ``many_to_one`` does
(same teachers, aggregator, soft-target cache, ``alpha * KD + (1 - alpha) * CE``). Timeline over the run's
``T`` optimizer steps (``F = round(final_finetune_fraction * T)``)::

    0 .. T-F         Pruner schedule over T-F steps: warm-up (density 1), cubic decrease, cool-down (at target)
    T-F .. T         pruner.fill() ("hybrid filled": dead heads out, live heads dense again, structure frozen),
                     then distillation fine-tuning of the surviving weights

Checkpoint selection: a dev score from before the structure is final says nothing about the pruned model, so
until then ``val/<metric>`` is logged as NaN (ModelCheckpoint ranks NaN last) and the real scores go to
``pruning/val/<metric>``; ``best.ckpt`` is therefore always a model with its final structure.

Resuming: the masks are parametrizations, so checkpoint keys are ``...weight.parametrizations.weight.original``
/ ``...scores`` / ``...fixed``. The Pruner is attached in :meth:`setup` (before Lightning restores a checkpoint)
and, after the fill, :meth:`on_load_checkpoint` re-creates the frozen masks so the keys match: a resumed run
continues pruning where it stopped.

Export: :meth:`export_model` is :func:`tmkd.prune.compact` of the masked model: a small dense
``tmkd_pruned_bert`` model without dead heads / FFN units, the masks and scores left behind.

Task kinds: everything kind-specific comes from ``tmkd.data.kinds`` as in the other modules, so extractive QA
(``prune_squad``, ``prune_quick_qa``) prunes a ``BertForQuestionAnswering`` while distilling the teachers' start /
end distributions over the student's windows ([B, 2, S] logits), is scored by the QA evaluator (SQuAD
post-processing + official EM / F1) and exports a ``TmkdPrunedBertForQuestionAnswering``. The report's latency
times the forward pass on one truncated sequence per dev row (QA: one window per question), the same for both models.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor, nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from tmkd.modules.distill import MODULES, ManyToOneModule
from tmkd.prune import DensityReport, Pruner, PruningConfig, compact, heatmap_png

log = logging.getLogger(__name__)

PRUNE = "prune"  # the method name
REPORT_MD = "prune_report.md"
REPORT_JSON = "prune_report.json"
HEATMAP = "heatmap.png"


@dataclass
class PruneSettings:
    """The ``prune`` config node: the :class:`PruningConfig` keys plus what the run adds around them."""

    pruning: PruningConfig = field(default_factory=PruningConfig)
    score_lr: float = 1e-2
    final_finetune_fraction: float = 0.2
    dense_eval: bool = True  # score the dense starting model on dev for the report (one extra dev pass)
    latency: bool = True  # CPU latency of dense vs pruned (tmkd.deploy.latency)
    latency_rows: int = 64
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.final_finetune_fraction < 1.0:
            raise ValueError(f"prune.final_finetune_fraction must be in [0, 1), got {self.final_finetune_fraction}")
        if self.score_lr <= 0:
            raise ValueError(f"prune.score_lr must be positive, got {self.score_lr}")

    @classmethod
    def from_node(cls, node: dict[str, Any], report: dict[str, Any] | None = None) -> PruneSettings:
        """From the ``prune`` node (unknown keys fail loudly) and the run's ``report`` node (latency options)."""
        node = dict(node)
        own = {f.name for f in fields(cls)} - {"pruning", "latency", "latency_rows", "batch_sizes", "threads"}
        pruning_keys = {f.name for f in fields(PruningConfig)} - {"total_steps"}
        unknown = sorted(set(node) - own - pruning_keys)
        if unknown:
            raise ValueError(f"unknown prune keys {unknown}; valid: {sorted(own | pruning_keys)}")
        pruning = PruningConfig(**{k: v for k, v in node.items() if k in pruning_keys})
        report = report or {}
        return cls(pruning=pruning, **{k: v for k, v in node.items() if k in own},
                   latency=bool(report.get("latency", True)), latency_rows=int(report.get("latency_rows", 64)),
                   batch_sizes=tuple(int(b) for b in report.get("batch_sizes", (1, 32))),
                   threads=int(report.get("threads", 1)))


class PruneModule(ManyToOneModule):
    """Many-to-one distillation of a model that is block-movement-pruned during the run (see module docs)."""

    def __init__(self, *args: Any, prune: PruneSettings | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = prune or PruneSettings()
        self.pruner = Pruner(self.model, self.settings.pruning)  # checks block_size against the shapes now
        self._dense: list[nn.Module] = []  # the starting model, for the report (a list: not a submodule)
        self.fill_step: int | None = None
        self.pruned_report: DensityReport | None = None  # at the end of the schedule, before the fill
        self.report: dict[str, Any] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def attach(self) -> None:
        """Keep a copy of the dense model (report), then parametrize the weights. Idempotent."""
        if self.pruner.attached:
            return
        self._dense = [copy.deepcopy(self.model).cpu().eval()]
        self.pruner.attach()

    def setup(self, stage: str) -> None:
        # Before Lightning restores a checkpoint: its keys are those of the parametrized model.
        self.attach()

    def schedule(self, total: int) -> None:
        """Split ``total`` optimizer steps into the pruning schedule and the final fine-tune."""
        final = round(self.settings.final_finetune_fraction * total)
        if self.settings.final_finetune_fraction > 0:
            final = max(final, 1)
        self.pruner.config.total_steps = total - final
        self.pruner.config.phases()  # fail now, not at the first batch, when warm-up + cool-down leave nothing
        self.fill_step = total - final if final else None

    def configure_optimizers(self) -> Any:
        """The base recipe (AdamW, decay / no-decay groups, linear warm-up and decay) plus the scores as their own
        group at ``prune.score_lr`` without weight decay (decay would pull every score toward "undecided")."""
        scores = {id(p) for p in self.pruner.score_parameters()}
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad and id(param) not in scores:
                (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
             {"params": self.pruner.score_parameters(), "lr": self.settings.score_lr, "weight_decay": 0.0}],
            lr=self.optim.lr, eps=self.optim.eps,
        )
        total = int(self.trainer.estimated_stepping_batches)
        self.schedule(total)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.optim.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def structure_final(self) -> bool:
        """True once the masks will not change any more (filled, or past the schedule without a fill)."""
        if self.pruner.filled:
            return True
        if self.fill_step is not None or not self.pruner.config.total_steps:
            return False
        total, _, cooldown = self.pruner.config.phases()
        return self.global_step >= total - cooldown

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        if self.fill_step is not None and step >= self.fill_step and not self.pruner.filled:
            self.pruned_report = self.pruner.density_report()
            self.pruner.fill()
            log.info("prune: filled at step %d (overall density %.4f before the fill, %.4f after)", step,
                     self.pruned_report.overall, self.pruner.density_report().overall)
        state = self.pruner.step(step)
        self.log_dict({f"prune/{k}": float(v) for k, v in state.items()}, on_step=True, on_epoch=False)

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        loss, parts = super().training_loss(batch)
        if self.pruner.config.method == "sigmoid" and not self.pruner.filled:
            reg = self.pruner.regularization_loss()
            loss = loss + reg
            parts["prune_reg"] = reg.detach()
        return loss, parts

    def on_validation_epoch_end(self) -> None:
        fitting = self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking
        if not fitting or self.structure_final():
            super().on_validation_epoch_end()
        else:  # scores of a model still being pruned: logged, but never a checkpoint's reason to be kept
            datamodule = getattr(self.trainer, "datamodule", None)
            for split, evaluator in zip(self.task.eval_splits, self.val_metrics, strict=True):
                prefix = self.task.split_prefix(split)
                for name, value in evaluator.compute(datamodule, split).items():
                    self.log_score(f"pruning/{prefix}/{name}", float(value))
                evaluator.reset()
            self.log_score(f"val/{self.task.main_metric}", float("nan"), prog_bar=True)  # as the base logs it
        if self.pruner.attached:
            for key, value in self.pruner.density_report().flat("prune/").items():
                self.log_score(key, float(value))

    # --- checkpoints -------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["tmkd_prune"] = {"filled": self.pruner.filled, "fill_step": self.fill_step,
                                    "pruned_report": self.pruned_report.as_dict() if self.pruned_report else None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make this module's keys those of the checkpoint: attached, and filled (frozen masks) if it was."""
        super().on_load_checkpoint(checkpoint)
        self.attach()
        saved = checkpoint.get("tmkd_prune") or {}
        if saved.get("filled") and not self.pruner.filled:
            self.pruner.fill()  # creates the `fixed` buffers; the state dict then overwrites them
        if saved.get("pruned_report"):
            self.pruned_report = DensityReport.from_dict(saved["pruned_report"])

    # --- export and report -------------------------------------------------------------------------
    def export_model(self) -> PreTrainedModel:
        """The compacted dense model (dead heads and FFN units removed); this module stays attached."""
        model = compact(self.model)
        return model.eval()

    def extra_metrics(self) -> dict[str, Any]:
        """Distillation facts plus the pruning report; also writes it to the run folder (rank 0) and to W&B.

        Called by ``tmkd.pipeline.train.run`` once the best checkpoint is loaded and was the last model validated
        (re-validated, or validated last in training), which is why the report is made here: the dev metric in
        ``trainer.callback_metrics`` is then the exported model's.
        """
        facts = super().extra_metrics()
        if self.report is None:
            self.report = self.build_report()
            if self.trainer.is_global_zero:
                self.write_report(Path(self.trainer.default_root_dir))
        return {**facts, "prune": self.report}

    @torch.no_grad()
    def dense_scores(self) -> dict[str, float]:
        """The dense starting model's scores on the first eval split (same evaluator as the run's)."""
        dm = self.trainer.datamodule
        loaders = dm.val_dataloader()
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        split = self.task.eval_splits[0]
        dense = self._dense[0].to(self.device)
        evaluator = self.kind.evaluator(self.task).to(self.device)
        try:
            for batch in loader:
                batch = self.transfer_batch_to_device(batch, self.device, 0)
                inputs = batch["inputs"][self.view]
                evaluator.update(self.kind.from_output(dense(**inputs), inputs), batch)
            scores = evaluator.compute(dm, split)
        finally:
            dense.cpu()
        return {f"{self.task.split_prefix(split)}/{k}": float(v) for k, v in scores.items()}

    def build_report(self) -> dict[str, Any]:
        """Densities, heads kept, sizes, dev metrics and CPU latency of the pruned model vs the dense one.

        ``metric`` / ``value`` are the task's main metric (what checkpoints are ranked by); ``metrics`` / ``scores``
        are all the task's metrics on the first eval split (QA: EM and F1), from the same evaluator for both models.
        """
        prefix = self.task.split_prefix(self.task.eval_splits[0])
        key = f"{prefix}/{self.task.main_metric}"
        keys = [f"{prefix}/{m}" for m in dict.fromkeys((self.task.main_metric, *self.task.metrics))]
        final = self.pruner.density_report()
        small = self.export_model().cpu()
        dense = self._dense[0] if self._dense else None
        pruned_scores = {k: _metric(self.trainer.callback_metrics.get(k)) for k in keys}
        report: dict[str, Any] = {
            "method": self.pruner.config.method, "block_size": self.pruner.config.block_size,
            "target": {"attention": self.pruner.config.attention_target, "ffn": self.pruner.config.ffn_target},
            "final_finetune_fraction": self.settings.final_finetune_fraction, "fill_step": self.fill_step,
            "density": final.as_dict(),
            "density_before_fill": self.pruned_report.as_dict() if self.pruned_report else None,
            "task": self.task.name, "kind": self.task.kind, "metric": key, "metrics": keys,
            "pruned": {"value": pruned_scores[key], "scores": pruned_scores, **_sizes(small)},
            "dense": {"value": None, "scores": {k: None for k in keys},
                      **(_sizes(dense) if dense is not None else {})},
        }
        if dense is not None and self.settings.dense_eval:
            scores = self.dense_scores()
            report["dense"]["scores"] = {k: scores.get(k) for k in keys}
            report["dense"]["value"] = scores.get(key)
        report["encoder_weights_kept"] = final.overall
        if self.settings.latency and dense is not None:
            report["latency"] = self.measure_latency(dense, small)
        return report

    def measure_latency(self, dense: nn.Module, small: nn.Module) -> dict[str, Any]:
        """One harness (tmkd.deploy.latency), same texts and threads, for both; speed-up = dense / pruned."""
        from tmkd.deploy.latency import torch_latency

        dm = self.trainer.datamodule
        raw = dm.raw[self.task.eval_splits[0]]
        rows = min(self.settings.latency_rows, len(raw))
        texts = list(zip(*(raw[c][:rows] for c in self.task.text_columns), strict=True))
        tokenizer = dm.tokenizers[self.view]
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

    def write_report(self, out_dir: Path) -> None:
        """``prune_report.json``, ``prune_report.md`` and ``heatmap.png`` in the run folder; W&B gets them too."""
        assert self.report is not None
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / REPORT_JSON).write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        heatmap = None
        try:
            heatmap = heatmap_png(self.report["density"], out_dir / HEATMAP)
        except ImportError:  # matplotlib is optional
            log.warning("prune: matplotlib missing, no %s", HEATMAP)
        (out_dir / REPORT_MD).write_text(report_markdown(self.report, heatmap is not None))
        for lg in self.loggers:
            if isinstance(lg, WandbLogger):
                import wandb

                payload: dict[str, Any] = {f"prune/final/{k.removeprefix('prune/')}": v
                                           for k, v in DensityReport.from_dict(self.report["density"]).flat().items()}
                for b, s in (self.report.get("latency") or {}).get("speedup", {}).items():
                    payload[f"prune/final/speedup_b{b}"] = s
                columns = ["layer", "attention_density", "heads_kept", "ffn_density"]
                rows = [[d[c] for c in columns] for d in self.report["density"]["layers"]]
                payload["prune/report"] = wandb.Table(columns=columns, data=rows)
                if heatmap is not None:
                    payload["prune/heatmap"] = wandb.Image(str(heatmap))
                lg.experiment.log(payload)


def _metric(value: Any) -> float | None:
    return float(value) if value is not None else None


def _sizes(model: nn.Module) -> dict[str, Any]:
    """Parameters, encoder linear weights and safetensors bytes (what ``save_pretrained`` writes)."""
    from tmkd.prune import encoder_layers

    encoder = sum(lin.weight.numel() for layer in encoder_layers(model)
                  for lin in (*layer.attention().values(), layer.intermediate, layer.output))
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors"))
    heads = [layer.num_heads for layer in encoder_layers(model)]
    return {"params": sum(p.numel() for p in model.parameters()), "encoder_linear_weights": encoder,
            "size_bytes": size, "heads": sum(heads)}


def report_markdown(report: dict[str, Any], heatmap: bool = True) -> str:
    """The pruning report as Markdown (per-layer table, totals, dense vs pruned)."""
    density = report["density"]
    lines = [f"# Pruning report ({report['method']}, block {report['block_size']})", "",
             f"Target density: attention {report['target']['attention']:.3f}, FFN {report['target']['ffn']:.3f}; "
             f"final fine-tune fraction {report['final_finetune_fraction']}.", ""]
    before = report.get("density_before_fill")
    if before:
        lines += [f"Encoder linear weights kept at the end of the schedule (before the fill): "
                  f"{before['overall']:.4f}", ""]
    lines += ["| layer | attention density | heads kept | FFN density | FFN units kept |", "|---|---|---|---|---|"]
    for d in density["layers"]:
        lines.append(f"| {d['layer']} | {d['attention_density']:.3f} | {d['heads_kept']}/{d['heads_total']} | "
                     f"{d['ffn_density']:.3f} | {d['ffn_units_kept']}/{d['ffn_units_total']} |")
    dense, pruned = report["dense"], report["pruned"]
    metrics = report.get("metrics") or [report["metric"]]
    lines += ["", f"Encoder linear weights kept (exported model): {density['overall']:.4f}", "",
              "| model | " + " | ".join(metrics) + " | params | encoder linear weights | heads | size (MB) |",
              "|---|" + "---|" * len(metrics) + "---|---|---|---|"]
    for name, row in (("dense (start)", dense), ("pruned (export)", pruned)):
        scores = {**(row.get("scores") or {}), report["metric"]: row.get("value")}
        values = " | ".join(f"{scores[m]:.4f}" if scores.get(m) is not None else "-" for m in metrics)
        size = f"{row['size_bytes'] / 2**20:.2f}" if row.get("size_bytes") else "-"
        lines.append(f"| {name} | {values} | {row.get('params', '-')} | {row.get('encoder_linear_weights', '-')} | "
                     f"{row.get('heads', '-')} | {size} |")
    latency = report.get("latency")
    if latency:
        env = latency["pruned"]["env"]
        inputs = latency.get("inputs")
        what = (f"{env['rows']} dev rows" if not inputs else
                f"the first {inputs['rows']} {inputs['split']} rows, one sequence of ({', '.join(inputs['columns'])}) "
                f"per row truncated to {inputs['max_length']} tokens, forward pass only")
        lines += ["", f"CPU latency ({env['threads']} thread(s), {env['cpu']}, torch {env['torch']}; {what}):", "",
                  "| batch | dense ms | pruned ms | speed-up |", "|---|---|---|---|"]
        for b, s in latency["speedup"].items():
            lines.append(f"| {b} | {latency['dense']['batches'][b]['ms_per_batch']:.2f} | "
                         f"{latency['pruned']['batches'][b]['ms_per_batch']:.2f} | {s:.2f}x |")
    if heatmap:
        lines += ["", f"![heads and FFN kept per layer]({HEATMAP})"]
    return "\n".join(lines) + "\n"


def settings_dict(settings: PruneSettings) -> dict[str, Any]:
    """JSON-able view of the settings (for logs and tests)."""
    return asdict(settings)


MODULES[PRUNE] = PruneModule

__all__ = ["PruneModule", "PruneSettings", "report_markdown", "settings_dict"]
