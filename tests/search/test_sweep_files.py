"""The W&B sweep files in experiments/sweeps: structure, metric, parameter names and values, and the command."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tmkd.cli import config_groups, group_options
from tmkd.distill.aggregators import AGGREGATORS
from tmkd.search.sweeps import (
    REPO_ROOT,
    agent_command,
    config_problems,
    experiment_of,
    hydra_args,
    param_target,
    sample_params,
    space_points,
    sweep_files,
    sweep_problems,
    trial_overrides,
)

SWEEP_NAMES = [p.stem for p in sweep_files()]
EXPECTED = {"m_o_1_quick", "m_o_1_rte", "m_o_1_rte_qnli", "sst2_tiny_kd"}


def compose(overrides: list[str], run: str | None = None):
    """The config of one run (default: the final stage) of the plan these overrides make."""
    from tmkd.search.sweeps import _compose

    return _compose(overrides, run)


def test_the_expected_sweep_files_exist() -> None:
    assert set(SWEEP_NAMES) >= EXPECTED


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_structure(sweeps: dict, name: str) -> None:
    sweep = sweeps[name]
    assert sweep_problems(sweep) == []
    assert sweep["method"] in ("bayes", "random", "grid")
    assert sweep["metric"]["goal"] == "maximize"
    assert sweep["command"][:4] == ["${env}", "${interpreter}", "-m", "tmkd.run"]
    assert sweep["command"][-1] == "${args_no_hyphens}"
    assert experiment_of(sweep) == name  # each sweep file searches the experiment of its name
    assert (REPO_ROOT / sweep["program"]).is_file()  # the agent reads `program` even when the command skips it


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_metric_is_one_tmkd_logs(sweeps: dict, name: str, logged_names) -> None:
    """The sweep's metric is a name StageModule really logs for the experiment's task."""
    sweep = sweeps[name]
    cfg = compose(trial_overrides(sweep, {}))
    names = logged_names(cfg.task.name)
    assert sweep["metric"]["name"] in names, f"{sweep['metric']['name']!r} is not logged; logged: {sorted(names)}"
    # the best-so-far of the metric the experiment optimises (a trial's last epoch may not be its best)
    assert sweep["metric"]["name"] == f"{cfg.optimized_metric}_best"
    assert "val/acuracy_best" not in names and "val/accuracy-best" not in names  # a typo would fail above


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_parameters_are_config_keys_with_valid_values(sweeps: dict, name: str) -> None:
    """Every parameter is a key (or config group) of the experiment's composed config, and every value (each
    choice, both ends of each range) composes to itself and passes tmkd's own checks (lr, temperature, alpha)."""
    sweep = sweeps[name]
    assert config_problems(sweep) == []
    base = compose(trial_overrides(sweep, {}))
    groups = set(config_groups())
    for name, spec in sweep["parameters"].items():
        run, key = param_target(name)
        if run is not None:
            base = compose(trial_overrides(sweep, {}), run)
        if key in groups:
            for value in space_points(spec):
                assert value in group_options(key)
                if key == "aggregator":
                    assert value in AGGREGATORS
        else:
            assert OmegaConf.select(base, key, default="<missing>") != "<missing>", key


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_search_space(sweeps: dict, name: str) -> None:
    """The agreed space of the distillation searches: temperature, alpha, lr, student depth; the aggregator
    wherever there are several teachers. (Other sweeps, e.g. over pruning density or the train fraction, are
    checked by the structure and config-key tests.)"""
    sweep = sweeps[name]
    params = {param_target(k)[1]: v for k, v in sweep["parameters"].items()}
    cfg = compose(trial_overrides(sweep, {}))
    assert {"distill.temperature", "distill.alpha", "optim.lr"} <= set(params)
    depth = "model.tiny.num_hidden_layers" if cfg.model.tiny is not None else "model.num_layers"
    assert depth in params
    if cfg.method == "one_to_one":  # one teacher: every aggregator gives the same target, a wasted dimension
        assert "aggregator" not in params
    else:
        assert sorted(params["aggregator"]["values"]) == AGGREGATORS.names()


def test_student_depth_fits_the_parent(sweeps: dict, minilm: str) -> None:
    """model.num_layers keeps layers of the student's parent: at most its depth (MiniLM-L6: 6; the stage-1
    student of m_o_1_rte_qnli: the depth stage 1 cuts)."""
    from transformers import AutoConfig

    for name, sweep in sweeps.items():
        depth = {param_target(k)[1]: v for k, v in sweep["parameters"].items()}.get("model.num_layers")
        if depth is None:
            continue
        cfg = compose(trial_overrides(sweep, {}))
        if "/runs/" in str(cfg.model.name_or_path):  # starts from an earlier stage of the plan
            parent = compose(trial_overrides(sweep, {}), "stage1").model.num_layers
        else:
            parent = AutoConfig.from_pretrained(cfg.model.name_or_path).num_hidden_layers
        assert all(1 <= n <= parent for n in depth["values"]), (name, parent)


@pytest.mark.parametrize("typo", [
    {"distill.temprature": {"values": [2.0]}},          # no such key
    {"optim.learning_rate": {"min": 1e-4, "max": 1e-3}},
    {"aggregater": {"values": ["mean"]}},               # no such key or group
    {"aggregator": {"values": ["mean", "meen"]}},       # no such aggregator
    {"model.tiny.num_layers": {"values": [1]}},         # the tiny student's key is num_hidden_layers
    {"distill.alpha": {"min": 0.5, "max": 1.5}},        # tmkd rejects alpha > 1
    {"optim.lr": {"values": ["fast"]}},                 # composes to a string, not the value
])
def test_config_check_catches_typos(sweeps: dict, typo: dict) -> None:
    sweep = {**sweeps["m_o_1_quick"], "parameters": typo}
    assert config_problems(sweep), typo


def test_structure_check_catches_mistakes(sweeps: dict) -> None:
    good = sweeps["m_o_1_quick"]
    assert sweep_problems({**good, "metric": {"name": "val/accuracy_best", "goal": "max"}})
    assert sweep_problems({**good, "method": "bayesian"})
    assert sweep_problems({**good, "command": [c for c in good["command"] if c != "${args_no_hyphens}"]})
    assert sweep_problems({**good, "parameters": {"optim.lr": {"distribution": "log_uniform_valuez",
                                                               "min": 1e-4, "max": 1e-3}}})
    assert sweep_problems({**good, "parameters": {"model.num_layers": {"values": [None, 2]}}})
    assert sweep_problems({k: v for k, v in good.items() if k != "program"})


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_expanded_trial_composes_with_tmkd_run(sweeps: dict, name: str, tmp_path: Path, child_env) -> None:
    """The command the agent would run, with ``--cfg job`` added: tmkd.run checks the overrides and Hydra
    composes the job config (nothing is trained), which holds the sampled values."""
    sweep = sweeps[name]
    params = sample_params(sweep["parameters"], random.Random(7))
    command = agent_command(sweep, params)
    assert command[:4] == ["/usr/bin/env", "python", "-m", "tmkd.run"]
    assert hydra_args(command) == [f"experiment={name}", *sweep["command"][5:-1],
                                   *(f"{k}={v}" for k, v in params.items())]
    done = subprocess.run([*command, "--cfg", "job"], env=child_env(tmp_path / "ck"), capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    job = OmegaConf.create(yaml.safe_load(done.stdout))
    for name_, value in params.items():
        run, key = param_target(name_)
        if run is not None:  # addressed to one run: held for the planner under node_overrides
            got = OmegaConf.select(job, f"node_overrides.stages.{run}.{key}")
        else:
            got = job.distill.aggregator.name if key == "aggregator" else OmegaConf.select(job, key)
        assert got == value, (name_, got, value)


def test_tmkd_run_rejects_a_typo_in_an_expanded_trial(sweeps: dict, tmp_path: Path, child_env) -> None:
    command = [*agent_command(sweeps["m_o_1_rte"], {"distill.temprature": 2.0}), "--cfg", "job"]
    done = subprocess.run(command, env=child_env(tmp_path / "ck"), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 2 and "distill.temprature" in done.stderr


def test_sweeps_cli_check(tmp_path: Path) -> None:
    quick = next(p for p in sweep_files() if p.stem == "m_o_1_quick")
    ok = subprocess.run([sys.executable, "-m", "tmkd.search.sweeps", str(quick), "--check"],
                        capture_output=True, text=True, timeout=300, check=False)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    sweep = yaml.safe_load(quick.read_text())
    sweep["parameters"]["distill.temprature"] = sweep["parameters"].pop("distill.temperature")
    bad.write_text(yaml.safe_dump(sweep))
    done = subprocess.run([sys.executable, "-m", "tmkd.search.sweeps", str(bad), "--check"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1 and "distill.temprature" in done.stderr


def test_sst2_tiny_kd_students(minilm: str) -> None:
    """The SST-2 student: 2 layers cut from MiniLM-L6 by default, 1 on request, or the documented tiny random one
    with MiniLM's tokenizer (the teacher's, so no second tokenisation)."""
    from tmkd.data.tasks import get_task
    from tmkd.models.build import ModelSpec, build_classifier
    from tmkd.pipeline.factory import plain

    task = get_task("sst2")
    for overrides, depth, width in (
            ([], 2, 384), (["model.num_layers=1"], 1, 384),
            (["model=tiny", f"model.tokenizer={minilm}", "model.tiny.hidden_size=128",
              "model.tiny.intermediate_size=512"], 2, 128)):
        cfg = compose(["experiment=sst2_tiny_kd", *overrides])
        assert cfg.method == "one_to_one" and len(cfg.distill.teachers) == 1 and cfg.task.name == "sst2"
        assert "/runs/finetune_sst2/minilm_s42-" in cfg.distill.teachers[0].name_or_path  # a run of the plan
        model, tokenizer = build_classifier(ModelSpec.from_config(plain(cfg.model)), task)
        assert (model.config.num_hidden_layers, model.config.hidden_size) == (depth, width)
        assert tokenizer.name_or_path == minilm


def test_stage_two_starts_from_the_stage_one_student() -> None:
    from tmkd.cli import address_runs
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import build_plan

    overrides = address_runs(["experiment=m_o_1_rte_qnli", "seed=7"])
    plan = build_plan(compose_run(overrides), overrides)
    stage1, stage2 = plan.runs["stage1"], plan.runs["stage2"]
    assert stage2.config["task"]["name"] == "qnli" and stage2.config["method"] == "many_to_one"
    assert stage2.config["model"]["name_or_path"] == str(stage1.out_dir) and "stage1" in stage2.needs
    assert stage1.config["task"]["name"] == "rte" and stage1.config["seed"] == stage2.config["seed"] == 7
    qnli_teachers = [t["name"] for t in stage2.config["distill"]["teachers"]]
    assert qnli_teachers == ["qnli_minilm_s42", "qnli_minilm_s7", "qnli_minilm_s3"]
    assert all(plan.runs[t].experiment == "finetune_qnli" for t in qnli_teachers)
