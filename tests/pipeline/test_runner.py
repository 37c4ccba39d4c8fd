"""Running plans for real (tiny models, capped synthetic data, CPU): reuse, resume, re-run, chaining, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from _helpers import plan_for

from tmkd.data import get_task
from tmkd.models.build import ModelSpec, build_classifier
from tmkd.pipeline import manifest
from tmkd.pipeline.runner import run_plan

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
# small enough for seconds per run on one thread, large enough that the tiny models learn something
SMALL = ["data.max_train_samples=400", "data.max_eval_samples=200", "trainer.max_epochs=2", "logger=none",
         "trainer.enable_progress_bar=false", "report.latency=false"]


def statuses(plan) -> dict[str, str]:
    return {r.name: r.status for r in plan.runs.values()}


def test_quick_plan_end_to_end_reuse_stage_selection_and_reruns(capsys):
    # stage 1 alone (with its teachers): stage 2 and its teachers do not run
    first = plan_for("experiment=quickstart", *SMALL, "stage=stage1")
    run_plan(first)
    assert {r.name for r in first.selected()} == {"nli_s1", "nli_s2", "nli_vocab7", "stage1"}
    for name in ("nli_s1", "stage1"):
        found = manifest.read(first.runs[name].out_dir)
        assert found["status"] == "done" and found["hash"] == first.runs[name].hash
        assert found["metrics"]["val/accuracy"] > 0.4  # 3 labels: chance is 1/3
    assert not first.runs["stage2"].out_dir.exists()

    # the whole plan: what stage 1 needed is reused, only stage 2 and its teachers run; then the report
    whole = plan_for("experiment=quickstart", *SMALL)
    assert statuses(whole) == {"nli_s1": "done", "nli_s2": "done", "nli_vocab7": "done", "stage1": "done",
                               "tiny_s1": "run", "tiny_s2": "run", "tiny_vocab7": "run", "stage2": "run"}
    results = run_plan(whole)
    assert results["stage1"]["fit_seconds"] == json.loads((whole.runs["stage1"].out_dir / "metrics.json"
                                                           ).read_text())["fit_seconds"]  # read, not re-run
    report = json.loads((whole.experiment_dir / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == list(whole.runs)
    student = next(r for r in report["runs"] if r["final"])
    assert student["name"] == "stage2" and student["metric"] == "val/accuracy" and student["value"] > 0.5
    md = (whole.experiment_dir / "report.md").read_text()
    assert "stage2 (student)" in md and "tiny_s1" in md
    # the final student: a save_pretrained export with a model card, usable by transformers.pipeline
    export = whole.experiment_dir / "student"
    assert (export / "model.safetensors").is_file()
    card = (export / "README.md").read_text()
    assert "stage1" in card and "stage2" in card and "nli_s1" in card and "synthetic" in card
    clf = transformers.pipeline("text-classification", model=str(export), device="cpu")
    assert clf([{"text": "a b", "text_pair": "c"}])[0]["label"] in ("entailment", "not_entailment")

    # the same command again: nothing runs; the report also goes to W&B (offline here) as a table
    again = plan_for("experiment=quickstart", *SMALL, "logger=wandb")
    assert set(statuses(again).values()) == {"done"}
    run_plan(again, report_options={"latency": False, "logger": again.runs["stage2"].config["logger"]})
    [log] = list((again.experiment_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert b"report/runs" in log.read_bytes()

    # a changed stage-1 setting: stage 1 and what depends on it run again (new folders); the teachers are reused
    changed = plan_for("experiment=quickstart", *SMALL, "stages.stage1.distill.temperature=4")
    todo = {n for n, s in statuses(changed).items() if s != "done"}
    assert todo == {"stage1", "stage2"}
    assert changed.runs["stage1"].out_dir != whole.runs["stage1"].out_dir
    assert (whole.runs["stage1"].out_dir / "metrics.json").is_file()  # the old run is kept, not overwritten


def _tiny_classifier(tmp_path: Path, task_name: str) -> Path:
    task = get_task(task_name)
    model, tok = build_classifier(ModelSpec(tiny={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 64}), task)
    folder = tmp_path / task_name
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_chaining_keeps_the_head_for_the_same_labels_and_reinitialises_it_for_others(tmp_path, caplog):
    source = _tiny_classifier(tmp_path, "synth_nli")  # 3 labels
    before = transformers.AutoModelForSequenceClassification.from_pretrained(source)
    same, _ = build_classifier(ModelSpec(name_or_path=str(source)), get_task("synth_nli"), on_label_mismatch="reinit")
    assert torch.equal(same.classifier.weight, before.classifier.weight)
    with caplog.at_level("WARNING"):
        other, _ = build_classifier(ModelSpec(name_or_path=str(source)), get_task("synth_pair"),
                                    on_label_mismatch="reinit")
    assert other.classifier.weight.shape == (2, 32)
    assert other.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert "re-initialising the classification head" in caplog.text
    layer = "bert.encoder.layer.0.output.dense.weight"
    assert torch.equal(other.state_dict()[layer], before.state_dict()[layer])
    with pytest.raises(ValueError, match="label space mismatch"):  # a teacher must predict the task's labels
        build_classifier(ModelSpec(name_or_path=str(source)), get_task("synth_pair"))


def test_a_loaded_head_of_the_same_size_for_other_labels_is_really_reinitialised(tmp_path):
    """SST-2's 2-label head on a 2-label pair task: the sizes match, so from_pretrained loads the old head, and
    transformers 5's init skips loaded weights; the head must still come out new."""
    task = get_task("synth_pair")
    model, tok = build_classifier(ModelSpec(tiny={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 64}), task)
    model.config.id2label, model.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    model.config.architectures = ["BertForSequenceClassification"]
    with torch.no_grad():
        model.classifier.weight.fill_(0.5)
    model.save_pretrained(tmp_path / "sst")
    tok.save_pretrained(tmp_path / "sst")
    other, _ = build_classifier(ModelSpec(name_or_path=str(tmp_path / "sst")), task, on_label_mismatch="reinit")
    assert other.classifier.weight.shape == (2, 32) and not torch.equal(other.classifier.weight,
                                                                        torch.full((2, 32), 0.5))
    assert other.config.id2label == {0: "entailment", 1: "not_entailment"}


def test_init_from_a_lightning_checkpoint_loads_its_weights_without_pickle(tmp_path):
    plan = plan_for("experiment=finetune_quick", *SMALL, "trainer.max_epochs=1")
    run_plan(plan, report=False)
    ckpt = plan.runs["main"].out_dir / "checkpoints" / "best.ckpt"
    model, _ = build_classifier(ModelSpec(name_or_path=str(ckpt)), get_task("synth_pair"), on_label_mismatch="reinit")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.classifier.weight, state["model.classifier.weight"])


class Payload:
    """Not a tensor: unpickling it would run code from the file."""


def test_checkpoints_with_pickled_objects_are_refused_by_default(tmp_path):
    plan = plan_for("experiment=finetune_quick", *SMALL, "trainer.max_epochs=1")
    run_plan(plan, report=False)
    ckpt = plan.runs["main"].out_dir / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["extra"] = Payload()
    torch.save(state, ckpt)
    with pytest.raises(Exception, match=r"[Ww]eights only load failed|Unsupported global"):
        build_classifier(ModelSpec(name_or_path=str(ckpt)), get_task("synth_pair"))


def _cli(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tmkd.run", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _env(checkpoints: Path) -> dict[str, str]:
    return {**os.environ, "TMKD_CHECKPOINTS": str(checkpoints), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def _saved_epoch(ckpt: Path) -> int:
    """The epoch in a checkpoint that may be half written (Lightning writes it in place): -1 until readable."""
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]
    except (RuntimeError, EOFError, KeyError, OSError):
        return -1


def _wait_for_a_saved_epoch(proc: subprocess.Popen, runs: Path) -> Path:
    """The run's last.ckpt once it holds a finished epoch (the process is then mid-run: a signal lands in training)."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list(runs.glob("main-*/checkpoints/last.ckpt"))
        if found and _saved_epoch(found[0]) >= 1:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no epoch was saved; output:\n{proc.communicate()[0][-3000:]}")


def test_sigterm_stops_the_run_and_the_same_command_resumes_to_the_same_metrics(tmp_path):
    # enough epochs that the signal lands mid-run even on an idle machine (a fraction of a second per epoch there);
    # 400 rows keep the three runs of 12 epochs (interrupted, resumed, clean) cheap
    args = ["experiment=finetune_quick", "data.max_train_samples=400", "data.max_eval_samples=200",
            "trainer.max_epochs=12", "logger=none",
            "trainer.enable_progress_bar=false", "report.latency=false"]
    env = _env(tmp_path / "ck")
    proc = _cli(args, env)
    last = _wait_for_a_saved_epoch(proc, tmp_path / "ck" / "runs" / "finetune_quick")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out[-3000:]
    assert "tmkd: stopped (received SIGTERM)" in out
    run_dir = last.parent.parent
    assert manifest.read(run_dir)["status"] == "interrupted"

    resumed = subprocess.run([sys.executable, "-m", "tmkd.run", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resume (last.ckpt)" in resumed.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from"].endswith("last.ckpt") and metrics["epochs"] == 12
    # the compute behind the kept progress: the interrupted attempt's saved epochs are carried by last.ckpt
    assert metrics["fit_seconds_total"] > metrics["fit_seconds"] > 0

    # the same run, never interrupted, in another checkpoints folder
    clean = plan_for(*args)
    clean_dir = clean.runs["main"].out_dir
    assert clean_dir != run_dir and clean_dir.name == run_dir.name  # same hash, other root
    results = run_plan(clean, report=False)
    assert results["main"]["best"] == pytest.approx(metrics["best"], abs=1e-6)
    assert 0 < results["main"]["fit_seconds_total"] <= results["main"]["fit_seconds"]  # one attempt: nothing carried


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C as in a terminal, even when the test runs where SIGINT is ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_run_like_sigterm_exit_130_and_an_interrupted_manifest(tmp_path):
    args = ["experiment=finetune_quick", "data.max_eval_samples=200", "trainer.max_epochs=16", "logger=none",
            "trainer.enable_progress_bar=false", "report.latency=false", "threads=1"]
    proc = _cli(args, _env(tmp_path / "ck"), preexec_fn=_default_sigint)
    last = _wait_for_a_saved_epoch(proc, tmp_path / "ck" / "runs" / "finetune_quick")
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "tmkd: stopped (received SIGINT); the same command resumes from the last checkpoint" in out
    found = manifest.read(last.parent.parent)
    assert found["status"] == "interrupted" and found["error"] == "Interrupted: received SIGINT"


def test_ddp_on_two_cpu_processes_computes_soft_targets_once(tmp_path):
    args = ["experiment=m_o_1_quick", "data.max_train_samples=256", "data.max_eval_samples=128",
            "trainer.max_epochs=1", "logger=none", "trainer.enable_progress_bar=false", "report.latency=false",
            "stages.main.trainer.devices=2", "stages.main.trainer.strategy=ddp", "stages.main.trainer.accelerator=cpu"]
    done = subprocess.run([sys.executable, "-m", "tmkd.run", *args], cwd=ROOT, env=_env(tmp_path / "ck"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run_dir = next((tmp_path / "ck" / "runs" / "m_o_1_quick").glob("main-*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    rank0, rank1 = metrics["per_rank"]
    splits = 2  # train + validation
    assert rank0["cache_misses"] == 3 * splits and rank0["cache_hits"] == 0
    assert rank1["cache_misses"] == 0 and rank1["cache_hits"] == 3 * splits
    assert rank1["teacher_forward_batches"] == 0
    assert len(list((tmp_path / "ck" / ".soft_targets").glob("*.pt"))) == 3 * splits
    assert manifest.read(run_dir)["status"] == "done"
