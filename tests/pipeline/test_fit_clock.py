"""metrics.json's ``fit_seconds_total`` (FitClock): the seconds a checkpoint carries are added to the attempt that
resumes from it; a resume from a checkpoint without a clock has no total rather than an undercount. The whole
path (SIGTERM, resume, metrics) is pinned in test_runner.py's SIGTERM test."""

from __future__ import annotations

from tmkd.pipeline.train import FitClock


def test_a_resumed_attempt_adds_the_seconds_its_checkpoint_carries():
    first = FitClock()
    first.on_fit_start(None, None)
    saved = first.state_dict()
    resumed = FitClock()
    resumed.load_state_dict({"seconds": saved["seconds"] + 100.0})
    resumed.on_fit_start(None, None)
    assert resumed.kept_total(resumed=True) >= 100.0
    assert FitClock().kept_total(resumed=False) == 0.0  # a fresh run that has not started: nothing spent


def test_a_resume_from_a_checkpoint_without_a_clock_has_no_total():
    clock = FitClock()  # Lightning calls load_state_dict only when the checkpoint holds the callback's state
    clock.on_fit_start(None, None)
    assert clock.kept_total(resumed=True) is None
    assert clock.kept_total(resumed=False) is not None
