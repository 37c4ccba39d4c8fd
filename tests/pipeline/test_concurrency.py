"""Parallel agents on one checkpoint folder, with real processes: runs train once, owners, stale runs, orphans."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tmkd.cli import prepare_argv
from tmkd.pipeline import locks, manifest
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.plan import build_plan
from tmkd.pipeline.runner import run_plan, trial_dir

ROOT = Path(__file__).resolve().parents[2]
TINY = ["experiment=m_o_1_quick", "data.max_train_samples=64", "data.max_eval_samples=64", "trainer.max_epochs=1",
        "logger=csv", "report.latency=false", "threads=1", "trainer.enable_progress_bar=false"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") or k == "WANDB_MODE"}
    return {**env, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "WANDB_MODE": "offline", **extra}


def _python(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, **kw)


def _wait_gone(pid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_agents_started_together_train_each_run_once_in_their_own_trial_folders(tmp_path):
    # three sweep trials of one plan started in the same second (same run_name): the teachers and the student are
    # trained once, by whichever agent locks them first; the others wait and reuse them; each trial gets its folder
    env = _env(WANDB_SWEEP_ID="sw1")
    args = [sys.executable, "-m", "tmkd.run", *TINY, f"paths.checkpoints={tmp_path}", "run_name=trial"]
    agents = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(3)]
    outputs = [a.communicate(timeout=900)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0, 0], outputs

    folders = sorted(p for p in (tmp_path / "runs").glob("*/*") if p.is_dir())
    assert len(folders) == 4  # three teachers and the student
    for folder in folders:
        events = [a["event"] for a in locks.attempts(folder)]
        assert events == ["start", "done"], (folder, events)  # trained once, never concurrently
        assert manifest.read(folder)["status"] == "done"
        assert not list((folder / "checkpoints").glob("best-v*.ckpt"))  # no second training into the folder

    trials = sorted((tmp_path / "m_o_1_quick" / "sweep-sw1").iterdir())
    assert [t.name for t in trials] == ["trial", "trial-2", "trial-3"]
    results = [json.loads((t / "metrics.json").read_text()) for t in trials]
    assert all(r["best"] == results[0]["best"] and r["run_folder"] == results[0]["run_folder"] for r in results)
    assert sum("waiting for it" in out for out in outputs) >= 1  # someone found a run locked and said so


def test_trial_folders_are_unique_and_a_w_and_b_run_id_names_its_own(tmp_path):
    first, second = trial_dir(tmp_path, "2026-01-01_00-00-00", None), trial_dir(tmp_path, "2026-01-01_00-00-00", None)
    assert first != second and first.is_dir() and second.is_dir()
    by_id = trial_dir(tmp_path, "2026-01-01_00-00-00", "abc123")
    assert by_id.name == "2026-01-01_00-00-00-abc123" and by_id.is_dir()
    assert trial_dir(tmp_path, "2026-01-02_00-00-00", "abc123") == by_id  # W&B resumed the trial a day later


def test_a_foreign_process_cannot_rewrite_a_manifest_it_does_not_own(tmp_path):
    folder = tmp_path / "runs" / "x" / "teacher-12345678"
    owner = locks.Owner()
    lock = locks.try_lock(folder)
    locks.claim_manifest(folder, owner, {"name": "teacher", "hash": "h"})
    assert locks.update_owned(folder, owner, status="done", metrics={"val/accuracy": 0.5})
    lock.release()
    # another process (the error handler of an agent that trained the same run at the same time, as before locks)
    foreign = _python(f"""
        from pathlib import Path
        from tmkd.pipeline import locks
        print(locks.update_owned(Path({str(folder)!r}), locks.Owner(), status="failed", error="boom"))
    """)
    assert foreign.communicate(timeout=300)[0].strip() == "False"
    found = manifest.read(folder)
    assert found["status"] == "done" and "error" not in found and found["owner"]["token"] == owner.token


def test_a_running_manifest_whose_owner_is_gone_is_not_trusted(tmp_path, capsys):
    overrides = prepare_argv(["experiment=finetune_quick", "data.max_train_samples=64", "data.max_eval_samples=64",
                              "trainer.max_epochs=1", "logger=none", "report.latency=false",
                              "trainer.enable_progress_bar=false", f"paths.checkpoints={tmp_path}"])
    plan = build_plan(compose_run(overrides), overrides)
    run = plan.runs["main"]
    # a real process claims the run (lock + `running` manifest) and stays
    holder = _python(f"""
        import sys, time
        from pathlib import Path
        from tmkd.pipeline import locks
        folder = Path({str(run.out_dir)!r})
        lock = locks.try_lock(folder)
        locks.claim_manifest(folder, locks.Owner(), {{"name": "main", "hash": {run.hash!r}}})
        print("holding", flush=True)
        time.sleep(600)
    """)
    assert holder.stdout.readline().strip() == "holding"
    assert locks.is_locked(run.out_dir)
    assert "being trained by" in locks.stale_note(run.out_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    # its lock went with it: the manifest still says running, but nobody trains the run
    assert manifest.read(run.out_dir)["status"] == "running" and not locks.is_locked(run.out_dir)
    again = build_plan(compose_run(overrides), overrides)
    assert "interrupted: was running under" in again.describe()
    run_plan(again, report=False)
    assert "treating the run as interrupted" in capsys.readouterr().out
    found = manifest.read(run.out_dir)
    assert found["status"] == "done" and found["owner"]["pid"] == os.getpid()
    assert [a["event"] for a in locks.attempts(run.out_dir)] == ["start", "start", "done"]


def test_a_child_dies_with_its_parent_even_on_sigkill(tmp_path):
    # the runner starts multi-process runs as a child in its own session (tmkd.pipeline.node): without the death
    # signal, SIGKILL to the runner left the child training on into a folder whose lock was free
    parent = _python(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import os, time; from tmkd.pipeline import locks; "
                                  "locks.die_with_parent(int(os.environ[locks.PARENT_ENV])); print(os.getpid(), "
                                  "flush=True); time.sleep(600)"], start_new_session=True,
                                 env={{**os.environ, "{locks.PARENT_ENV}": str(os.getpid())}})
        time.sleep(600)
    """)
    child_pid = int(parent.stdout.readline())
    os.kill(child_pid, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=60)
    assert _wait_gone(child_pid), "the child outlived its parent"


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_to_the_runner_ends_its_training_child(tmp_path):
    # the runner's child for a multi-process run, for real: `python -m tmkd.pipeline.node RUN_DIR` (one process here;
    # Lightning's DDP ranks are started by it the same way and inherit the death signal)
    overrides = prepare_argv(["experiment=finetune_quick", "data.max_train_samples=64", "data.max_eval_samples=64",
                              "trainer.max_epochs=100000", "logger=none", "threads=1",
                              "trainer.enable_progress_bar=false", f"paths.checkpoints={tmp_path}"])
    run = build_plan(compose_run(overrides), overrides).runs["main"]
    run.out_dir.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(run.config), run.out_dir / "config.yaml")
    runner = _python(f"""
        from pathlib import Path
        from tmkd.pipeline.plan import Run
        from tmkd.pipeline.runner import run_child
        run_child(Run("main", "stage", "finetune_quick", [], {{}}, "h", Path({str(run.out_dir)!r})))
    """)
    last = run.out_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.is_file() and runner.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.is_file(), "the child never trained"
    [node] = _children(runner.pid)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=60)
    try:
        assert _wait_gone(node), "the training child outlived the runner"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(node, signal.SIGKILL)
