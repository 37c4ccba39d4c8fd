"""GLUE MRPC: the task composes, loads the hub's layout from local Parquet, and is scored by GLUE's F1 (of
"equivalent") and accuracy; a tiny run picks its checkpoint by that F1 and the report leads with it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _helpers import write_glue_pair

from tmkd.analysis.bootstrap import MethodRuns, compare, from_confusion
from tmkd.cli import prepare_argv
from tmkd.data import get_task, load_splits
from tmkd.data.kinds import get_kind
from tmkd.metrics.classification import build_metrics
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.plan import build_plan
from tmkd.pipeline.report import main_metric
from tmkd.pipeline.runner import run_experiment
from tmkd.pipeline.train import run

MRPC = get_task("mrpc")


def write_mrpc(root: Path, n_train: int = 40, n_eval: int = 20) -> Path:
    return write_glue_pair(root, "mrpc", n_train, n_eval)


def test_mrpc_is_registered_as_glue_defines_it():
    assert (MRPC.hub_id, MRPC.hub_config, MRPC.local_path) == ("nyu-mll/glue", "mrpc", "glue/mrpc")
    assert MRPC.text_columns == ("sentence1", "sentence2")
    assert MRPC.id2label == {0: "not_equivalent", 1: "equivalent"}
    assert MRPC.metrics == ("binary_f1", "accuracy") and MRPC.main_metric == "binary_f1"  # GLUE reports F1 first


def test_f1_is_the_positive_class_f1_as_sklearn_computes_it():
    labels = torch.tensor([1, 1, 1, 0, 0, 1, 0, 1])
    preds = torch.tensor([1, 0, 1, 1, 0, 1, 0, 0])
    # class 1: TP = 3 (rows 0, 2, 5), FP = 1 (row 3), FN = 2 (rows 1, 7): F1 = 2*3 / (2*3 + 1 + 2) = 6/9;
    # correct rows 0, 2, 4, 5, 6: accuracy 5/8. (Macro F1 would add class 0's 4/7 and halve: 0.619.)
    scores = build_metrics(MRPC.metrics, MRPC.num_labels)(preds, labels)
    assert float(scores["binary_f1"]) == pytest.approx(6 / 9)
    assert float(scores["accuracy"]) == pytest.approx(5 / 8)
    # no positive predicted and none true: sklearn's f1_score gives 0.0 (zero_division), so does the metric
    none = build_metrics(MRPC.metrics, 2)(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    assert float(none["binary_f1"]) == 0.0 and float(none["accuracy"]) == 1.0


def test_binary_f1_refuses_a_task_with_more_than_two_classes():
    with pytest.raises(ValueError, match=r"'binary_f1' is the F1 of label 1 of a two-class task, got 3 classes"):
        build_metrics(("binary_f1",), 3)


def test_mrpc_loads_the_hubs_columns_from_a_local_parquet_folder(tmp_path):
    root = write_mrpc(tmp_path, n_train=12, n_eval=6)
    splits = load_splits(MRPC, data_dir=root)
    assert set(splits) == {"train", "validation"}
    assert len(splits["train"]) == 12 and len(splits["validation"]) == 6
    assert {"sentence1", "sentence2", "label", "idx", "row_id"} <= set(splits["train"].column_names)
    assert set(splits["train"]["label"]) <= {0, 1}


def test_task_mrpc_composes_and_plans(capsys, tmp_path):
    """`python -m tmkd.run experiment=finetune_quick task=mrpc data.dir=... plan=true`, minus Hydra's entry point."""
    root = write_mrpc(tmp_path)
    overrides = prepare_argv(["experiment=finetune_quick", "task=mrpc", f"data.dir={root}", "plan=true"])
    assert run_experiment(compose_run(overrides), overrides) is None
    shown = capsys.readouterr().out
    assert "Plan for experiment 'finetune_quick'" in shown and "1 of 1 runs to do" in shown
    config = build_plan(compose_run(overrides), overrides).runs["main"].config
    assert config["task"]["name"] == "mrpc" and config["data"]["dir"] == str(root)
    assert not (tmp_path / "checkpoints").exists()  # planned, nothing trained


@pytest.mark.slow
def test_a_tiny_mrpc_run_keeps_the_best_f1_checkpoint_and_reports_f1(compose_cfg, tmp_path):
    root = write_mrpc(tmp_path, n_train=64, n_eval=32)
    out = tmp_path / "run"
    cfg = compose_cfg(["experiment=finetune_quick", "task=mrpc", f"data.dir={root}", "logger=none",
                       "trainer.max_epochs=2", "checkpoint.export=false", "trainer.enable_progress_bar=false"],
                      output_dir=out)

    best = run(cfg)["best"]

    assert {"val/binary_f1", "val/accuracy"} <= set(best)
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["callbacks"][next(k for k in ckpt["callbacks"] if "ModelCheckpoint" in k)]["monitor"] == \
        "val/binary_f1"
    metrics = json.loads((out / "metrics.json").read_text())
    assert main_metric(metrics) == ("val/binary_f1", pytest.approx(best["val/binary_f1"]))


def test_teachers_are_scored_by_the_tasks_metrics_too():
    datamodule = SimpleNamespace(raw={"validation": {"label": [1, 1, 1, 0, 0, 1, 0, 1]}})  # what scoring reads
    logits = torch.nn.functional.one_hot(torch.tensor([1, 0, 1, 1, 0, 1, 0, 0]), 2).float()
    scores = get_kind("classification").score(MRPC, datamodule, "validation", logits)
    assert scores == {"binary_f1": pytest.approx(6 / 9), "accuracy": pytest.approx(5 / 8)}


def test_runs_on_mrpc_can_be_compared_by_f1():
    """``python -m tmkd.compare ... --metric binary_f1``: the bootstrap's confusion-matrix F1 is the same F1."""
    conf = np.array([[2, 1], [2, 3]])  # rows gold, columns predicted: the crafted predictions above
    assert from_confusion(conf, "binary_f1") == pytest.approx(6 / 9)
    labels = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    runs = {"base": MethodRuns([1], [[1, 0, 1, 1, 0, 1, 0, 0]], labels), "exact": MethodRuns([1], [labels], labels)}
    result = compare(runs, "base", "binary_f1", replicates=50)
    assert result.scores["base"].tolist() == pytest.approx([6 / 9]) and result.scores["exact"].tolist() == [1.0]
    assert result.diff["exact"] == pytest.approx(1 - 6 / 9)
    with pytest.raises(ValueError, match="'binary_f1' needs two classes, got 3"):
        from_confusion(np.eye(3), "binary_f1")
