"""Training order that depends on the seed and the epoch only, so a resumed epoch sees the same batches.

A shuffled DataLoader draws its order from the global RNG, whose state after a restart differs from an
uninterrupted run's. Lightning calls ``set_epoch`` on samplers that have it (also under DDP, where it
wraps them); the order is then a pure function of ``(seed, epoch)``. :class:`ResumableLoader` adds the
position within an epoch, so a run stopped mid-epoch resumes at the next batch of the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from lightning_fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader, Sampler
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


class ResumableLoader(DataLoader):
    """A training DataLoader that Lightning restores mid-epoch: it is ``_Stateful`` (``state_dict`` /
    ``load_state_dict``), so a checkpoint written after batch ``k`` of epoch ``e`` records ``(e, k + 1)`` and the
    restored loader drops the indices of epoch ``e``'s first ``k + 1`` batches before loading anything.

    Lightning 2.x only resumes a mid-epoch checkpoint exactly when every train loader is ``_Stateful``
    (``FitLoop.on_save_checkpoint`` / ``_load_combined_loader_states``); it does not skip batches itself.
    torchdata's StatefulDataLoader would do this but is not a dependency, and counting whole batches on top of
    the epoch-seeded order is a few lines. The skip acts on batches of indices (after any DDP sharding of the
    sampler), and ``len()`` stays the full epoch's, as Lightning's progress counters expect.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._iter_epoch: int | None = None  # the sampler's epoch when the current iteration began
        self._consumed = 0  # batches of that epoch handed out (skipped ones included)
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) from a checkpoint

    def _epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    @property
    def _index_sampler(self) -> Any:
        # read when an iterator is created; the skip itself is decided when the batches are drawn, after
        # Lightning has called set_epoch
        return _SkipFirst(super()._index_sampler, self)

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def _start(self) -> int:
        """Called as an epoch's batches are first drawn: how many of them a restored checkpoint already did."""
        epoch = self._epoch()
        skip = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._iter_epoch, self._consumed = epoch, skip
        return skip

    def state_dict(self) -> dict[str, int]:
        if self._iter_epoch is None:
            return {"epoch": self._epoch(), "batches": 0}
        return {"epoch": self._iter_epoch, "batches": self._consumed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        if batches < 0:
            raise ValueError(f"a loader state needs batches >= 0, got {state_dict}")
        self._resume = (epoch, batches)
        # with workers, the first batches are drawn as the iterator is created, before Lightning's set_epoch
        _set_sampler_epoch(self, epoch)


class _SkipFirst:
    """A loader's batches of indices without the first ones a checkpoint already trained on."""

    def __init__(self, batches: Any, loader: ResumableLoader) -> None:
        self.batches = batches
        self.loader = loader

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        skip = self.loader._start()
        yield from itertools.islice(self.batches, skip, None)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length, longest first (a memory error shows on the first batch, not the
    last); ties keep row order, so the batching is deterministic."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[a:a + batch_size] for a in range(0, len(order), batch_size)]
