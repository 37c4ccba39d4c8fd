"""Add-ons of a stage besides its method: Lightning callbacks built from config nodes (``prune``: pruning).

An add-on works with every method: it reaches the module only through the hooks of ``tmkd.modules.base``
(``param_groups``, ``loss_terms``, ``provisional_prefix``) and ``module.model`` / ``export_model()``, and may add
to metrics.json through ``run_metrics(trainer, module)`` (see :func:`tmkd.pipeline.train.run`).
"""

from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import DictConfig

from tmkd.data.tasks import TaskSpec
from tmkd.modules.pruning import PruneCallback
from tmkd.pipeline.factory import plain
from tmkd.prune.config import PruneSettings


def prune_settings(cfg: DictConfig) -> PruneSettings | None:
    """The ``prune`` node (``/prune: default`` in an experiment's defaults, or ``+prune=default``) with the latency
    options of the ``report`` node; ``None`` when the stage does not prune."""
    node = cfg.get("prune")
    if node is None:
        return None
    return PruneSettings.from_node(plain(node), plain(cfg.get("report")) or {})


def build_addons(cfg: DictConfig, task: TaskSpec, module: pl.LightningModule) -> list[pl.Callback]:
    """The add-on callbacks ``cfg`` asks for, bound to ``module`` (so a model that cannot be pruned as configured,
    e.g. a block size that does not divide its heads, fails here, before training)."""
    addons: list[pl.Callback] = []
    settings = prune_settings(cfg)
    if settings is not None:
        callback = PruneCallback(settings, task)
        callback.bind(module)
        addons.append(callback)
    return addons
