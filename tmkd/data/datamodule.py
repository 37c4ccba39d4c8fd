"""LightningDataModule for a registered task: load, validate, cap, tokenise (per view), batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from tmkd.data.holdout import HOLDOUT_SPLIT, Holdout, group_by, holdout_task
from tmkd.data.kinds import get_kind
from tmkd.data.loading import load_splits
from tmkd.data.sampling import EpochSampler, ResumableLoader, length_batches
from tmkd.data.tasks import TaskSpec
from tmkd.data.tokenize import view_lengths

STUDENT = "student"


class SplitsDataModule(pl.LightningDataModule):
    """What every tmkd datamodule shares: a task's splits, loaded (validated, capped: :func:`load_splits`) once,
    the batch options, and ``raw`` / ``encoded``, which ``train.run`` counts and reports and from which teachers'
    soft targets are computed. Subclasses say how rows become batches.

    With ``holdout`` (:mod:`tmkd.data.holdout`) ``task``'s eval splits become the one ``holdout`` split, cut from
    train; the dev splits are never loaded. ``in_memory`` (split name -> ``datasets.Dataset``, pandas ``DataFrame``
    or dict of lists) replaces files, hub and generator, with the same checks (:func:`tmkd.data.loading.load_splits`).
    """

    def __init__(self, task: TaskSpec, data_dir: str | None = None, batch_size: int = 32, eval_batch_size: int = 64,
                 max_train_samples: int | None = None, max_eval_samples: int | None = None, num_workers: int = 0,
                 seed: int = 0, holdout: Holdout | None = None, in_memory: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if batch_size <= 0 or eval_batch_size <= 0:
            raise ValueError(f"batch sizes must be positive, got {batch_size} and {eval_batch_size}")
        self.task = holdout_task(task, holdout)
        self.holdout = holdout
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        self.num_workers = num_workers
        self.seed = seed
        self.in_memory = dict(in_memory) if in_memory is not None else None
        self.raw: DatasetDict | None = None
        self.encoded: dict[str, Dataset] = {}

    def load_raw(self) -> DatasetDict:
        self.raw = load_splits(self.task, self.data_dir, self.max_train_samples, self.max_eval_samples, self.seed,
                               holdout=self.holdout, in_memory=self.in_memory)
        return self.raw

    def eval_facts(self) -> dict[str, Any]:
        """Where this run's scores come from, for metrics.json's ``data``: ``{"eval": "dev"}``, or
        ``{"eval": "holdout", "holdout": {fraction, seed, rows, train_rows, by, note}}`` (``by``: the label / title
        / context column the rows were drawn by, null = at random; ``train_rows``: train' after the cut and cap)."""
        if self.holdout is None or self.raw is None:
            return {"eval": "dev"}
        held = self.raw[self.task.eval_splits[0]]
        return {"eval": HOLDOUT_SPLIT, "holdout": {
            "fraction": self.holdout.fraction, "seed": self.holdout.seed, "rows": len(held),
            "train_rows": len(self.raw[self.task.train_split]), "by": group_by(held, self.task),
            "note": self.holdout.describe()}}


class TaskDataModule(SplitsDataModule):
    """Batches carry ``labels``, ``row_id`` and ``inputs[view]`` for every tokenizer in ``tokenizers``.

    Encoding and batching follow the task's kind (:mod:`tmkd.data.kinds`). For QA every split is cut into
    windows: ``encoded[split]`` holds the windows ("features", ``row_id`` = feature row, which soft-target
    caches index; ``example_index`` = the question's row), ``raw[split]`` the questions, both kept for
    post-processing; ``labels`` are ``[start, end]``.

    The first view (``student`` by convention) is the trained model's; the others are teachers' that
    run online. ``group_by_length`` (the default) batches similar lengths together (HF's megabatch grouping),
    which cuts padding a lot on tasks with very uneven lengths such as RTE (``python -m tmkd.bench.train_step``:
    more examples per second at the same dev accuracy). The training order depends on the seed and the epoch only
    (:class:`EpochSampler`) and a checkpoint records the position within the epoch (:class:`ResumableLoader`), so
    resumed runs repeat it exactly, also from a checkpoint written mid-epoch. Validation batches are sorted by length
    (:meth:`val_dataloader`); :meth:`split_loader` keeps row order.
    """

    def __init__(
        self,
        task: TaskSpec,
        tokenizers: Mapping[str, PreTrainedTokenizerBase],
        data_dir: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        max_length: int | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        group_by_length: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        holdout: Holdout | None = None,
        in_memory: Mapping[str, Any] | None = None,
    ) -> None:
        if not tokenizers:
            raise ValueError("TaskDataModule needs at least one tokenizer")
        super().__init__(task, data_dir, batch_size, eval_batch_size, max_train_samples, max_eval_samples,
                         num_workers, seed, holdout, in_memory)
        self.tokenizers = dict(tokenizers)
        self.max_length = max_length or self.task.max_length
        self.group_by_length = group_by_length
        self.kind = get_kind(self.task.kind)
        self.collator = self.kind.collator(self.tokenizers)

    @property
    def main_view(self) -> str:
        return next(iter(self.tokenizers))

    def setup(self, stage: str | None = None) -> None:
        if self.encoded:
            return
        for split, ds in self.load_raw().items():
            self.encoded[split] = self.kind.encode(ds, self.tokenizers, self.task, self.max_length, split,
                                                   train=split == self.task.train_split)

    def _loader(self, ds: Dataset, batch_size: int, train: bool) -> DataLoader:
        sampler: Any = None
        loader = DataLoader
        if train:  # order = f(seed, epoch), position within the epoch restored from checkpoints
            lengths = view_lengths(ds, self.main_view) if self.group_by_length else None
            sampler, loader = EpochSampler(len(ds), self.seed, lengths, batch_size), ResumableLoader
        return loader(ds, batch_size=batch_size, sampler=sampler, collate_fn=self.collator,
                      num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.encoded[self.task.train_split], self.batch_size, train=True)

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per eval split, its rows sorted by length (longest first), as teacher passes sort theirs:
        batches padded to their longest row then carry little padding. Metrics do not depend on the order:
        classification metrics add up per-row counts, QA collects windows by ``row_id`` and post-processes them
        in row order (``predictions.json`` included)."""
        loaders = []
        for split in self.task.eval_splits:
            ds = self.encoded[split]
            order = [i for rows in length_batches(view_lengths(ds, self.main_view), self.eval_batch_size)
                     for i in rows]
            loaders.append(self._loader(ds.select(order), self.eval_batch_size, train=False))
        return loaders

    def split_loader(self, split: str) -> DataLoader:
        """An ordered loader over one split, never shuffled (row order = ``row_id`` order)."""
        return self._loader(self.encoded[split], self.eval_batch_size, train=False)
