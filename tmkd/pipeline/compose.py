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

from tmkd.data.tasks import get_task

# The package's configs: tmkd/configs is a symlink to the repository's configs/ in a checkout and a real
# folder in an installed wheel. TMKD_CONFIG_DIR points elsewhere (add user configs with hydra.searchpath).
CONFIG_DIR = Path(os.environ.get("TMKD_CONFIG_DIR") or Path(__file__).resolve().parents[1] / "configs")
CONFIG_NAME = "train"
EXPERIMENT_GROUP = "experiment"  # runnable experiments (one stage, or a plan of stages)
FRAGMENT_GROUP = "fragment"  # stage fragments: the base config of one stage of a plan, not meant to run alone


def _main_metric(task: Any) -> str:
    """``optimized_metric``'s default: the task's main metric as logged (``val/<metric>``), from the registry, so
    an experiment need not repeat what its task knows (``task.main_metric=...`` overrides it with the task)."""
    node = dict(OmegaConf.to_container(task, resolve=True) if not isinstance(task, dict) else task)
    return f"val/{get_task(node.pop('name'), **node).main_metric}"


def _either(first: Any, second: Any) -> Any:
    """The first value that is not null (``experiment_name``: the experiment's, else the fragment's)."""
    return first if first is not None else second


for _name, _fn in (("tmkd.main_metric", _main_metric), ("tmkd.either", _either)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def is_fragment(name: str) -> bool:
    """Whether ``name`` is a stage fragment (``configs/fragment/<name>.yaml``) rather than an experiment."""
    return (CONFIG_DIR / FRAGMENT_GROUP / f"{name}.yaml").is_file() and not \
        (CONFIG_DIR / EXPERIMENT_GROUP / f"{name}.yaml").is_file()


def fragment_users(name: str) -> list[str]:
    """The experiments whose stages use the fragment ``name`` (for the message when it is run as an experiment)."""
    return sorted(p.stem for p in (CONFIG_DIR / EXPERIMENT_GROUP).glob("*.yaml")
                  if f"fragment: {name}" in p.read_text(encoding="utf-8"))


def run_source(experiment: str | None = None, fragment: str | None = None) -> list[str]:
    """The overrides that make a run's base config: an experiment, or a fragment in the experiment's place."""
    if (experiment is None) == (fragment is None):
        raise ValueError(f"a run is made from an experiment or a fragment, not both or neither: "
                         f"experiment={experiment!r} fragment={fragment!r}")
    return [f"{EXPERIMENT_GROUP}={experiment}"] if fragment is None else [f"~{EXPERIMENT_GROUP}",
                                                                          f"{FRAGMENT_GROUP}={fragment}"]


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
