"""Every run records the software and device it ran on; the plan says when a reused run was made with others."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
from _helpers import plan_for

from tmkd import __version__
from tmkd.environment import environment, git_state, summary, version_changes
from tmkd.pipeline import manifest
from tmkd.pipeline.runner import run_plan

SMALL = ["data.max_train_samples=200", "data.max_eval_samples=100", "trainer.max_epochs=1", "logger=none",
         "trainer.enable_progress_bar=false", "report.latency=false", "threads=1"]


def test_environment_names_the_installed_versions():
    env = environment(threads=3, accelerator="cpu")
    assert env["tmkd"] == __version__ and env["threads"] == 3 and env["device"].startswith("cpu: ")
    for name in ("torch", "transformers", "pytorch-lightning", "datasets"):
        assert env[name] == metadata.version(name)
    assert "transformers " + metadata.version("transformers") in summary(env)


def test_git_state_outside_a_checkout_is_unknown(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_version_changes_lists_what_differs():
    now = {"tmkd": "0.2.0", "python": "3.11.7", "transformers": "5.25.0", "torch": "2.13.0"}
    assert version_changes({**now, "transformers": "5.23.0"}, now) == ["transformers 5.23.0 -> 5.25.0"]
    assert version_changes(now, now) == []
    assert version_changes(None, now) == ["no environment recorded"]


@pytest.mark.slow
def test_a_run_records_its_environment_and_a_reuse_across_versions_says_so(capsys):
    plan = plan_for("experiment=quickstart", "stage=stage1", "stages.stage1.distill.use_teachers=[nli_s1]", *SMALL)
    run_plan(plan, report=False)
    teacher = plan.runs["nli_s1"].out_dir
    recorded = manifest.read(teacher)["environment"]
    assert recorded["transformers"] == metadata.version("transformers") and recorded["threads"] == 1
    assert set(recorded) >= {"tmkd", "git_commit", "git_dirty", "python", "torch", "pytorch-lightning", "datasets",
                             "device", "threads"}

    again = plan_for("experiment=quickstart", "stage=stage1", "stages.stage1.distill.use_teachers=[nli_s1]", *SMALL)
    assert "made with other versions" not in again.describe()
    manifest.update(teacher, environment={**recorded, "transformers": "4.0.0"})  # as if made before an upgrade
    text = plan_for("experiment=quickstart", "stage=stage1", "stages.stage1.distill.use_teachers=[nli_s1]",
                    *SMALL).describe()
    line = next(x for x in text.splitlines() if x.strip().startswith("nli_s1"))
    assert f"made with other versions: transformers 4.0.0 -> {metadata.version('transformers')}" in line


@pytest.mark.slow
def test_report_and_model_card_show_the_environment():
    plan = plan_for("experiment=finetune_quick", *SMALL)
    run_plan(plan)
    line = summary(manifest.read(plan.runs["main"].out_dir)["environment"])
    assert line in (plan.experiment_dir / "report.md").read_text()
    assert line in (plan.experiment_dir / "student" / "README.md").read_text()
    report = json.loads((plan.experiment_dir / "report.json").read_text())
    assert report["runs"][0]["environment"]["transformers"] == metadata.version("transformers")
