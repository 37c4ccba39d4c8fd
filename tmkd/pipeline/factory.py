"""Turn a composed config into the objects of one run: task, module, and the tokenizers it needs."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from tmkd.data.datamodule import STUDENT, TaskDataModule
from tmkd.data.holdout import Holdout, holdout_task
from tmkd.data.tasks import TaskSpec, get_task
from tmkd.features.datamodule import FeatureDataModule, FeatureViews
from tmkd.models.build import ModelSpec, build_model, check_max_length
from tmkd.modules.base import ClassifierModule, FineTuneModule, OptimConfig, require_labels

FINETUNE = "finetune"
ADAPTER = "adapter"  # tmkd.modules.adapter: a hidden-state adapter on a frozen encoder (cached or streamed)


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


def build_module(cfg: DictConfig, task: TaskSpec) -> tuple[ClassifierModule, dict[str, PreTrainedTokenizerBase]]:
    """The LightningModule for ``cfg.method`` and the tokenizers (views) its batches need, student first.

    The trained model may start from an earlier stage with other labels (or of another task kind): its head is
    then re-initialised.
    """
    optim = OptimConfig(**plain(cfg.optim))
    if cfg.method in (FINETUNE, ADAPTER):  # gold-label methods: refused on unlabelled text before any model loads
        require_labels(task, cfg.method)
    if cfg.method == ADAPTER:  # no trained transformer: the adapter's module builds the frozen encoder itself
        from tmkd.modules.adapter import build_adapter_module

        return build_adapter_module(cfg, task, optim)
    spec = ModelSpec.from_config(plain(cfg.model))
    model, tokenizer = build_model(spec, task, on_label_mismatch="reinit")
    check_max_length(model.config, max_length_of(cfg, task), f"model {spec.describe()}")
    if cfg.method == FINETUNE:
        return FineTuneModule(model, task, optim), {STUDENT: tokenizer}
    from tmkd.pipeline.distill_factory import build_distill_module

    return build_distill_module(cfg, task, model, tokenizer, optim)


def build_datamodule(cfg: DictConfig, task: TaskSpec, tokenizers: dict[str, PreTrainedTokenizerBase]
                     ) -> TaskDataModule | FeatureDataModule:
    d = cfg.data
    if isinstance(tokenizers, FeatureViews):  # method adapter: batches of cached features, computed right here,
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
    )
