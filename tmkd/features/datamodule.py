"""LightningDataModule over cached frozen-encoder features: what ``method: adapter`` trains on.

Batches are ``{"inputs": {"student": {"features": [B, layers, hidden]}}, "labels": [B], "row_id": [B]}``: the
layout of :class:`tmkd.data.datamodule.TaskDataModule`'s batches (soft targets are indexed by ``row_id``), with the
student's input being features instead of tokens: the encoder ran once, ahead of training
(:class:`tmkd.features.FeatureStore`), and is not needed again. So the one training module (and its teacher source)
trains an adapter student as it trains a transformer.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate
from transformers import PreTrainedTokenizerBase

from tmkd.data.datamodule import STUDENT, SplitsDataModule
from tmkd.data.holdout import Holdout
from tmkd.data.sampling import EpochSampler, ResumableLoader
from tmkd.data.tasks import TaskSpec
from tmkd.features.cache import CachedFeatureDataset, FeatureStore


class FeatureViews(dict[str, PreTrainedTokenizerBase]):
    """The views of an adapter run (the frozen encoder's tokenizer, used by the export) plus its feature store.

    ``build_module`` returns it as the run's tokenizers and ``build_datamodule`` reads the store from it, so the
    module and the datamodule share one encoder without a change to the ``train.run`` call sequence.
    """

    def __init__(self, tokenizers: dict[str, PreTrainedTokenizerBase], store: FeatureStore) -> None:
        super().__init__(tokenizers)
        self.store = store


class FeatureDataModule(SplitsDataModule):
    """Raw splits turned into cached per-layer features.

    ``raw`` and ``encoded`` both hold the raw splits (with ``row_id``), as :class:`SplitsDataModule` defines them.
    :meth:`setup` is idempotent; the adapter factory calls it before ``trainer.fit``, so the feature pass is timed
    apart from training (``FeatureStore.seconds``).
    """

    def __init__(self, task: TaskSpec, store: FeatureStore, data_dir: str | None = None, batch_size: int = 32,
                 eval_batch_size: int = 64, max_train_samples: int | None = None,
                 max_eval_samples: int | None = None, num_workers: int = 0, seed: int = 0,
                 holdout: Holdout | None = None) -> None:
        super().__init__(task, data_dir, batch_size, eval_batch_size, max_train_samples, max_eval_samples,
                         num_workers, seed, holdout)
        self.store = store
        self.tokenizers = {STUDENT: store.tokenizer}  # the one view (the teacher source reads ``main_view``)
        self.features: dict[str, CachedFeatureDataset] = {}
        self.load_seconds = 0.0

    @property
    def main_view(self) -> str:
        return STUDENT

    def setup(self, stage: str | None = None) -> None:
        if self.features:
            return
        started = time.perf_counter()
        raw = self.load_raw()
        self.load_seconds = time.perf_counter() - started
        for split, ds in raw.items():
            self.encoded[split] = ds
            self.features[split] = self.store.dataset(ds, split)

    def prepare(self) -> None:
        """Load the splits and compute (or open) their features now, on the GPU when there is one; the encoder
        goes back to the CPU afterwards, as training never runs it."""
        if self.features:
            return
        encoder = self.store.encoder
        if torch.cuda.is_available():
            encoder.to("cuda")
        try:
            self.setup()
        finally:
            encoder.to("cpu")

    def _loader(self, ds: CachedFeatureDataset, batch_size: int, train: bool) -> DataLoader:
        sampler: Any = EpochSampler(len(ds), self.seed) if train else None  # order = f(seed, epoch): resumable
        loader = ResumableLoader if train else DataLoader  # ... also from a mid-epoch checkpoint
        return loader(ds, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers,
                      persistent_workers=self.num_workers > 0, collate_fn=collate_features)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.features[self.task.train_split], self.batch_size, train=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self.split_loader(s) for s in self.task.eval_splits]

    def split_loader(self, split: str) -> DataLoader:
        """An ordered loader over one split's features (row order = ``row_id`` order)."""
        return self._loader(self.features[split], self.eval_batch_size, train=False)


def collate_features(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of :class:`CachedFeatureDataset` -> a batch with the features as the student's ``inputs``."""
    batch = default_collate(rows)
    return {"inputs": {STUDENT: {"features": batch.pop("features")}}, **batch}
