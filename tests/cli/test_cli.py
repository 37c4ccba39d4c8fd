"""Command line: Lightning-CLI style flags, Hydra flags passing through, override checking, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tmkd import cli
from tmkd.cli import UsageError, check_overrides, group_options, main_entry, normalize_argv, prepare_argv

ROOT = Path(__file__).resolve().parents[2]


# --- normalize_argv ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["--trainer.max_epochs=2"], ["trainer.max_epochs=2"]),
    (["--trainer.max_epochs", "2"], ["trainer.max_epochs=2"]),
    (["--trainer.fast_dev_run=true", "--seed", "3"], ["trainer.fast_dev_run=true", "seed=3"]),
    (["--data.dir", "~/data"], ["data.dir=~/data"]),
    (["--data.dir=/x/y=z"], ["data.dir=/x/y=z"]),
    (["--optim.lr", "-1"], ["optim.lr=-1"]),  # a negative number is a value, not a flag
    (["logger=none", "+trainer.profiler=simple", "~logger"], ["logger=none", "+trainer.profiler=simple", "~logger"]),
    (["-m", "seed=1,2"], ["-m", "seed=1,2"]),
    (["--multirun", "--trainer.max_epochs", "1"], ["--multirun", "trainer.max_epochs=1"]),
    (["--cfg", "job", "--trainer.max_epochs", "5"], ["--cfg", "job", "trainer.max_epochs=5"]),
    (["--cfg=job"], ["--cfg=job"]),
    (["-c", "all", "--package", "trainer"], ["-c", "all", "--package", "trainer"]),
    (["--config-name", "x", "--config-dir", "/c"], ["--config-name", "x", "--config-dir", "/c"]),
    (["-cn", "x", "seed=1"], ["-cn", "x", "seed=1"]),
    (["--help"], ["--help"]),
])
def test_normalize_argv(argv, expected):
    assert normalize_argv(argv) == expected


@pytest.mark.parametrize("argv", [
    ["logger=none", "--trainer.max_epochs"],  # at the end of the line
    ["--trainer.max_epochs", "--seed", "3"],  # followed by another flag
    ["--trainer.max_epochs", "logger=none"],  # followed by an override: not its value
    ["--trainer.max_epochs", "-m", "seed=1,2"],
    ["--trainer.max_epochs", "+x=1"],
    ["--trainer.max_epochs", "~logger"],
])
def test_a_flag_without_a_value_is_an_error_naming_it(argv):
    with pytest.raises(UsageError, match=r"^--trainer\.max_epochs has no value"):
        normalize_argv(argv)


def test_a_flag_without_a_value_stops_the_command_before_anything_runs(monkeypatch, capsys):
    called = []
    monkeypatch.setattr(sys, "argv", ["tmkd"])
    with pytest.raises(SystemExit) as info:
        main_entry(lambda: called.append(True), ["experiment=finetune_quick", "--trainer.max_epochs"])
    assert info.value.code == 2 and not called
    assert "--trainer.max_epochs has no value" in capsys.readouterr().err


def test_unparseable_argument():
    with pytest.raises(UsageError, match="cannot parse"):
        normalize_argv(["--=3"])


# --- check_overrides ---------------------------------------------------------------------------------------


def test_unknown_experiment_lists_the_valid_names():
    with pytest.raises(UsageError) as info:
        check_overrides(["experiment=nope"])
    message = str(info.value)
    assert "unknown experiment 'nope'" in message
    names = group_options("experiment")
    assert {"quickstart", "finetune_rte"} <= set(names)
    for name in names:
        assert name in message


def test_unknown_group_option_lists_that_groups_options():
    with pytest.raises(UsageError, match=r"unknown model 'tinyy'; valid model names: .*minilm_l6.*tiny"):
        check_overrides(["model=tinyy"])


def test_unknown_key_lists_the_valid_keys_at_that_level():
    with pytest.raises(UsageError) as info:
        check_overrides(["trainer.max_epoch=2"])
    message = str(info.value)
    assert "unknown key 'trainer.max_epoch'" in message
    assert "max_epochs" in message and "gradient_clip_val" in message and "accelerator" in message
    assert "+trainer.max_epoch=2" in message


def test_unknown_section_and_top_level_key():
    with pytest.raises(UsageError, match=r"'nosuch' is not a config section; top-level keys: .*trainer"):
        check_overrides(["experiment=finetune_rte", "nosuch.key=1"])
    with pytest.raises(UsageError, match=r"valid keys under 'the top level': .*seed"):
        check_overrides(["sead=1"])


def test_any_trainer_argument_gets_a_plus():
    assert check_overrides(["trainer.fast_dev_run=true"]) == ["+trainer.fast_dev_run=true"]
    assert check_overrides(["trainer.max_epochs=2"]) == ["trainer.max_epochs=2"]  # already in the config


def test_valid_overrides_pass_through():
    ovs = ["experiment=finetune_rte", "model=tiny", "task.max_length=32", "data.dir=/tmp", "+extra=1",
           "hydra.run.dir=/tmp/x", "optim.lr=1e-3", "logger=none"]
    assert sorted(check_overrides(ovs)) == sorted(ovs)


def test_hydra_settings_and_hydra_groups_pass_through():
    ovs = ["hydra/job_logging=disabled", "hydra.job.chdir=false", "+hydra.job.env_set.X=1"]
    assert check_overrides(ovs) == ovs


def test_a_composition_error_is_a_usage_error_not_a_traceback():
    with pytest.raises(UsageError, match="Got NoneType"):  # Hydra wants `~group`, not `group=null`
        check_overrides(["logger=null"])


def test_keys_added_by_an_experiment_are_valid():
    # model.tiny only exists as a section once the tiny model is picked, which the override picks
    assert check_overrides(["model=tiny", "model.tiny.hidden_size=16"]) == ["model=tiny", "model.tiny.hidden_size=16"]


def test_prepare_argv_normalises_and_checks_but_leaves_sweeps_alone():
    args = prepare_argv(["--cfg", "job", "--trainer.fast_dev_run=true", "logger=none"])
    assert args[:2] == ["--cfg", "job"]
    assert sorted(args[2:]) == ["+trainer.fast_dev_run=true", "logger=none"]
    assert prepare_argv(["-m", "seed=1,2", "--whatever.key=1"]) == ["-m", "seed=1,2", "whatever.key=1"]
    with pytest.raises(UsageError):
        prepare_argv(["--trainer.max_epoch", "2"])


def test_main_entry_exits_2_with_the_message(monkeypatch, capsys):
    called = []
    monkeypatch.setattr(sys, "argv", ["tmkd"])
    with pytest.raises(SystemExit) as info:
        main_entry(lambda: called.append(True), ["--trainer.max_epoch=2"])
    assert info.value.code == 2 and not called
    err = capsys.readouterr().err
    assert err.startswith("tmkd: error: unknown key 'trainer.max_epoch'") and "max_epochs" in err


def test_main_entry_hands_hydra_the_rewritten_argv(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "argv", ["tmkd-run"])
    main_entry(lambda: seen.append(list(sys.argv)), ["--trainer.max_epochs", "4", "logger=none"])
    assert len(seen) == 1 and seen[0][0] == "tmkd-run"
    assert sorted(seen[0][1:]) == ["logger=none", "trainer.max_epochs=4"]  # group picks first, then values


def test_config_dir_holds_every_group_the_main_config_uses():
    groups = set(cli.config_groups())
    assert {"task", "model", "trainer", "logger", "paths", "hydra", "experiment"} <= groups


# --- the real entry point, in a subprocess ---------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "tmkd.run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_unknown_experiment_exits_2_listing_names():
    done = run_cli("experiment=nope")
    assert done.returncode == 2, done.stderr
    assert "unknown experiment 'nope'" in done.stderr
    assert "quickstart" in done.stderr and "finetune_rte" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_cfg_job_with_both_override_styles_gives_the_same_config():
    lightning_style = run_cli("--cfg", "job", "--trainer.max_epochs", "5", "logger=none")
    hydra_style = run_cli("--cfg", "job", "trainer.max_epochs=5", "logger=none")
    for done in (lightning_style, hydra_style):
        assert done.returncode == 0, done.stderr
    cfg = OmegaConf.create(lightning_style.stdout)
    assert cfg.trainer.max_epochs == 5
    assert cfg.logger.backend == "none"
    assert cfg.task.name == "synth_pair" and cfg.model.tiny is not None  # the quickstart is the default
    assert lightning_style.stdout == hydra_style.stdout
    # the --key=value spelling becomes the same argv (a third process would only repeat the composition above)
    assert prepare_argv(["--cfg", "job", "--trainer.max_epochs=5", "--logger=none"]) == prepare_argv(
        ["--cfg", "job", "--trainer.max_epochs", "5", "logger=none"])


# --- config groups and fragments (issue 18) -----------------------------------------------------------------------
def test_a_fragment_named_as_an_experiment_says_what_it_is_and_what_to_run():
    with pytest.raises(UsageError, match=r"'adapter_head_quick' is a stage fragment \(configs/fragment/"
                                         r"adapter_head_quick.yaml\), not an experiment: it is the base config of one "
                                         r"stage of adapter_quick.*Run experiment=adapter_quick, or the fragment by "
                                         r"itself with fragment=adapter_head_quick"):
        prepare_argv(["experiment=adapter_head_quick"])


def test_a_fragment_alone_replaces_the_default_experiment():
    assert prepare_argv(["fragment=prune_quick_stage"])[:2] == ["~experiment", "fragment=prune_quick_stage"]


def test_an_unknown_method_lists_the_methods():
    with pytest.raises(UsageError, match=r"unknown method 'distil'; valid method names: adapter, finetune, "
                                         r"many_to_many, many_to_one, one_to_one"):
        prepare_argv(["experiment=m_o_1_quick", "method=distil"])


def test_renamed_experiments_have_no_aliases():
    assert "one_to_one_squad" in group_options("experiment") and "kd_squad" not in group_options("experiment")
