"""Seeds as an axis of a plan: one run per seed for every stage, shared teachers, mean ± std in the report."""

from __future__ import annotations

import json
import statistics

import pytest
from _helpers import plan_for

from tmkd.pipeline.plan import PlanError, base_name
from tmkd.pipeline.runner import run_plan

SMALL = ["data.max_train_samples=120", "data.max_eval_samples=80", "trainer.max_epochs=1", "logger=none",
         "trainer.enable_progress_bar=false", "report.latency=false", "threads=1"]


def test_every_stage_runs_once_per_seed_and_teachers_are_shared():
    plan = plan_for("experiment=quickstart", "seeds=[1,2,3]", *SMALL)
    stages = [r for r in plan.runs.values() if r.role == "stage"]
    assert sorted(r.name for r in stages) == sorted(f"stage{i}-s{s}" for i in (1, 2) for s in (1, 2, 3))
    for s in (1, 2, 3):
        assert plan.runs[f"stage1-s{s}"].config["seed"] == s and plan.runs[f"stage2-s{s}"].config["seed"] == s
        assert f"stage1-s{s}" in plan.runs[f"stage2-s{s}"].needs  # each seed's stage 2 starts from its stage 1
    assert len({plan.runs[f"stage2-s{s}"].hash for s in (1, 2, 3)}) == 3
    teachers = [r for r in plan.runs.values() if r.role == "teacher"]
    assert len(teachers) == len({r.name for r in teachers}) and all("-s" not in r.name for r in teachers)
    unseeded = plan_for("experiment=quickstart", *SMALL)
    assert {r.name: r.hash for r in teachers} == {r.name: r.hash for r in unseeded.runs.values()
                                                  if r.role == "teacher"}
    assert plan.final == "stage2-s1" and plan.finals == ["stage2-s1", "stage2-s2", "stage2-s3"]
    assert "stage2-s3" in plan.describe()


def test_a_seeded_run_is_the_same_run_as_the_plain_run_with_that_seed():
    seeded = plan_for("experiment=finetune_quick", "seeds=[7,8]", *SMALL)
    plain = plan_for("experiment=finetune_quick", "seed=7", *SMALL)
    assert seeded.runs["main-s7"].hash == plain.runs["main"].hash


def test_stage_selection_takes_every_seed():
    plan = plan_for("experiment=quickstart", "seeds=[1,2]", "stage=stage1", *SMALL)
    names = {r.name for r in plan.selected()}
    assert {"stage1-s1", "stage1-s2"} <= names and not any(n.startswith("stage2") for n in names)


@pytest.mark.parametrize("bad", ["seeds=[]", "seeds=[1,1]", "seeds=[a]", "seeds=[1.5]"])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(PlanError, match="seeds"):
        plan_for("experiment=finetune_quick", bad, *SMALL)


def test_base_name():
    assert base_name("stage2-s7") == "stage2" and base_name("main-s1") == "main"
    assert base_name("tiny_s1") == "tiny_s1" and base_name("stage2") == "stage2"


@pytest.mark.slow
def test_report_gives_mean_and_std_over_seeds():
    plan = plan_for("experiment=finetune_quick", "seeds=[1,2]", *SMALL)
    results = run_plan(plan)
    values = [results[f"main-s{s}"]["best"]["val/accuracy"] for s in (1, 2)]
    experiment = json.loads((plan.experiment_dir / "metrics.json").read_text())
    assert experiment["best"]["val/accuracy"] == pytest.approx(statistics.fmean(values))
    stat = experiment["seeds"]["metrics"]["val/accuracy"]
    assert stat["n"] == 2 and stat["std"] == pytest.approx(statistics.stdev(values))
    report = (plan.experiment_dir / "report.md").read_text()
    assert "## Over seeds" in report and f"{statistics.fmean(values):.4f} ± " in report
    assert json.loads((plan.experiment_dir / "report.json").read_text())["seeds"]["main"]["seeds"] == [1, 2]


@pytest.mark.slow
def test_compare_reads_every_seed_of_a_seeded_experiment(tmp_path):
    from tmkd.analysis.runs import discover

    plan = plan_for("experiment=finetune_quick", "seeds=[1,2]", *SMALL)
    run_plan(plan, report=False)
    folders, _ = discover([plan.experiment_dir])
    assert sorted(folders) == sorted(plan.runs[f"main-s{s}"].out_dir for s in (1, 2))
