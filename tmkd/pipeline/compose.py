"""Compose and resolve the config of one run of a plan, inside or outside a running Hydra app."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

# The package's configs: tmkd/configs is a symlink to the repository's configs/ in a checkout and a real
# folder in an installed wheel. TMKD_CONFIG_DIR points elsewhere (add user configs with hydra.searchpath).
CONFIG_DIR = Path(os.environ.get("TMKD_CONFIG_DIR") or Path(__file__).resolve().parents[1] / "configs")
CONFIG_NAME = "train"


@contextmanager
def hydra_context() -> Iterator[None]:
    """Inside ``@hydra.main`` the global Hydra is set up already (and must stay so); outside, set it up."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


@cache
def trainer_params() -> frozenset[str]:
    """Every ``pytorch_lightning.Trainer`` argument: any of them may be set as ``trainer.<arg>=...``, as in
    Lightning's CLI, whether or not ``configs/trainer`` names it."""
    import pytorch_lightning as pl

    return frozenset(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``; ``model=tiny`` -> ``model``."""
    return override.split("=", 1)[0].lstrip("+~")


def dedupe(overrides: list[str]) -> list[str]:
    """Later overrides of a key replace earlier ones (Hydra would apply both, last wins: same result, one line)."""
    out: dict[str, str] = {}
    for ov in overrides:
        key = override_key(ov)
        out.pop(key, None)
        out[key] = ov
    return list(out.values())


def compose_run(overrides: list[str], output_dir: str = "<output_dir>") -> dict[str, Any]:
    """The run config as ``@hydra.main`` would hand it over (``${hydra:...}`` resolved), as plain data."""
    with hydra_context():
        cfg = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir
    hydra_config = HydraConfig.instance()
    saved = hydra_config.cfg
    hydra_config.set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    finally:
        hydra_config.cfg = saved
