"""Experiment loggers: W&B by default (offline by itself when there is no API key), CSV, or none."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

log = logging.getLogger(__name__)
KINDS = ("wandb", "csv", "none")


def wandb_has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_offline(requested: bool | None) -> bool:
    """Explicit config wins, then ``WANDB_MODE``; otherwise offline exactly when there is no key."""
    if requested is not None:
        return bool(requested)
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online":
        return False
    return not wandb_has_credentials()


def build_loggers(cfg: Any, save_dir: Path, run_name: str, config: dict[str, Any]) -> list[Logger]:
    """``cfg`` is the ``logger`` config node; ``config`` the resolved run config logged with the run."""
    kind = cfg.get("kind", "wandb")
    if kind not in KINDS:
        raise ValueError(f"unknown logger kind {kind!r}; valid: {list(KINDS)}")
    if kind == "none":
        return []
    if kind == "csv":
        return [CSVLogger(save_dir=str(save_dir), name="csv", version="")]
    offline = wandb_offline(cfg.get("offline"))
    if offline:
        log.info("W&B: no API key found (or offline requested): logging offline under %s/wandb", save_dir)
    group = cfg.get("group")
    if os.environ.get("WANDB_SWEEP_ID"):  # runs of one sweep land in one group
        group = f"sweep-{os.environ['WANDB_SWEEP_ID']}"
    wandb_logger = WandbLogger(
        project=cfg.get("project", "tmkd"), entity=cfg.get("entity"), group=group, job_type=cfg.get("job_type"),
        tags=list(cfg.get("tags") or []), name=run_name, save_dir=str(save_dir), offline=offline,
        log_model=False,
    )
    wandb_logger.log_hyperparams(config)
    return [wandb_logger]
