"""A run stopped mid-epoch resumes from its mid-epoch last.ckpt and ends exactly where an uninterrupted run does."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from _helpers import plan_for

from tmkd.pipeline import manifest
from tmkd.pipeline.plan import status_of
from tmkd.pipeline.runner import Interrupted, run_plan
from tmkd.pipeline.train import EpochSeed, LastCheckpoint

# 400 rows in batches of 32: 13 batches (steps) per epoch; last.ckpt every 4 steps, never on an epoch's last batch
ARGS = ["experiment=finetune_quick", "data.max_train_samples=400", "data.max_eval_samples=200",
        "trainer.max_epochs=2", "logger=none", "trainer.enable_progress_bar=false", "report.latency=false",
        "threads=1"]
MID_EPOCH = ["checkpoint.every_minutes=null", "checkpoint.every_n_steps=4"]


def _stop_before_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Stop the run as SIGTERM does (runner.Interrupted) just before optimizer step ``step + 1``."""
    seed_batch = EpochSeed.on_train_batch_start

    def stopping(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == step:
            raise Interrupted(signal.SIGTERM)  # as the SIGTERM handler does
        seed_batch(self, trainer, pl_module, batch, batch_idx)

    monkeypatch.setattr(EpochSeed, "on_train_batch_start", stopping)


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_mid_epoch_checkpoint_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        LastCheckpoint(tmp_path, minutes=10, steps=4)
    with pytest.raises(ValueError, match="positive or null"):
        LastCheckpoint(tmp_path, minutes=0)
    with pytest.raises(ValueError, match="positive or null"):
        LastCheckpoint(tmp_path, steps=-1)
    assert LastCheckpoint(tmp_path)._train_time_interval is None


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory):
    """The run never stopped, without mid-epoch checkpoints (same hash: checkpoint.* is not part of it)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TMKD_CHECKPOINTS", str(tmp_path_factory.mktemp("clean")))
    try:
        plan = plan_for(*ARGS, "checkpoint.every_minutes=null")
        metrics = run_plan(plan, report=False)["main"]
    finally:
        mp.undo()
    # last.ckpt is the final state even though the second epoch may not improve on the first (Lightning's
    # save_last alone writes it only with a new best)
    last = torch.load(plan.runs["main"].out_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2 * 13
    return plan.runs["main"], metrics


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "saved", "epoch", "batches"), [(6, 4, 0, 4), (18, 16, 1, 3)],
                         ids=["first_epoch", "second_epoch"])
def test_a_run_stopped_mid_epoch_resumes_to_the_same_metrics_and_weights(monkeypatch, uninterrupted, stop, saved,
                                                                           epoch, batches):
    clean, clean_metrics = uninterrupted
    plan = plan_for(*ARGS, *MID_EPOCH)
    run = plan.runs["main"]
    assert run.hash == clean.hash and run.out_dir != clean.out_dir
    with monkeypatch.context() as patch, pytest.raises(Interrupted):
        _stop_before_step(patch, stop)
        run_plan(plan, report=False)
    assert manifest.read(run.out_dir)["status"] == "interrupted"

    # what resume picks: last.ckpt, written mid-epoch, with the loader's position in it
    status, last = status_of(run)
    assert status == "resume" and last == run.out_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    fit_loop = state["loops"]["fit_loop"]
    assert (state["global_step"], state["epoch"]) == (saved, epoch)
    # saved in on_train_batch_end: the batch is processed, "completed" only once Lightning restores it
    assert fit_loop["epoch_loop.batch_progress"]["current"]["processed"] == batches
    assert fit_loop["state_dict"]["combined_loader"] == [{"epoch": epoch, "batches": batches}]
    assert sorted(p.name for p in last.parent.iterdir()) == (["best.ckpt", "last.ckpt"] if epoch else ["last.ckpt"])

    # the same command again resumes and finishes
    metrics = run_plan(plan_for(*ARGS, *MID_EPOCH), report=False)["main"]
    assert metrics["resumed_from"] == str(last) and metrics["epochs"] == 2
    assert metrics["best"] == clean_metrics["best"]
    for name in ("last.ckpt", "best.ckpt"):
        ours, theirs = _weights(run.out_dir / "checkpoints" / name), _weights(clean.out_dir / "checkpoints" / name)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
