"""Turn a composed config into the objects of one run: task, module, and the tokenizers it needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from tmkd.data.datamodule import TaskDataModule
from tmkd.data.tasks import TaskSpec
from tmkd.features.datamodule import FeatureDataModule, FeatureViews
from tmkd.modules.base import StageModule
from tmkd.pipeline.settings import build_holdout, build_task, max_length_of, plain
from tmkd.pipeline.stages import build_stage

__all__ = ["build_datamodule", "build_holdout", "build_module", "build_task", "max_length_of", "plain"]


def build_module(cfg: DictConfig, task: TaskSpec) -> tuple[StageModule, dict[str, PreTrainedTokenizerBase]]:
    """The LightningModule for ``cfg.method`` (its :class:`tmkd.pipeline.stages.StageType`) and the tokenizers
    (views) its batches need, student first."""
    return build_stage(cfg, task)


def build_datamodule(cfg: DictConfig, task: TaskSpec, tokenizers: dict[str, PreTrainedTokenizerBase],
                     in_memory: Mapping[str, Any] | None = None) -> TaskDataModule | FeatureDataModule:
    """The run's data: files, hub or generator as ``data`` says, or ``in_memory`` splits (the Python API)."""
    d = cfg.data
    if isinstance(tokenizers, FeatureViews):
        if in_memory is not None:  # the feature cache is keyed by the data files it was computed from
            raise ValueError(f"method {cfg.method!r} reads cached encoder features of data files; in-memory splits "
                             "are not supported for it: write them under data.dir (<dir>/<task>/<split>.parquet)")
        # method adapter: batches of cached features, computed right here,
        features = FeatureDataModule(  # before train.run starts timing the fit (the pass is timed on its own)
            task, tokenizers.store, data_dir=d.dir, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
            max_train_samples=d.max_train_samples, max_eval_samples=d.max_eval_samples, num_workers=d.num_workers,
            seed=cfg.seed, holdout=build_holdout(cfg))
        features.prepare()
        return features
    return TaskDataModule(
        task, tokenizers, data_dir=d.dir, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
        max_length=d.max_length, max_train_samples=d.max_train_samples, max_eval_samples=d.max_eval_samples,
        group_by_length=d.group_by_length, num_workers=d.num_workers, seed=cfg.seed, holdout=build_holdout(cfg),
        in_memory=in_memory,
    )
