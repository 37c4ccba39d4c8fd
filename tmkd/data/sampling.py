"""Training order that depends on the seed and the epoch only, so a resumed epoch sees the same batches.

A shuffled DataLoader draws its order from the global RNG, whose state after a restart differs from an
uninterrupted run's. Lightning calls ``set_epoch`` on samplers that have it (also under DDP, where it
wraps them); the order is then a pure function of ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` seeded by ``(seed, epoch)``; with ``lengths``, length-grouped batches
    (HF's megabatch grouping: similar lengths per batch, the longest batch first) from the same generator."""

    def __init__(self, n: int, seed: int, lengths: list[int] | None = None, batch_size: int | None = None) -> None:
        if lengths is not None and (batch_size is None or len(lengths) != n):
            raise ValueError("length-grouped sampling needs one length per row and a batch size")
        self.n = n
        self.seed = seed
        self.lengths = lengths
        self.batch_size = batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.lengths is None:
            return iter(torch.randperm(self.n, generator=g).tolist())
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))
