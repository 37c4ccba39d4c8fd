"""Validation batches are sorted by length (less padding) and the validation results do not change: the same
metrics, and for QA the same ``predictions.json``, as validating the same model on the rows in dataset order."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from tmkd.data import STUDENT, TaskDataModule, get_task
from tmkd.data.tokenize import view_lengths
from tmkd.models import ModelSpec, build_classifier
from tmkd.modules import FineTuneModule

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 128}


class DatasetOrder(TaskDataModule):
    """The same data module, validating in row order (what every split was batched in before sorting)."""

    def val_dataloader(self) -> list[DataLoader]:
        return [self.split_loader(s) for s in self.task.eval_splits]


def _padded_tokens(loader: DataLoader) -> int:
    return sum(int(b["inputs"][STUDENT]["input_ids"].numel()) for b in loader)


def _validate(dm_class: type[TaskDataModule], task: Any, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    torch.manual_seed(seed)
    model, tok = build_classifier(ModelSpec(tiny=TINY, tokenizer="synthetic"), task)
    dm = dm_class(task, {STUDENT: tok}, batch_size=8, eval_batch_size=8)
    module = FineTuneModule(model, task)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(module, datamodule=dm, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return metrics, module.eval_outputs()


def test_val_loader_sorts_rows_by_length_and_keeps_every_row_once():
    task = get_task("synth_pair", synthetic={"n_train": 40, "n_eval": 60, "seed": 21})
    torch.manual_seed(0)
    _, tok = build_classifier(ModelSpec(tiny=TINY, tokenizer="synthetic"), task)
    dm = TaskDataModule(task, {STUDENT: tok}, eval_batch_size=8)
    dm.setup()
    (val,) = dm.val_dataloader()
    rows = torch.cat([b["row_id"] for b in val]).tolist()
    assert sorted(rows) == list(range(60))
    lengths = view_lengths(dm.encoded["validation"], STUDENT)
    assert [lengths[r] for r in rows] == sorted(lengths, reverse=True)  # longest first
    assert _padded_tokens(val) < _padded_tokens(dm.split_loader("validation"))
    assert torch.cat([b["row_id"] for b in dm.split_loader("validation")]).tolist() == list(range(60))


def test_classification_validation_metrics_are_identical_sorted_or_in_dataset_order():
    task = get_task("synth_pair", synthetic={"n_train": 40, "n_eval": 60, "seed": 22},
                    metrics=("accuracy", "f1", "mcc"))
    sorted_metrics, _ = _validate(TaskDataModule, task, seed=3)
    plain_metrics, _ = _validate(DatasetOrder, task, seed=3)
    assert {"val/accuracy", "val/f1", "val/mcc"} <= set(sorted_metrics)
    assert sorted_metrics["val/mcc"] != 0  # mixed predictions: a constant one would agree in any order
    assert sorted_metrics == plain_metrics


def test_qa_validation_metrics_and_predictions_are_identical_sorted_or_in_dataset_order():
    task = get_task("synth_qa_v2", synthetic={"n_train": 20, "n_eval": 30, "context_words": 40, "seed": 5},
                    max_length=32, doc_stride=8)
    sorted_metrics, sorted_files = _validate(TaskDataModule, task, seed=4)
    plain_metrics, plain_files = _validate(DatasetOrder, task, seed=4)
    assert "val/f1" in sorted_metrics and sorted_metrics == pytest.approx(plain_metrics, abs=1e-6)
    assert sorted_files["predictions.json"] == plain_files["predictions.json"]
    assert list(sorted_files["predictions.json"]) == list(plain_files["predictions.json"])  # same key order
    assert sorted_files["na_probs.json"] == pytest.approx(plain_files["na_probs.json"], abs=1e-5)
