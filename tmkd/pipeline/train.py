"""One run end to end: build, fit, keep the best checkpoint, evaluate it, export it, write metrics."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger

from tmkd.pipeline.export import export_hf, write_json
from tmkd.pipeline.factory import build_datamodule, build_module, build_task, plain
from tmkd.pipeline.loggers import build_loggers

log = logging.getLogger(__name__)


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``trainer`` node as Trainer kwargs; precision ``null`` means bf16-mixed on GPU, fp32 on CPU."""
    kwargs = {k: v for k, v in plain(cfg.trainer).items() if v is not None}
    if "precision" not in kwargs:
        on_gpu = torch.cuda.is_available() and kwargs.get("accelerator", "auto") in ("auto", "gpu", "cuda")
        kwargs["precision"] = "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"
    return kwargs


def run(cfg: DictConfig) -> float:
    """Train as configured and return ``cfg.optimized_metric`` of the best checkpoint (for searches)."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True)

    task = build_task(cfg)
    module, tokenizers = build_module(cfg, task)
    datamodule = build_datamodule(cfg, task, tokenizers)
    main_key = f"val/{task.main_metric}"
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=main_key, mode="max",
                                 save_top_k=1, save_weights_only=cfg.checkpoint.save_weights_only)
    loggers = build_loggers(cfg.logger, out, cfg.run_name, plain(cfg))
    callbacks: list[pl.Callback] = [checkpoint]
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = pl.Trainer(**trainer_kwargs(cfg), logger=loggers or False, callbacks=callbacks,
                         default_root_dir=str(out))

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - started
    if not checkpoint.best_model_path:
        raise RuntimeError(f"no checkpoint was written (was {main_key} ever logged?); see {out}")
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    evaluated = {k: float(v) for r in results for k, v in r.items() if "_best" not in k}

    metrics: dict[str, Any] = {
        "experiment": cfg.experiment_name, "run_name": cfg.run_name, "stage": cfg.stage, "task": task.name,
        "best": evaluated, "best_checkpoint": checkpoint.best_model_path, "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 1), "train_examples": len(datamodule.encoded[task.train_split]),
        "params": sum(p.numel() for p in module.export_model().parameters()),
        **module.extra_metrics(),
    }
    if cfg.checkpoint.export:
        metrics["export"] = str(export_hf(module.export_model(), tokenizers[module.view], out))
    write_json(out / "metrics.json", metrics)
    for lg in loggers:
        lg.log_metrics({f"best/{k}": v for k, v in evaluated.items()})
        lg.finalize("success")
        if isinstance(lg, WandbLogger):
            lg.experiment.finish()  # else a next run in this process (multirun) would log into this one
    log.info("best %s = %.4f; outputs in %s", main_key, evaluated.get(main_key, float("nan")), out)
    key = cfg.optimized_metric
    if key not in evaluated:
        raise KeyError(f"optimized_metric {key!r} was not logged; logged: {sorted(evaluated)}")
    return evaluated[key]
