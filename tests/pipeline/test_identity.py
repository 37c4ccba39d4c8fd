"""A run's identity follows what it reads (data, teachers, encoders) by content, not by path or name; equal configs
spelled differently are one identity; a finished identical run is reused from any experiment's folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from _helpers import plan_for

from tmkd import fingerprint
from tmkd.pipeline import manifest
from tmkd.pipeline.plan import PlanError

TINY_32 = "model.tiny={hidden_size:32,num_hidden_layers:1,num_attention_heads:2,intermediate_size:64," \
          "max_position_embeddings:128}"


def main_hash(*args: str) -> str:
    return plan_for(*args).runs["main"].hash


def write_rte(folder: Path, rows: int = 6, label_shift: int = 0) -> Path:
    """``<folder>/glue/rte/{train,validation}.jsonl`` (JSON lines: an edit in place can keep the file's size)."""
    split_dir = folder / "glue" / "rte"
    split_dir.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", rows), ("validation", 4)):
        lines = [json.dumps({"sentence1": f"premise {i}", "sentence2": f"hypothesis {i}",
                             "label": (i + label_shift) % 2}) for i in range(n)]
        (split_dir / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def fake_model(folder: Path, weights: bytes = b"weights-1", vocab: str = "a b c") -> Path:
    """A model folder as the identity sees it (planning reads files, it never loads a model)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "tokenizer.json").write_text(json.dumps({"vocab": vocab}))
    return folder


# --- data ----------------------------------------------------------------------------------------------------
def test_data_files_count_by_content_not_by_folder(tmp_path):
    data = write_rte(tmp_path / "data")
    base = ["experiment=finetune_quick", "task=rte"]
    first = main_hash(*base, f"data.dir={data}")
    assert main_hash(*base, f"data.dir={data}") == first
    # the same files in another folder: the same run
    moved = shutil.copytree(data, tmp_path / "elsewhere")
    assert main_hash(*base, f"data.dir={moved}") == first
    # a label edited in place (same size, same name): another run
    write_rte(data, label_shift=1)
    assert main_hash(*base, f"data.dir={data}") != first
    # other files in the folder the first run named: another run
    other = write_rte(tmp_path / "other", rows=8)
    assert main_hash(*base, f"data.dir={other}") not in (first, main_hash(*base, f"data.dir={data}"))


def test_a_missing_data_file_fails_the_plan_naming_it(tmp_path):
    data = write_rte(tmp_path / "data")
    (data / "glue" / "rte" / "validation.jsonl").unlink()
    with pytest.raises(PlanError, match="validation"):
        plan_for("experiment=finetune_quick", "task=rte", f"data.dir={data}")


# --- teachers and encoders -----------------------------------------------------------------------------------
def teacher_args(path: Path) -> list[str]:
    return ["experiment=m_o_1_quick", f"distill.teachers=[{{name:t,name_or_path:'{path}'}}]"]


def test_teachers_count_by_weights_and_tokenizer_content(tmp_path):
    teacher = fake_model(tmp_path / "teacher")
    first = main_hash(*teacher_args(teacher))
    (teacher / "README.md").write_text("a model card changes nothing")
    assert main_hash(*teacher_args(teacher)) == first
    moved = shutil.copytree(teacher, tmp_path / "moved")
    assert main_hash(*teacher_args(moved)) == first
    fake_model(teacher, weights=b"weights-2")
    retrained = main_hash(*teacher_args(teacher))
    assert retrained != first
    fake_model(teacher, weights=b"weights-2", vocab="a b d")
    assert main_hash(*teacher_args(teacher)) not in (first, retrained)


def test_a_run_folder_counts_by_its_hf_export(tmp_path):
    run = tmp_path / "runs" / "finetune_quick" / "main-0123abcd"
    fake_model(run / "hf")
    (run / "manifest.json").write_text("{}")  # the folder's own records are not the teacher
    assert main_hash(*teacher_args(run)) == main_hash(*teacher_args(run / "hf"))


def test_the_adapters_frozen_encoder_counts_by_content(tmp_path):
    encoder = fake_model(tmp_path / "encoder")
    args = ["fragment=adapter_head_quick", f"model.name_or_path={encoder}", "model.tiny=null"]
    first = main_hash(*args)
    assert main_hash(*args, f"adapter.encoder={encoder}") == first  # null means model.name_or_path
    fake_model(encoder, weights=b"other encoder")
    assert main_hash(*args) != first


# --- normalised values ---------------------------------------------------------------------------------------
def test_defaults_spelled_out_and_whole_floats_are_the_same_run():
    quick = main_hash("experiment=finetune_quick")
    assert main_hash("experiment=finetune_quick", "data.max_length=48") == quick  # synth_pair's own max length
    assert main_hash("experiment=finetune_quick", "task.max_length=48") == quick
    assert main_hash("experiment=finetune_quick", "data.max_length=32") != quick
    kd = main_hash("experiment=m_o_1_quick")
    assert main_hash("experiment=m_o_1_quick", "distill.temperature=2") == kd  # the default is 2.0
    assert main_hash("experiment=m_o_1_quick", "distill.temperature=3") != kd


# --- reuse across experiments --------------------------------------------------------------------------------
QNLI_BASELINE = ("experiment=baseline_qnli", "seed=42")
QNLI_TEACHER = ("experiment=finetune_qnli", "model=minilm_l3", "seed=42", "trainer.max_epochs=2")


def test_a_finished_run_is_reused_under_another_experiment_name():
    baseline = plan_for(*QNLI_BASELINE).runs["main"]
    assert plan_for(*QNLI_TEACHER).runs["main"].hash == baseline.hash
    # the baseline finished (as the runner leaves it): the teacher's plan reuses its folder and says so
    manifest.write(baseline.out_dir, {"status": "done", "hash": baseline.hash})
    (baseline.out_dir / "metrics.json").write_text("{}")
    again = plan_for(*QNLI_TEACHER)
    assert again.runs["main"].status == "done" and again.runs["main"].out_dir == baseline.out_dir
    assert "reused from baseline_qnli/" in again.describe()
    # a folder of the old naming scheme (another hash) is kept but not reused
    manifest.write(baseline.out_dir, {"status": "done", "hash": "0" * 64})
    assert plan_for(*QNLI_TEACHER).runs["main"].status == "run"


@pytest.mark.slow
def test_end_to_end_a_run_trained_under_one_experiment_is_not_trained_again_under_another():
    from tmkd.pipeline.runner import run_plan

    small = ["data.max_train_samples=32", "data.max_eval_samples=16", "trainer.max_epochs=1", "logger=none",
             "report.enabled=false", "report.latency=false", "trainer.enable_progress_bar=false"]
    student = plan_for("experiment=m_o_1_quick", "method=finetune", *small)
    assert list(student.runs) == ["main"]  # a fine-tune: no teachers to plan
    run_plan(student, report=False)
    same = plan_for("experiment=finetune_quick", TINY_32, "optim.lr=2.0e-3", *small)
    assert same.runs["main"].status == "done"
    assert same.runs["main"].out_dir == student.runs["main"].out_dir
    assert same.runs["main"].out_dir.parent.name == "m_o_1_quick"


# --- the fingerprint sidecar ---------------------------------------------------------------------------------
def test_file_digests_are_remembered_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("TMKD_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "split.jsonl"
    data.write_text('{"a": 1}\n')
    os.utime(data, ns=(1_000_000_000, 1_000_000_000))  # old enough to be remembered
    first = fingerprint.cached_file_sha256(data)
    assert first == fingerprint.file_sha256(data)
    assert len(list(fingerprint.sidecar_dir().glob("*.json"))) == 1
    data.write_text('{"a": 2}\n')  # same size; a rewrite changes the mtime
    os.utime(data, ns=(2_000_000_000, 2_000_000_000))
    assert fingerprint.cached_file_sha256(data) == fingerprint.file_sha256(data) != first


def test_a_file_written_just_now_is_hashed_every_time(tmp_path):
    data = tmp_path / "split.jsonl"
    data.write_text('{"a": 1}\n')
    first = fingerprint.cached_file_sha256(data)
    data.write_text('{"a": 2}\n')  # same size, possibly the same mtime tick
    assert fingerprint.cached_file_sha256(data) != first
