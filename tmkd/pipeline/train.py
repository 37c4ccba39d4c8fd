"""One run end to end: build, fit (or resume), keep the best checkpoint, evaluate it, export it, write metrics.

Epochs are reproducible on their own: the data order (see TaskDataModule) and the dropout RNG of epoch
``e`` depend only on the seed and ``e``, so a run resumed from its last checkpoint ends with the same
metrics as one that was never interrupted.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins import CheckpointIO

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


def read_metrics(out: Path) -> dict[str, Any]:
    path = Path(out) / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RuntimeError(f"cannot read {path} ({type(err).__name__}: {err}); running the command again "
                           "redoes that run") from err


def run(cfg: DictConfig, ckpt_path: str | Path | None = None) -> dict[str, Any]:
    """Train as configured (resuming from ``ckpt_path`` if given); returns what metrics.json holds."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.yaml").is_file():
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))

    task = build_task(cfg)
    module, tokenizers = build_module(cfg, task)
    datamodule = build_datamodule(cfg, task, tokenizers)
    main_key = f"val/{task.main_metric}"
    # last.ckpt (full state, every epoch) is what an interrupted run resumes from; best.ckpt is what it keeps.
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=main_key, mode="max",
                                 save_top_k=1, save_last=True, save_weights_only=cfg.checkpoint.save_weights_only)
    loggers = build_loggers(cfg.logger, out, cfg.run_name, plain(cfg), resume=ckpt_path is not None)
    # FiniteChecks: a diverged (NaN/inf) loss or weight stops the run with an error instead of finishing it
    callbacks: list[pl.Callback] = [checkpoint, EpochSeed(cfg.seed),
                                    FiniteChecks(cfg.trainer.get("log_every_n_steps") or 50)]
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
        "fit_seconds": round(fit_seconds, 1), "resumed_from": str(ckpt_path) if ckpt_path else None,
        "train_examples": len(datamodule.encoded[task.train_split]),
        "params": sum(p.numel() for p in module.export_model().parameters()),
        "data": data_provenance(cfg, datamodule), "world_size": trainer.world_size,
        **module.extra_metrics(),
    }
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
