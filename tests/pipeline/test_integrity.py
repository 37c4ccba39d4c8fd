"""A diverged or damaged run is never "done": NaN/inf stops a run, damaged outputs and checkpoints are redone."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import plan_for

from tmkd.finite import NonFiniteError
from tmkd.pipeline import manifest
from tmkd.pipeline.runner import run_plan

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TINY = ["experiment=finetune_quick", "data.max_train_samples=64", "data.max_eval_samples=64", "trainer.max_epochs=1",
        "logger=none", "report.latency=false", "threads=1", "trainer.enable_progress_bar=false"]


def truncate(path: Path, keep: float = 0.5) -> None:
    """What a full disk leaves: the first part of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_diverged_run_fails_with_the_reason_and_a_non_zero_exit(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMKD_CHECKPOINTS": str(tmp_path / "checkpoints")}
    proc = subprocess.run([sys.executable, "-m", "tmkd.run", *TINY, "optim.lr=1e9", "hydra.run.dir=" +
                           str(tmp_path / "hydra")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "NonFiniteError" in proc.stderr
    [found] = [json.loads(p.read_text()) for p in (tmp_path / "checkpoints" / "runs").rglob(manifest.MANIFEST)]
    assert found["status"] == "failed" and "NonFiniteError" in found["error"] and "NaN" in found["error"]
    [folder] = [p.parent for p in (tmp_path / "checkpoints" / "runs").rglob(manifest.MANIFEST)]
    assert not (folder / "metrics.json").exists() and not (folder / "hf").exists()  # nothing a later run could trust


def test_a_failure_that_cannot_be_recorded_keeps_its_own_error(monkeypatch, caplog):
    plan = plan_for(*TINY)

    def boom(*args, **kwargs):
        raise NonFiniteError("training loss is NaN/inf")

    real_write = manifest.write

    def full_disk(folder, data):  # every manifest write goes through manifest.write
        if data.get("status") == "failed":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(folder, data)

    monkeypatch.setattr("tmkd.pipeline.train.run", boom)
    monkeypatch.setattr(manifest, "write", full_disk)
    with caplog.at_level(logging.ERROR), pytest.raises(NonFiniteError):
        run_plan(plan, report=False)
    assert "No space left on device" in caplog.text and "still says 'running'" in caplog.text


def test_done_run_with_damaged_outputs_is_redone_with_a_warning_naming_the_file(caplog):
    plan = plan_for(*TINY)
    run_plan(plan, report=False)
    run = plan.runs["main"]
    files = manifest.read(run.out_dir)["files"]
    assert {"metrics.json", "hf/config.json", "hf/model.safetensors"} <= set(files)
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in files.values())
    assert plan_for(*TINY).runs["main"].status == "done"

    for damaged in ("metrics.json", "hf/model.safetensors"):
        truncate(run.out_dir / damaged)
        (run.out_dir / f".{damaged.replace('/', '_')}.x1y2.tmp").write_text("left by a crash")
        (run.out_dir / ".hf.abcd.tmp").mkdir(exist_ok=True)  # a half-written export folder
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = plan_for(*TINY)
        # redone: from its last checkpoint when that is sound (only the export and metrics are written again)
        assert again.runs["main"].status in ("run", "resume"), damaged
        assert str(run.out_dir / damaged) in caplog.text
        run_plan(again, report=False)
        assert manifest.read(run.out_dir)["status"] == "done"
        assert plan_for(*TINY).runs["main"].status == "done"
        assert not list(run.out_dir.rglob(".*.tmp"))  # leftovers of interrupted writes are cleaned up


def test_a_damaged_last_checkpoint_falls_back_to_a_sound_one_then_to_a_fresh_start(caplog):
    args = [*TINY, "trainer.max_epochs=2"]
    plan = plan_for(*args)
    run_plan(plan, report=False)
    run = plan.runs["main"]
    ckpts = run.out_dir / "checkpoints"
    assert {p.name for p in ckpts.glob("*.ckpt")} == {"best.ckpt", "last.ckpt"}

    # a disk-full crash: last.ckpt truncated, the manifest never got past `running`
    manifest.update(run.out_dir, status="running")
    truncate(ckpts / "last.ckpt")
    with caplog.at_level(logging.WARNING):
        again = plan_for(*args)
    assert (again.runs["main"].status, again.runs["main"].resume_from) == ("resume", ckpts / "best.ckpt")
    assert str(ckpts / "last.ckpt") in caplog.text
    run_plan(again, report=False)
    assert manifest.read(run.out_dir)["status"] == "done"

    # no sound checkpoint left: a fresh start (not a crash on every re-run), and no stale file beside the new ones
    manifest.update(run.out_dir, status="running")
    for name in ("last.ckpt", "best.ckpt"):
        truncate(ckpts / name, 0.1)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fresh = plan_for(*args)
    assert (fresh.runs["main"].status, fresh.runs["main"].resume_from) == ("run", None)
    assert str(ckpts / "best.ckpt") in caplog.text
    run_plan(fresh, report=False)
    assert manifest.read(run.out_dir)["status"] == "done"
    assert {p.name for p in ckpts.glob("*.ckpt")} == {"best.ckpt", "last.ckpt"}
    assert manifest.read(run.out_dir)["metrics"] == json.loads((run.out_dir / "metrics.json").read_text())["best"]
