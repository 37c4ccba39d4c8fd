"""Checks before anything runs: names that become folders, teachers' label spaces (planning only, nothing trains)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import plan_for

from tmkd.cli import UsageError, prepare_argv
from tmkd.data import get_task
from tmkd.models.build import ModelSpec, build_classifier
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.names import BadName, check_inside, check_name
from tmkd.pipeline.plan import PlanError, Planner, build_plan
from tmkd.pipeline.runner import Interrupted, experiment_dir, stop_on_signals

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.max_train_samples=64", "data.max_eval_samples=64", "trainer.max_epochs=1", "logger=none",
        "report.latency=false", "threads=1"]


# --- names -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["main", "2026-12-07_13-25-14", "lr=0.1", "stage_2.b", "sweep-AbC9"])
def test_safe_names_pass(name):
    assert check_name(name, "run_name") == name


@pytest.mark.parametrize("name", ["../../victim", "..", ".", "a/b", "/abs", "a..b", "", "a b", "a\\b", "x\n"])
def test_names_that_could_leave_their_folder_are_refused_naming_value_and_rule(name):
    with pytest.raises(BadName) as err:
        check_name(name, "run_name")
    assert f"run_name={name!r}" in str(err.value) and "letters, digits" in str(err.value)


def test_check_inside(tmp_path):
    assert check_inside(tmp_path / "a" / "b", tmp_path, "x") == tmp_path / "a" / "b"
    with pytest.raises(BadName, match=r"outside paths\.checkpoints"):
        check_inside(tmp_path / "a" / ".." / ".." / "b", tmp_path, "x")


def test_the_command_line_refuses_a_run_name_that_leaves_the_checkpoints_folder():
    with pytest.raises(UsageError, match=r"run_name='\.\./\.\./x'"):
        prepare_argv(["experiment=finetune_quick", "run_name=../../x"])
    with pytest.raises(UsageError, match=r"experiment_name='a/b'"):
        prepare_argv(["experiment=finetune_quick", "experiment_name=a/b"])


def test_the_planner_refuses_bad_experiment_stage_and_teacher_names():
    top = compose_run(["experiment=quickstart"])
    with pytest.raises(BadName, match=r"experiment_name='\.\./x'"):
        build_plan({**top, "experiment_name": "../x"}, [])
    stages = dict(top["stages"])
    with pytest.raises(BadName, match=r"stage name='\.\./s'"):
        build_plan({**top, "stages": {"../s": stages["stage1"], "stage2": stages["stage2"]}}, [])
    with pytest.raises(BadName, match=r"stage 'stage1': experiment='\.\./\.\./x'"):
        build_plan({**top, "stages": {"stage1": {**stages["stage1"], "experiment": "../../x"}}}, [])
    planner = Planner(top, [])
    with pytest.raises(BadName, match=r"teacher name='\.\./t'"):
        planner.plan_teacher({"name": "../t", "run": {"experiment": "finetune_quick"}})
    with pytest.raises(BadName, match=r"teacher 't': run.experiment='a/b'"):
        planner.plan_teacher({"name": "t", "run": {"experiment": "a/b"}})


def test_a_sweep_trial_folder_must_come_from_safe_names(monkeypatch, tmp_path):
    top = {"paths": {"checkpoints": str(tmp_path)}, "experiment_name": "finetune_quick", "run_name": "t1"}
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    assert experiment_dir(top) == str(tmp_path / "finetune_quick" / "sweep-abc123" / "t1")
    with pytest.raises(BadName, match=r"run_name='\.\./\.\./\.\./\.\./victim'"):
        experiment_dir({**top, "run_name": "../../../../victim"})
    monkeypatch.setenv("WANDB_SWEEP_ID", "../../x")
    with pytest.raises(BadName, match=r"WANDB_SWEEP_ID='\.\./\.\./x'"):
        experiment_dir(top)


def test_cli_run_name_outside_the_checkpoints_folder_writes_nothing_there(tmp_path):
    checkpoints = tmp_path / "a" / "b" / "c" / "ck"
    victim = tmp_path / "victim" / "student"  # what the report's export would have replaced
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    env = {**os.environ, "TMKD_CHECKPOINTS": str(checkpoints), "WANDB_SWEEP_ID": "s1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "tmkd.run", "experiment=finetune_quick", *TINY,
                           "run_name=../../../../victim"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "run_name='../../../../victim'" in done.stderr and "Traceback" not in done.stderr
    assert (victim / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "victim").iterdir()) == ["student"]
    assert not checkpoints.exists()


# --- teachers' label spaces --------------------------------------------------------------------------------------


def test_a_teacher_run_of_another_label_space_fails_the_plan_naming_both_label_lists():
    with pytest.raises(PlanError) as err:
        plan_for("experiment=m_o_1_quick", "teachers.tiny_s2.task=synth_nli")
    message = str(err.value)
    assert "stage 'main'" in message and "teacher 'tiny_s2'" in message
    assert "['entailment', 'neutral', 'contradiction']" in message and "['entailment', 'not_entailment']" in message


def test_a_teacher_run_of_another_task_kind_fails_the_plan():
    with pytest.raises(PlanError, match=r"teacher 'tiny_s1' trains task 'synth_qa' \(kind qa\)"):
        plan_for("experiment=m_o_1_quick", "teachers.tiny_s1.task=synth_qa")


def test_a_teacher_run_with_the_same_labels_under_another_task_passes():
    plan = plan_for("experiment=m_o_1_quick", "teachers.tiny_s1.task=rte")  # RTE: entailment, not_entailment
    assert plan.runs["tiny_s1"].config["task"]["name"] == "rte"


def _tiny_classifier(folder: Path, task_name: str, positions: int = 128) -> Path:
    model, tok = build_classifier(ModelSpec(tiny={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 64, "max_position_embeddings": positions}),
                                  get_task(task_name))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_a_teacher_folder_with_other_labels_fails_the_plan(tmp_path):
    nli = _tiny_classifier(tmp_path / "nli", "synth_nli")
    pair = _tiny_classifier(tmp_path / "pair", "synth_pair")
    teachers = f"distill.teachers=[{{name:good,name_or_path:'{pair}'}},{{name:bad,name_or_path:'{nli}'}}]"
    with pytest.raises(PlanError) as err:
        plan_for("experiment=m_o_1_quick", teachers)
    message = str(err.value)
    assert "teacher 'bad'" in message and str(nli) in message and "good" not in message
    assert "['entailment', 'neutral', 'contradiction']" in message and "['entailment', 'not_entailment']" in message
    plan = plan_for("experiment=m_o_1_quick", f"distill.teachers=[{{name:good,name_or_path:'{pair}'}}]")
    assert list(plan.runs) == ["main"]


# --- data.max_length against the model's and the teachers' positions ---------------------------------------------


def test_a_max_length_beyond_the_models_positions_fails_when_the_model_is_built(compose_cfg):
    from tmkd.pipeline.factory import build_module, build_task

    cfg = compose_cfg(["experiment=finetune_quick", *TINY, "data.max_length=512"])  # the tiny model embeds 128
    with pytest.raises(ValueError) as err:
        build_module(cfg, build_task(cfg))
    assert "data.max_length=512" in str(err.value) and "128 token positions model tiny-bert" in str(err.value)


def test_a_teacher_with_fewer_positions_than_max_length_fails_when_the_teachers_are_built(compose_cfg, tmp_path):
    from tmkd.pipeline.factory import build_module, build_task

    short = _tiny_classifier(tmp_path / "short", "synth_pair", positions=64)  # the student embeds 128
    cfg = compose_cfg(["experiment=m_o_1_quick", *TINY, "data.max_length=100",
                       f"distill.teachers=[{{name:short,name_or_path:'{short}'}}]"])
    with pytest.raises(ValueError, match=r"data.max_length=100 is more than the 64 token positions teacher 'short'"):
        build_module(cfg, build_task(cfg))
    build_module(compose_cfg(["experiment=m_o_1_quick", *TINY, "data.max_length=64",
                              f"distill.teachers=[{{name:short,name_or_path:'{short}'}}]"]), build_task(cfg))


# --- signals -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_both_raise_interrupted_with_the_shells_exit_code(sig, code):
    # as in a terminal: a test runner started in the background (CI) inherits SIGINT ignored, which stop_on_signals
    # rightly leaves alone (test_an_ignored_signal_stays_ignored)
    outer = signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    before = signal.getsignal(sig)
    try:
        with pytest.raises(Interrupted) as err, stop_on_signals():
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises here, at the latest
    except KeyboardInterrupt:  # what Ctrl-C used to be (Lightning turns it into exit 1): fail, do not stop pytest
        pytest.fail(f"{signal.Signals(sig).name} surfaced as KeyboardInterrupt, not Interrupted")
    finally:
        after = signal.getsignal(sig)
        signal.signal(sig, outer)
    assert err.value.signum == sig and err.value.exit_code == code
    assert str(err.value) == f"received {signal.Signals(sig).name}"
    assert after == before  # restored


def test_an_ignored_signal_stays_ignored():
    """A caller that ignores SIGINT (nohup, a background job) keeps it ignored while a plan runs."""
    outer = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # nothing happens
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, outer)
