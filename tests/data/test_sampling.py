"""Mid-epoch resume of the training order: a restored loader continues at the next batch of the same epoch."""

from __future__ import annotations

import pytest
from lightning_fabric.utilities.types import _Stateful

from tmkd.data.sampling import EpochSampler, ResumableLoader

N, BATCH = 50, 4
LENGTHS = [(7 * i) % 23 + 1 for i in range(N)]


def _loader(lengths: list[int] | None, num_workers: int = 0) -> ResumableLoader:
    return ResumableLoader(list(range(N)), batch_size=BATCH, sampler=EpochSampler(N, 3, lengths, BATCH),
                           collate_fn=lambda rows: list(rows), num_workers=num_workers)


def _epoch(loader: ResumableLoader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
    return list(loader)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["shuffled", "length_grouped"])
@pytest.mark.parametrize("done", [1, 5, 12])
def test_a_restored_loader_yields_the_rest_of_the_interrupted_epoch(lengths, done):
    full = _epoch(_loader(lengths), 2)
    assert len(full) == 13

    first = _loader(lengths)
    assert isinstance(first, _Stateful)  # what Lightning requires to resume mid-epoch
    first.sampler.set_epoch(2)
    it = iter(first)
    seen = [next(it) for _ in range(done)]
    state = first.state_dict()
    assert seen == full[:done] and state == {"epoch": 2, "batches": done}

    resumed = _loader(lengths)
    resumed.load_state_dict(state)  # Lightning: before the iterator exists and before set_epoch
    assert len(resumed) == len(full)  # progress counters count the whole epoch
    rest = _epoch(resumed, 2)
    assert rest == full[done:]
    assert resumed.state_dict() == {"epoch": 2, "batches": len(full)}
    # the next epoch is whole again, in its own order
    assert _epoch(resumed, 3) == _epoch(_loader(lengths), 3)


def test_a_restored_loader_with_workers_resumes_its_epoch_before_set_epoch():
    full = _epoch(_loader(LENGTHS), 4)
    resumed = _loader(LENGTHS, num_workers=1)
    resumed.load_state_dict({"epoch": 4, "batches": 3})
    assert list(resumed) == full[3:]  # the sampler's epoch came from the state, not the default 0


def test_an_end_of_epoch_state_skips_nothing_in_the_next_epoch():
    loader = _loader(None)
    loader.load_state_dict({"epoch": 1, "batches": 13})
    assert _epoch(loader, 1) == []
    assert _epoch(loader, 2) == _epoch(_loader(None), 2)


def test_a_fresh_loader_state_and_bad_states():
    assert _loader(None).state_dict() == {"epoch": 0, "batches": 0}
    with pytest.raises(ValueError, match="batches >= 0"):
        _loader(None).load_state_dict({"epoch": 0, "batches": -1})
