"""Experiment loggers: W&B by default (offline by itself when there is no API key), CSV, or none."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

log = logging.getLogger(__name__)
BACKENDS = ("wandb", "csv", "none")


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


WANDB_ID_FILE = "wandb_id"  # the run's W&B id, kept in the run folder so a resumed run logs into the same W&B run


def build_loggers(cfg: Any, save_dir: Path, run_name: str, config: dict[str, Any],
                  resume: bool = False) -> list[Logger]:
    """``cfg`` is the ``logger`` config node; ``config`` the resolved run config logged with the run.

    ``resume`` (the run continues from a checkpoint) keeps what the interrupted run logged: the CSV log goes on in
    ``csv/resume-<n>/`` (Lightning's CSVLogger deletes an existing ``metrics.csv`` it opens), and W&B continues the
    run whose id ``save_dir/wandb_id`` holds instead of opening a new one.
    """
    backend = cfg.get("backend", "wandb")
    if backend not in BACKENDS:
        raise ValueError(f"unknown logger.backend {backend!r}; valid: {list(BACKENDS)}")
    if backend == "none":
        return []
    if backend == "csv":
        return [CSVLogger(save_dir=str(save_dir), name="csv", version=csv_version(save_dir / "csv", resume))]
    offline = wandb_offline(cfg.get("offline"))
    if offline:
        log.info("W&B: no API key found (or offline requested): logging offline under %s/wandb", save_dir)
    group = cfg.get("group")
    if os.environ.get("WANDB_SWEEP_ID"):  # runs of one sweep land in one group
        group = f"sweep-{os.environ['WANDB_SWEEP_ID']}"
    id_file = save_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
    wandb_logger = WandbLogger(
        project=cfg.get("project", "tmkd"), entity=cfg.get("entity"), group=group, job_type=cfg.get("job_type"),
        tags=list(cfg.get("tags") or []), name=run_name, save_dir=str(save_dir), offline=offline,
        log_model=False, **({"id": run_id, "resume": "allow"} if run_id else {}),
    )
    wandb_logger.log_hyperparams(config)
    id_file.write_text(wandb_logger.experiment.id)
    return [wandb_logger]


def csv_version(root: Path, resume: bool) -> str:
    """``""`` (``csv/metrics.csv``) for a new run; the first free ``resume-<n>`` when resuming one that logged."""
    if not resume or not (root / "metrics.csv").is_file():
        return ""
    n = 1
    while (root / f"resume-{n}").exists():
        n += 1
    return f"resume-{n}"
