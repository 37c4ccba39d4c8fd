"""Read the plain settings of a composed config (task, holdout, token length) that every builder needs.

Kept apart from the builders (:mod:`tmkd.pipeline.factory`, :mod:`tmkd.pipeline.stages`) so they all import it
without importing each other.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from tmkd.data.holdout import Holdout, holdout_task
from tmkd.data.tasks import TaskSpec, get_task


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_task(cfg: DictConfig) -> TaskSpec:
    """The configured task; with ``data.holdout`` its eval splits are the held-out part of train."""
    overrides = {k: v for k, v in plain(cfg.task).items() if k != "name"}
    return holdout_task(get_task(cfg.task.name, **overrides), build_holdout(cfg))


def build_holdout(cfg: DictConfig) -> Holdout | None:
    return Holdout.from_config(plain(cfg.data.get("holdout")))


def max_length_of(cfg: DictConfig, task: TaskSpec) -> int:
    """The token length the data is cut to: ``data.max_length``, or the task's default."""
    return int(cfg.data.max_length or task.max_length)
