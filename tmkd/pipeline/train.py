"""One run end to end: build, fit (or resume), keep the best checkpoint, evaluate it, export it, write metrics.

Epochs are reproducible on their own: the data order (see TaskDataModule) and the dropout RNG of epoch
``e`` depend only on the seed and ``e``, and the training loader restores its position within an epoch
(:class:`tmkd.data.sampling.ResumableLoader`), so a run resumed from its last checkpoint, written at an epoch
end or mid-epoch (:class:`LastCheckpoint`), ends with the same metrics as one that was never interrupted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins import CheckpointIO
from pytorch_lightning.trainer.states import TrainerFn
from transformers import PreTrainedTokenizerBase

from tmkd.data.datamodule import TaskDataModule
from tmkd.data.sampling import ResumableLoader
from tmkd.data.tasks import TaskSpec
from tmkd.features.datamodule import FeatureDataModule
from tmkd.modules.base import StageModule
from tmkd.pipeline.addons import build_addons
from tmkd.pipeline.checks import AtomicCheckpointIO, FiniteChecks, check_weights
from tmkd.pipeline.export import export_hf, write_json
from tmkd.pipeline.factory import build_datamodule, build_module, build_task, plain
from tmkd.pipeline.loggers import build_loggers
from tmkd.pipeline.predictions import write_predictions

log = logging.getLogger(__name__)


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``trainer`` node as Trainer kwargs; precision ``null`` means bf16-mixed on GPU, fp32 on CPU."""
    kwargs = {k: v for k, v in plain(cfg.trainer).items() if v is not None}
    if "precision" not in kwargs:
        on_gpu = torch.cuda.is_available() and kwargs.get("accelerator", "auto") in ("auto", "gpu", "cuda")
        kwargs["precision"] = "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"
    return kwargs


class EpochSeed(pl.Callback):
    """Re-seed torch before every training batch from (seed, epoch, batch): a resumed run draws the same dropout
    masks as an uninterrupted one. Seeding at the epoch start is not enough: on a restart Lightning creates the
    data iterator more than once, and each creation draws from the global RNG."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        torch.manual_seed((self.seed * 1_000_003 + trainer.current_epoch) * 100_003 + batch_idx)


class LoaderPosition(pl.Callback):
    """Hands a checkpoint's training-loader position (:class:`tmkd.data.sampling.ResumableLoader`) to the loader.

    Lightning restores stateful loaders only when it builds the train loader after restoring the loops; our
    modules' ``configure_optimizers`` read ``trainer.estimated_stepping_batches``, which builds it before, so
    Lightning drops the position (Lightning 2.6) and a mid-epoch resume would restart its epoch at batch 0. The
    loader draws its first batch after ``on_train_start``, so loading the position there is in time."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self.states = list(fit_loop.get("state_dict", {}).get("combined_loader", []))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        states, self.states = self.states, []
        if not states:
            return
        loaders = trainer.train_dataloader
        stateful = [dl for dl in (loaders if isinstance(loaders, (list, tuple)) else [loaders])
                    if isinstance(dl, ResumableLoader)]
        if len(stateful) != len(states):
            raise RuntimeError(f"the checkpoint holds {len(states)} training-loader positions, the run has "
                               f"{len(stateful)} resumable loaders")
        for loader, state in zip(stateful, states, strict=True):
            loader.load_state_dict(state)


class FitClock(pl.Callback):
    """Training seconds behind the state a run ends in, summed over its attempts (metrics.json's
    ``fit_seconds_total``; ``fit_seconds`` is the last attempt's alone). Each checkpoint carries the seconds spent to
    reach it, so a run stopped and resumed reports what its kept progress cost; work redone after the last
    checkpoint counts once. A run resumed from a checkpoint without a clock (written by an older tmkd) has no total:
    its earlier time is unknown, and the last attempt alone would undercount it."""

    def __init__(self) -> None:
        self.before = 0.0
        self.loaded = False
        self.started: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def total(self) -> float:
        return self.before + (0.0 if self.started is None else time.perf_counter() - self.started)

    def kept_total(self, resumed: bool) -> float | None:
        """:meth:`total`, or None for a resumed run whose checkpoint carried no clock."""
        return None if resumed and not self.loaded else round(self.total(), 1)

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.total()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before, self.loaded = float(state_dict["seconds"]), True


class LastCheckpoint(ModelCheckpoint):
    """Owns last.ckpt, the full state an interrupted run resumes from: written after every epoch's validation
    (or at the epoch end when the epoch has none), and mid-epoch every ``minutes`` of training
    (``checkpoint.every_minutes``, Lightning's ``train_time_interval``) or every ``steps`` optimizer steps
    (``checkpoint.every_n_steps``, deterministic: for tests), so a process stopped late in a long epoch resumes
    from there.

    A callback of its own beside the one that keeps best.ckpt: Lightning 2.6's ``save_last`` writes last.ckpt only
    when that callback saves a new best (a run that stops improving would resume from its last best epoch), and
    ``train_time_interval`` / ``every_n_train_steps`` replace saving after each validation (they are exclusive with
    ``every_n_epochs``) and would save the monitored best from stale metrics mid-epoch. This one writes only
    last.ckpt (``save_top_k=0``, no monitor, no ``last-v1``), never on an epoch's last batch (the epoch-end save
    follows after validation; a checkpoint between the two would resume past that validation).
    """

    def __init__(self, dirpath: Path, minutes: float | None = None, steps: int | None = None,
                 weights_only: bool = False) -> None:
        if minutes is not None and steps is not None:
            raise ValueError(f"set one of checkpoint.every_minutes ({minutes}) and checkpoint.every_n_steps "
                             f"({steps}), not both")
        if (minutes is not None and minutes <= 0) or (steps is not None and steps <= 0):
            raise ValueError(f"checkpoint.every_minutes / every_n_steps must be positive or null, got {minutes} / "
                             f"{steps}")
        super().__init__(dirpath=dirpath, monitor=None, save_top_k=0, save_last=True, enable_version_counter=False,
                         save_weights_only=weights_only, every_n_train_steps=steps,
                         train_time_interval=timedelta(minutes=minutes) if minutes is not None else None)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_end_due(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_end_due(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @staticmethod
    def _epoch_end_due(trainer: pl.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run


def last_checkpoint(cfg: DictConfig, dirpath: Path) -> LastCheckpoint:
    """last.ckpt as the config asks: mid-epoch every ``checkpoint.every_minutes`` or ``every_n_steps`` too."""
    minutes, steps = cfg.checkpoint.get("every_minutes"), cfg.checkpoint.get("every_n_steps")
    return LastCheckpoint(dirpath, None if minutes is None else float(minutes), None if steps is None else int(steps),
                          cfg.checkpoint.save_weights_only)


def read_metrics(out: Path) -> dict[str, Any]:
    path = Path(out) / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RuntimeError(f"cannot read {path} ({type(err).__name__}: {err}); running the command again "
                           "redoes that run") from err


@dataclass
class Built:
    """The objects of one run, built from its config and not trained yet (what :func:`fit` trains)."""

    task: TaskSpec
    module: StageModule
    tokenizers: dict[str, PreTrainedTokenizerBase]
    addons: list[pl.Callback]
    datamodule: TaskDataModule | FeatureDataModule


def build(cfg: DictConfig, in_memory: Mapping[str, Any] | None = None) -> Built:
    """Seed, then build the run's task, module, add-ons and data (``in_memory`` splits instead of files: the Python
    API). Every check of the builders runs here, before anything trains."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.yaml").is_file():
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))

    task = build_task(cfg)
    module, tokenizers = build_module(cfg, task)
    addons = build_addons(cfg, task, module)  # callbacks such as pruning (the `prune` node), whatever the method
    datamodule = build_datamodule(cfg, task, tokenizers, in_memory)
    return Built(task, module, tokenizers, addons, datamodule)


def run(cfg: DictConfig, ckpt_path: str | Path | None = None) -> dict[str, Any]:
    """Train as configured (resuming from ``ckpt_path`` if given); returns what metrics.json holds."""
    return fit(cfg, build(cfg), ckpt_path)


def fit(cfg: DictConfig, built: Built, ckpt_path: str | Path | None = None) -> dict[str, Any]:
    """Train what :func:`build` made (resuming from ``ckpt_path`` if given): fit, reload the best checkpoint,
    evaluate and export it, write metrics.json; returns what it holds."""
    out = Path(cfg.paths.output_dir)
    task, module, tokenizers, addons, datamodule = (built.task, built.module, built.tokenizers, built.addons,
                                                    built.datamodule)
    main_key = f"val/{task.main_metric}"
    # best.ckpt is what a run keeps; last.ckpt (full state, every epoch and every checkpoint.every_minutes) is
    # what an interrupted run resumes from. Listed in this order, last.ckpt holds the best callback's newest state.
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=main_key, mode="max",
                                 save_top_k=1, save_last=False, save_weights_only=cfg.checkpoint.save_weights_only)
    loggers = build_loggers(cfg.logger, out, cfg.run_name, plain(cfg), resume=ckpt_path is not None)
    # FiniteChecks: a diverged (NaN/inf) loss or weight stops the run with an error instead of finishing it; it
    # comes before LastCheckpoint so that a step it flags is not saved as the resume point first
    clock = FitClock()
    callbacks: list[pl.Callback] = [checkpoint, FiniteChecks(cfg.trainer.get("log_every_n_steps") or 50),
                                    last_checkpoint(cfg, out / "checkpoints"), EpochSeed(cfg.seed), LoaderPosition(),
                                    clock]
    callbacks += addons
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    kwargs = trainer_kwargs(cfg)
    plugins = kwargs.pop("plugins", None) or []
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):  # one's own CheckpointIO (e.g. remote storage) wins
        plugins.append(AtomicCheckpointIO())
    trainer = pl.Trainer(**kwargs, logger=loggers or False, callbacks=callbacks, default_root_dir=str(out),
                         plugins=plugins)

    started = time.perf_counter()
    # Checkpoints load without unpickling code unless the config opts in (checkpoint.allow_pickle=true).
    trusted = bool(cfg.checkpoint.get("allow_pickle", False))
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                weights_only=not trusted)
    fit_seconds = time.perf_counter() - started
    fit_seconds_total = clock.kept_total(resumed=ckpt_path is not None)
    if not checkpoint.best_model_path:
        raise RuntimeError(f"no checkpoint was written (was {main_key} ever logged?); see {out}")
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=not trusted)
    module.load_state_dict(state["state_dict"])
    check_weights(module, f"in the best checkpoint {checkpoint.best_model_path}")
    if state.get("global_step") == trainer.global_step == module.last_scores_step:
        # the best checkpoint is the model validated last, after its final step: same weights, same scores and
        # evaluator outputs, so a second pass over the dev set (minutes on SQuAD) would only repeat them
        evaluated = dict(module.last_scores)
    else:
        results = trainer.validate(module, datamodule=datamodule, verbose=False)
        evaluated = {k: float(v) for r in results for k, v in r.items() if "_best" not in k}

    metrics: dict[str, Any] = {
        "experiment": cfg.experiment_name, "run_name": cfg.run_name, "method": cfg.method, "task": task.name,
        "best": evaluated, "best_checkpoint": checkpoint.best_model_path, "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 1), "fit_seconds_total": fit_seconds_total,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "train_examples": len(datamodule.encoded[task.train_split]),
        "main_metric": main_key,  # the task's: the report leads with it
        "params": sum(p.numel() for p in module.export_model().parameters()),
        "data": data_provenance(cfg, datamodule), "world_size": trainer.world_size,
        **module.extra_metrics(),
    }
    for addon in addons:  # pruning: its report (also written to the run folder), now that the best model is loaded
        if callable(getattr(addon, "run_metrics", None)):
            metrics.update(addon.run_metrics(trainer, module))
    if trainer.is_global_zero:
        for name, obj in module.eval_outputs().items():  # QA: predictions.json, na_probs.json (best checkpoint)
            write_json(out / name, obj)
        # classification: per-example predictions of the same evaluation as ``evaluated`` (before metrics.json)
        if predictions := write_predictions(out, module.eval_predictions(), task.split_prefix):
            metrics["predictions"] = predictions
        if cfg.checkpoint.export:
            metrics["export"] = str(export_hf(module.export_model(), tokenizers[module.view], out))
        write_json(out / "metrics.json", metrics)
    for lg in loggers:
        lg.log_metrics({f"best/{k}": v for k, v in evaluated.items()})
        lg.finalize("success")
        if isinstance(lg, WandbLogger):
            lg.experiment.finish()  # else a next run in this process (multirun) would log into this one
    log.info("best %s = %.4f; outputs in %s", main_key, evaluated.get(main_key, float("nan")), out)
    return metrics


def data_provenance(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """Which data a run saw: source, rows per split, caps, what it was scored on (dev set or held-out part of
    train: ``eval``; for reports and model cards)."""
    d = cfg.data
    if getattr(datamodule, "in_memory", None) is not None:
        source = "in memory (Python API)"
    else:
        source = "synthetic (generated)" if datamodule.task.synthetic is not None else d.dir or "hub"
    return {"source": source, "rows": {s: len(ds) for s, ds in datamodule.encoded.items()},
            "max_train_samples": d.max_train_samples, "max_eval_samples": d.max_eval_samples,
            **(datamodule.eval_facts() if hasattr(datamodule, "eval_facts") else {"eval": "dev"})}


def optimized(metrics: dict[str, Any], key: str) -> float:
    """The metric a search optimises, from a run's metrics."""
    evaluated = metrics["best"]
    if key not in evaluated:
        raise KeyError(f"optimized_metric {key!r} was not logged; logged: {sorted(evaluated)}")
    return float(evaluated[key])
