"""A W&B agent, simulated without a W&B server: sample a trial, expand the command, run it, read what W&B logged.

The command line comes from wandb's own agent code (``wandb.wandb_agent.Agent._command_run``, with the process
start replaced by a recorder), so ``${env}``, ``${interpreter}``, ``${program}``, ``${args_no_hyphens}`` and
``${args}`` are expanded exactly as ``wandb agent`` expands them; the test then starts that command with the
environment the agent gives its runs (WANDB_SWEEP_ID, WANDB_RUN_ID, WANDB_SWEEP_PARAM_PATH) and W&B offline.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tmkd.search.sweeps import agent_command, hydra_args, sample_params, sample_value
from tmkd.search.wandb_offline import read_summary, run_dirs, transaction_records

SWEEP_ID = "testswp1"


def wandb_agent_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sweep: dict[str, Any],
                        params: dict[str, Any], run_id: str) -> tuple[list[str], dict[str, str]]:
    """(command, env) that wandb's Agent builds for a run of ``sweep`` with ``params`` (nothing is started)."""
    import wandb.wandb_agent as wandb_agent

    started: dict[str, Any] = {}

    class Recorder:
        def __init__(self, command: list[str] | None = None, env: dict[str, str] | None = None, **_: Any) -> None:
            started.update(command=command, env=env)

    monkeypatch.setattr(wandb_agent, "AgentProcess", Recorder)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SWEEP_ID", SWEEP_ID)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_PARAM_PATH", raising=False)
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id=SWEEP_ID)
    agent._sweep_command = sweep.get("command") or []  # what the agent reads from the sweep config
    agent._command_run({"type": "run", "run_id": run_id, "program": sweep.get("program"),
                        "args": {k: {"value": v} for k, v in params.items()}})
    return started["command"], started["env"]


# --- expansion -----------------------------------------------------------------------------------------------------
def test_agent_command_is_what_the_wandb_agent_runs(sweeps: dict, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    for name, sweep in sweeps.items():
        params = sample_params(sweep["parameters"], random.Random(name))
        command, env = wandb_agent_command(monkeypatch, tmp_path, sweep, params, run_id="r1")
        assert agent_command(sweep, params, sweep_id=SWEEP_ID, run_id="r1") == command, name
        assert command[:5] == ["/usr/bin/env", "python", "-m", "tmkd.run", f"experiment={name}"]
        fixed = sweep["command"][5:-1]  # settings every trial shares, written before ${args_no_hyphens}
        assert command[5:] == [*fixed, *(f"{k}={v}" for k, v in params.items())]  # ${args_no_hyphens}: key=value
        assert env["WANDB_SWEEP_ID"] == SWEEP_ID and env["WANDB_RUN_ID"] == "r1"


def test_every_macro_expands_as_in_the_agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMKD_TEST_FLAG", "from-env")
    sweep = {"program": "tmkd/run.py", "command": [
        "${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}", "${args_no_boolean_flags}",
        "${args_json}", "${args_json_file}", "--x=${envvar:TMKD_TEST_FLAG}", "${unknown_macro}", "plain"]}
    params = {"optim.lr": 0.001, "aggregator": "best", "flag": False, "n": 2}
    command, _ = wandb_agent_command(monkeypatch, tmp_path, sweep, params, run_id="r2")
    assert agent_command(sweep, params, sweep_id=SWEEP_ID, run_id="r2") == command
    assert command[:3] == ["/usr/bin/env", "python", "tmkd/run.py"]
    assert "--optim.lr=0.001" in command and "optim.lr=0.001" in command and "--flag=False" in command
    assert "--x=from-env" in command and "plain" in command and "${unknown_macro}" not in command
    assert json.loads(Path(command[-3]).read_text()) == params  # ${args_json_file}


def test_default_command_without_one_in_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sweep = {"program": "train.py"}
    command, _ = wandb_agent_command(monkeypatch, tmp_path, sweep, {"a": 1}, run_id="r3")
    assert command == agent_command(sweep, {"a": 1}) == ["/usr/bin/env", "python", "train.py", "--a=1"]


# --- sampling ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "check"), [
    ({"values": ["mean", "best"]}, lambda v: v in ("mean", "best")),
    ({"value": 3}, lambda v: v == 3),
    ({"min": 1, "max": 3}, lambda v: isinstance(v, int) and 1 <= v <= 3),                 # int_uniform
    ({"min": 1.0, "max": 3.0}, lambda v: isinstance(v, float) and 1 <= v <= 3),           # uniform
    ({"distribution": "int_uniform", "min": 2, "max": 4}, lambda v: v in (2, 3, 4)),
    ({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}, lambda v: v in (0, .25, .5, .75, 1)),
    ({"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3}, lambda v: 1e-5 <= v <= 1e-3),
    ({"distribution": "log_uniform", "min": -5.0, "max": -1.0}, lambda v: math.exp(-5) <= v <= math.exp(-1)),
    ({"distribution": "q_log_uniform_values", "min": 1, "max": 64, "q": 1}, lambda v: isinstance(v, int)),
])
def test_sampling_follows_the_distribution(spec: dict, check: Any) -> None:
    rng = random.Random(0)
    assert all(check(sample_value(spec, rng)) for _ in range(200))


def test_log_uniform_values_spreads_over_decades() -> None:
    rng = random.Random(0)
    draws = [sample_value({"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}, rng) for _ in range(400)]
    assert sum(d < 1e-3 for d in draws) > 120  # half the log range: about half the draws, not ~1%


# --- a trial, run ----------------------------------------------------------------------------------------------------
def run_trial(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sweep: dict[str, Any], params: dict[str, Any],
              run_id: str, checkpoints: Path, child_env: Any, short_run: list[str]) -> tuple[Path, Path]:
    """Run the agent's command for one trial (plus a short-run tail); returns (the trial's experiment folder,
    the folder of its final run, whose W&B run is the trial's)."""
    command, agent_env = wandb_agent_command(monkeypatch, tmp_path, sweep, params, run_id)
    env = {**child_env(checkpoints), **{k: v for k, v in agent_env.items() if k.startswith("WANDB_")},
           "WANDB_MODE": "offline"}
    done = subprocess.run([*command, *short_run], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("experiment folder: ")]
    exp_dir = Path(line.removeprefix("experiment folder: "))
    assert exp_dir.parent.name == f"sweep-{SWEEP_ID}"  # each trial reports into its own folder
    return exp_dir, Path(json.loads((exp_dir / "metrics.json").read_text())["run_folder"])


def wandb_run_record(run_dir: Path) -> Any:
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in transaction_records(next(run_dir.glob("run-*.wandb"))):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise AssertionError(f"no run record in {run_dir}")


@pytest.mark.slow
def test_quick_sweep_trials_log_the_metric_and_reuse_soft_targets(
        sweeps: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, checkpoints: Path, child_env: Any,
        short_run: list[str]) -> None:
    """Two trials of the quick sweep, as the agent runs them, sharing one checkpoints folder.

    The metric is read from what W&B logged: W&B offline (wandb 0.31) writes no files/wandb-summary.json, so the
    summary is folded from the run's transaction log run-<id>.wandb (tmkd.search.wandb_offline; it would read
    wandb-summary.json first where one exists). metrics.json gives the cache facts.
    """
    sweep = sweeps["m_o_1_quick"]
    metric = sweep["metric"]["name"]
    rng = random.Random(3)
    first, second = sample_params(sweep["parameters"], rng), sample_params(sweep["parameters"], rng)
    assert first != second
    facts = []
    for run_id, params in (("trial0001", first), ("trial0002", second)):
        exp_dir, run_dir = run_trial(monkeypatch, tmp_path, sweep, params, run_id, checkpoints, child_env,
                                     short_run)
        [wandb_run_dir] = [d for d in run_dirs(run_dir / "wandb") if d.name.endswith(run_id)]  # the agent's run id
        summary, source = read_summary(wandb_run_dir)
        assert metric in summary, f"{metric!r} not logged to W&B ({source}); logged: {sorted(summary)}"
        assert 0.0 <= summary[metric] <= 1.0
        record = wandb_run_record(wandb_run_dir)
        assert record.run_id == run_id and record.sweep_id == SWEEP_ID  # W&B took the run as the sweep's trial
        assert record.run_group == f"sweep-{SWEEP_ID}"  # tmkd groups a sweep's runs (tmkd.pipeline.loggers)
        run_config = {i.key: json.loads(i.value_json) for i in record.config.update}
        assert {k: run_config.get(k) for k in params} == params  # the agent's values, as the controller reads them
        config = json.loads((exp_dir / "metrics.json").read_text())
        # one epoch: the best-so-far the sweep optimises is the best checkpoint's score in metrics.json
        assert summary[metric] == pytest.approx(config["best"]["val/accuracy"], abs=1e-6)
        resolved = (run_dir / "config.yaml").read_text()
        assert f"name: {params['aggregator']}" in resolved
        facts.append(config)
        assert hydra_args(agent_command(sweep, params))[1:] == [f"{k}={v}" for k, v in params.items()]
    assert facts[0]["teacher_forward_batches"] > 0 and facts[0]["soft_target_cache"]["misses"] > 0
    assert facts[0]["run_folder"] != facts[1]["run_folder"]  # other parameters: another student run
    assert facts[1]["teacher_forward_batches"] == 0  # the second trial ran no teacher: all from the cache
    assert facts[1]["soft_target_cache"] == {"hits": facts[0]["soft_target_cache"]["misses"], "misses": 0}
