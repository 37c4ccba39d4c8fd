"""``python -m tmkd.compare``: finding runs, grouping seeds into methods, paired checks, outputs and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import N, fake_run

from tmkd.analysis.runs import CompareError, discover
from tmkd.compare import main


def test_seeds_of_two_methods_give_a_table_json_and_plot(tmp_path, capsys):
    for seed in (1, 2, 3):
        fake_run(tmp_path, "baseline", seed, 0.70)
        fake_run(tmp_path, "kd", seed, 0.85)
    out = tmp_path / "report" / "cmp"
    assert main([str(tmp_path / "runs"), "--baseline", "baseline", "--out", str(out), "--replicates", "500"]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    block = data["splits"]["validation"]
    assert block["examples"] == N and data["baseline"] == "baseline"
    kd, base = block["methods"]["kd"], block["methods"]["baseline"]
    assert kd["seeds"] == [1, 2, 3] and kd["n"] == 3 and base["diff"] is None
    assert kd["diff"] == pytest.approx(kd["mean"] - base["mean"])
    assert kd["interval"][0] > 0 and kd["covers"] == "examples + seeds"
    assert kd["se"] == pytest.approx(np.std(kd["scores"], ddof=1) / np.sqrt(3))
    md = out.with_suffix(".md").read_text()
    assert "| kd | 3 (1, 2, 3) |" in md and "two-level bootstrap" in md
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("reference", ["absolute", "relative", "gone"])
def test_runs_that_differ_only_in_seed_and_their_teachers_seed_are_one_method(tmp_path, reference):
    """A student per seed, each distilled from a teacher trained with that seed: one method, not two. The teacher's
    folder may be named as written at training time: absolute, relative to the launch folder, or no longer there."""
    for seed in (1, 2):
        folder = fake_run(tmp_path, "teacher", seed, 0.9)
        teacher = {"absolute": folder, "relative": f"checkpoints/runs/teacher/{folder.name}",
                   "gone": f"/elsewhere/runs/teacher/{folder.name}/hf"}[reference]
        fake_run(tmp_path, "kd", seed, 0.8, teacher=teacher)
        fake_run(tmp_path, "kd", seed, 0.8, teacher=teacher, lr=5e-3)  # another config of the same experiment
    out = tmp_path / "cmp"
    assert main([str(tmp_path / "runs" / "kd"), "--baseline", "kd[optim.lr=0.001]", "--out", str(out),
                 "--replicates", "200"]) == 0
    methods = json.loads(out.with_suffix(".json").read_text())["splits"]["validation"]["methods"]
    assert sorted(methods) == ["kd[optim.lr=0.001]", "kd[optim.lr=0.005]"]
    assert all(m["seeds"] == [1, 2] for m in methods.values())


def test_a_method_missing_seeds_is_named(tmp_path, capsys):
    for seed in (1, 2, 3):
        fake_run(tmp_path, "baseline", seed, 0.7)
    fake_run(tmp_path, "kd", 1, 0.8)
    fake_run(tmp_path, "kd", 3, 0.8)
    assert main([str(tmp_path / "runs"), "--baseline", "baseline", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "method 'kd' lacks seed(s) [2] that the baseline 'baseline' has (it has [1, 3])" in err
    assert "--allow-missing-seeds" in err
    assert main([str(tmp_path / "runs"), "--baseline", "baseline", "--out", str(tmp_path / "c"),
                 "--allow-missing-seeds", "--replicates", "100"]) == 0


def test_prediction_files_over_other_rows_name_the_runs(tmp_path, capsys):
    fake_run(tmp_path, "baseline", 1, 0.7)
    odd = fake_run(tmp_path, "kd", 1, 0.8, rows=N - 50)
    assert main([str(tmp_path / "runs"), "--baseline", "baseline", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "do not cover the same dev examples" in err and f"{odd} ({N - 50} rows, row 0..{N - 51})" in err


def test_one_seed_is_allowed_and_the_table_says_the_interval_covers_examples_only(tmp_path):
    fake_run(tmp_path, "baseline", 1, 0.7)
    fake_run(tmp_path, "kd", 1, 0.8)
    out = tmp_path / "c"
    assert main([str(tmp_path / "runs"), "--baseline", "base", "--out", str(out), "--replicates", "200"]) == 0
    md = out.with_suffix(".md").read_text()
    assert "examples only (1 seed each)" in md and "(1 seed: no s.e.)" in md


def test_runs_without_predictions_and_unknown_baselines_get_clear_errors(tmp_path, capsys):
    fake_run(tmp_path, "baseline", 1, 0.7)
    old = fake_run(tmp_path, "kd", 1, 0.8, with_predictions=False)
    assert main([str(tmp_path / "runs"), "--baseline", "nope", "--out", str(tmp_path / "c")]) == 2
    assert "baseline 'nope' matches no method; methods: ['baseline', 'kd']" in capsys.readouterr().err
    assert main([str(tmp_path / "runs"), "--baseline", "baseline", "--out", str(tmp_path / "c")]) == 2
    assert f"run {old} has no per-example predictions" in capsys.readouterr().err
    (old / "predictions.json").write_text("{}")  # what a QA run leaves
    assert main([str(tmp_path / "runs"), "--baseline", "baseline", "--out", str(tmp_path / "c")]) == 2
    assert "a question-answering run" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="holds no run folder"):
        discover([tmp_path / "empty"])


def test_predictions_that_are_not_the_reported_scores_are_flagged(tmp_path, capsys):
    fake_run(tmp_path, "baseline", 1, 0.7)
    run = fake_run(tmp_path, "kd", 1, 0.8)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["best"]["val/accuracy"] += 0.01
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main([str(tmp_path / "runs"), "--baseline", "baseline", "--out", str(tmp_path / "c"),
                 "--replicates", "50"]) == 0
    assert f"warning: {run}: validation accuracy from predictions" in capsys.readouterr().err


def test_two_runs_with_the_same_seed_in_one_method_are_named(tmp_path, capsys):
    a = fake_run(tmp_path, "baseline", 1, 0.7)
    b = fake_run(tmp_path / "elsewhere", "baseline", 1, 0.7)
    assert main([str(a), str(b), "--baseline", "baseline", "--out", str(tmp_path / "c")]) == 2
    assert "has two runs with seed 1" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_two_methods_two_seeds_from_real_runs(tmp_path, capsys):
    """finetune_quick at two learning rates, seeds 1 and 2, through the plan runner (one invocation per run, as a
    user types them) -> predictions files -> ``python -m tmkd.compare <experiment folder>`` writes md/json/png."""
    from tmkd.cli import prepare_argv
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import build_plan
    from tmkd.pipeline.runner import run_plan

    short = ["logger=none", "trainer.enable_progress_bar=false", "checkpoint.export=false", "report.enabled=false",
             "data.max_train_samples=64", "data.max_eval_samples=48", "data.batch_size=16", "trainer.max_epochs=1"]
    for lr in ("1e-3", "3e-3"):
        for seed in (1, 2):
            overrides = prepare_argv(["experiment=finetune_quick", *short, f"optim.lr={lr}", f"seed={seed}"])
            plan = build_plan(compose_run(overrides), overrides)
            run_plan(plan, report=False)
            assert (plan.runs["main"].out_dir / "predictions" / "validation.jsonl").is_file()
    prefix = tmp_path / "cmp"
    assert main([str(plan.experiment_dir), "--baseline", "finetune_quick[optim.lr=0.001]", "--out", str(prefix),
                 "--replicates", "300"]) == 0
    data = json.loads(prefix.with_suffix(".json").read_text())
    methods = data["splits"]["validation"]["methods"]
    assert sorted(methods) == ["finetune_quick[optim.lr=0.001]", "finetune_quick[optim.lr=0.003]"]
    assert all(m["seeds"] == [1, 2] for m in methods.values())
    for m in methods.values():  # scores recomputed from the files are the runs' reported accuracies
        reported = [json.loads((Path(r) / "metrics.json").read_text())["best"]["val/accuracy"] for r in m["runs"]]
        assert m["scores"] == pytest.approx(reported, abs=1e-6)
    assert prefix.with_suffix(".md").is_file() and prefix.with_suffix(".png").is_file()
    assert "warning" not in capsys.readouterr().err


def test_label_equals_dir_names_methods_whose_runs_share_an_experiment_and_run_name(tmp_path):
    """Two-stage plans whose final stages are runs of one experiment (``stage2`` of qnli_study_m_o_1 in the study's
    TMKD and control rows) are told apart by the label given on the command line, not by their config."""
    base = [fake_run(tmp_path, "baseline", s, 0.70) for s in (1, 2)]
    tmkd = [fake_run(tmp_path, "second", s, 0.85, name="stage2", lr=1e-3) for s in (1, 2)]
    control = [fake_run(tmp_path, "second", s, 0.72, name="stage2", lr=2e-3) for s in (1, 2)]
    out = tmp_path / "cmp"
    args = [*(f"no_kd={f}" for f in base), *(f"tmkd={f}" for f in tmkd), *(f"control={f}" for f in control)]
    assert main([*args, "--baseline", "no_kd", "--out", str(out), "--replicates", "300"]) == 0
    methods = json.loads(out.with_suffix(".json").read_text())["splits"]["validation"]["methods"]
    assert list(methods) == ["no_kd", "control", "tmkd"]
    assert methods["tmkd"]["runs"] == [str(f) for f in tmkd] and methods["tmkd"]["interval"][0] > 0


def test_bad_labels_are_named(tmp_path, capsys):
    a = fake_run(tmp_path, "baseline", 1, 0.70)
    b = fake_run(tmp_path, "kd", 1, 0.80)
    assert main([f"x={a}", f"x={tmp_path / 'runs' / 'kd'}", "--baseline", "x", "--out", str(tmp_path / "c")]) == 2
    assert "method 'x' has two runs with seed 1" in capsys.readouterr().err
    assert main([f"={a}", "--baseline", "x", "--out", str(tmp_path / "c")]) == 2
    assert "write LABEL=DIR with a label and a folder" in capsys.readouterr().err
    assert main([f"kd={a}", str(b), "--baseline", "kd", "--out", str(tmp_path / "c")]) == 2
    assert "label(s) ['kd'] name both LABEL=DIR runs and a grouped method" in capsys.readouterr().err
