"""Offline search: the Optuna hparams_search configs, the table of trials, and the CLI's handling of sweep syntax."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from tmkd.cli import UsageError, group_options, prepare_argv
from tmkd.search.sweeps import _compose
from tmkd.search.trials import collect_trials, main, write_tables

SEARCHES = ["m_o_1_quick", "m_o_1_rte", "sst2_tiny_kd"]


def hydra_cfg(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    from tmkd.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("name", SEARCHES)
def test_search_config(name: str) -> None:
    assert set(SEARCHES) <= set(group_options("hparams_search"))
    cfg = hydra_cfg([f"hparams_search={name}"])
    assert cfg.hydra.runtime.choices.experiment == name  # the search picks its experiment
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.optimized_metric == "val/accuracy"
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed is not None
    assert cfg.hydra.callbacks.trials_table._target_ == "tmkd.search.trials.TrialsTable"
    # every searched key is a key (or config group) of the experiment, and its Optuna distribution parses
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    job = _compose([f"hparams_search={name}"])
    for key, value in sweeper.params.items():
        override = OverridesParser.create().parse_override(f"{key}={value}")
        dist = create_optuna_distribution_from_override(override)
        if key in ("aggregator",):
            assert set(dist.choices) <= set(group_options(key))
        else:
            assert OmegaConf.select(job, key, default="<missing>") != "<missing>", key
        if key == "optim.lr":
            assert type(dist).__name__ == "LogUniformDistribution"


def test_cli_leaves_sweep_syntax_to_hydra_and_still_checks_the_rest() -> None:
    """hparams_search configs set hydra.mode=MULTIRUN (no -m on the command line): the pre-check of tmkd.cli must
    pass sweep overrides through to Hydra, and still report typos in the plain ones."""
    argv = ["hparams_search=m_o_1_quick", "optim.lr=interval(1e-4,1e-3)", "aggregator=mean,best",
            "trainer.max_epochs=1"]
    out = prepare_argv(argv)
    assert sorted(out) == sorted(argv)
    assert prepare_argv(["hparams_search=m_o_1_quick", "hydra.sweeper.n_trials=2", "logger=none"])
    with pytest.raises(UsageError, match=r"optim\.lrr"):
        prepare_argv(["hparams_search=m_o_1_quick", "optim.lrr=1e-3", "aggregator=mean,best"])


# --- the table of trials -------------------------------------------------------------------------------------------
def fake_trial(sweep: Path, num: int, overrides: list[str], value: float | None, metric: str = "val/accuracy"
               ) -> None:
    trial = sweep / str(num)
    (trial / ".hydra").mkdir(parents=True)
    (trial / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (trial / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": metric, "optim": {"lr": 1}}))
    if value is not None:
        (trial / "metrics.json").write_text(json.dumps({"best": {metric: value}, "epochs": 1, "fit_seconds": 2.0,
                                                        "teacher_forward_batches": 0,
                                                        "soft_target_cache": {"hits": 6, "misses": 0}}))


def test_table_best_first_with_incomplete_trials_last(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    fake_trial(sweep, 0, ["optim.lr=0.001", "aggregator=mean"], 0.61)
    fake_trial(sweep, 1, ["optim.lr=0.002", "aggregator=best"], None)  # failed: no metrics.json
    fake_trial(sweep, 2, ["optim.lr=0.003", "aggregator=mean"], 0.74)
    fake_trial(sweep, 10, ["optim.lr=0.004", "aggregator=weighted"], 0.70)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"sweeper": {"direction": "maximize", "params": {"optim.lr": "x", "aggregator": "y"}}}}))
    csv_path, md_path = write_tables(sweep)
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["trial"] for r in rows] == ["2", "10", "0", "1"]
    assert [r["rank"] for r in rows] == ["1", "2", "3", ""] and rows[-1]["status"] == "incomplete"
    assert rows[0]["optim.lr"] == "0.003" and rows[0]["aggregator"] == "mean" and rows[0]["val/accuracy"] == "0.74"
    md = md_path.read_text()
    assert "Best: trial 2 (val/accuracy = 0.7400)" in md and md.index("| 1 | 2 |") < md.index("| 2 | 10 |")


def test_table_minimize_and_params_from_varying_overrides(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    fake_trial(sweep, 0, ["seed=1", "optim.lr=0.1"], 0.3, metric="val/loss")
    fake_trial(sweep, 1, ["seed=1", "optim.lr=0.2"], 0.2, metric="val/loss")
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {"direction": "minimize"}}}))
    rows, metric, params, direction = collect_trials(sweep)
    assert (metric, params, direction) == ("val/loss", ["optim.lr"], "minimize")
    assert [r["trial"] for r in rows] == ["1", "0"]


def test_trials_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    fake_trial(sweep, 0, ["optim.lr=0.001"], 0.5)  # one trial, no multirun.yaml: all overrides
    assert main([str(sweep)]) == 0
    assert "| rank | trial | val/accuracy | optim.lr |" in capsys.readouterr().out
    assert (sweep / "trials.csv").is_file() and (sweep / "trials.md").is_file()
    assert main([str(tmp_path / "empty")]) == 1


@pytest.mark.slow
def test_two_trial_optuna_search_writes_the_table(tmp_path: Path, checkpoints: Path, child_env: Any,
                                                  short_run: list[str]) -> None:
    # The config's own sweep dir (no hydra.sweep.dir override): sweepers resolve it before Hydra's runtime
    # config exists, so it must not depend on ${hydra:...} values.
    command = [sys.executable, "-m", "tmkd.run", "hparams_search=m_o_1_quick", "hydra.sweeper.n_trials=2",
               "logger=none", *short_run]
    done = subprocess.run(command, env=child_env(checkpoints), cwd=tmp_path, capture_output=True, text=True,
                          timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    sweeps = sorted((checkpoints / "m_o_1_quick").glob("hparams_*"))
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    searched = list(hydra_cfg(["hparams_search=m_o_1_quick"]).hydra.sweeper.params)
    trials = {}
    for num in ("0", "1"):
        facts = json.loads((sweep / num / "metrics.json").read_text())
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((sweep / num / ".hydra/overrides.yaml").read_text()))
        assert set(searched) <= set(overrides)  # Optuna's draws reached the trial as overrides
        assert facts["epochs"] == 1
        trials[num] = (facts["best"]["val/accuracy"], overrides)
    assert json.loads((sweep / "1" / "metrics.json").read_text())["teacher_forward_batches"] == 0  # cache reused
    rows = list(csv.DictReader((sweep / "trials.csv").open()))
    assert len(rows) == 2 and {r["trial"] for r in rows} == {"0", "1"}
    values = [float(r["val/accuracy"]) for r in rows]
    assert values == sorted(values, reverse=True)  # best first
    for row in rows:
        value, overrides = trials[row["trial"]]
        assert float(row["val/accuracy"]) == pytest.approx(value)
        assert all(row[k] == overrides[k] for k in searched)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    assert values[0] == pytest.approx(best)  # the table agrees with Optuna's own result
    md = (sweep / "trials.md").read_text()
    assert f"Best: trial {rows[0]['trial']}" in md and all(k in md for k in searched)
    # rebuilt from the folder alone (search.yaml recorded the searched keys): the same tables
    csv_text = (sweep / "trials.csv").read_text()
    (sweep / "trials.md").unlink()
    assert main([str(sweep)]) == 0
    assert (sweep / "trials.md").read_text() == md and (sweep / "trials.csv").read_text() == csv_text
