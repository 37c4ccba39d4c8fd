"""The task-kind seam: classification unchanged, QA windows through the same data module."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from tmkd.data import STUDENT, DataError, TaskDataModule, get_task
from tmkd.data.kinds import KINDS, get_kind
from tmkd.data.sources import validate_split
from tmkd.models.tokenizers import synthetic_tokenizer


def test_kinds_are_registered_and_unknown_ones_name_the_valid():
    assert KINDS.names() == ["classification", "qa"]
    with pytest.raises(KeyError, match="unknown task kind 'ner'; valid names: classification, qa"):
        get_kind("ner")
    assert get_task("rte").kind == "classification" and get_task("squad_v2").version_2
    assert get_task("squad").main_metric == "f1" and get_task("squad").max_length == 384
    assert get_task("squad").doc_stride == 128 and get_task("squad", doc_stride=64).doc_stride == 64
    with pytest.raises(ValueError, match="doc_stride must be in"):
        get_task("squad", doc_stride=400)


def test_classification_loss_and_layout_are_the_plain_ones():
    kind = get_kind("classification")
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    assert torch.equal(kind.gold_loss(logits, labels), torch.nn.functional.cross_entropy(logits, labels))


def test_qa_loss_is_the_mean_of_start_and_end_ce_and_padding_is_filled():
    kind = get_kind("qa")
    logits, labels = torch.randn(3, 2, 7), torch.tensor([[1, 2], [0, 0], [4, 5]])
    ce = torch.nn.functional.cross_entropy
    expected = (ce(logits[:, 0], labels[:, 0]) + ce(logits[:, 1], labels[:, 1])) / 2
    torch.testing.assert_close(kind.gold_loss(logits, labels), expected)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 5:] = 0
    out = kind.from_head(torch.randn(3, 7, 2), {"attention_mask": mask})
    assert out.shape == (3, 2, 7) and torch.all(out[0, :, 5:] == -1e4) and torch.all(out[1] != -1e4)


def _qa_rows(**change) -> dict:
    rows = {"id": ["a", "b"], "context": ["xx yy zz", "uu vv"], "question": ["q", "r"],
            "answers": [{"text": ["yy"], "answer_start": [3]}, {"text": [], "answer_start": []}]}
    return {**rows, **change}


def test_qa_validation_names_the_problem():
    v1, v2 = get_task("synth_qa"), get_task("synth_qa_v2")
    assert len(validate_split(Dataset.from_dict(_qa_rows()), v2, "train")) == 2
    with pytest.raises(DataError, match=r"without an answer.*need a version_2 task"):
        validate_split(Dataset.from_dict(_qa_rows()), v1, "train")
    with pytest.raises(DataError, match=r"missing column\(s\) \['answers'\]"):
        validate_split(Dataset.from_dict({k: v for k, v in _qa_rows().items() if k != "answers"}), v2, "train")
    with pytest.raises(DataError, match="ids must be unique"):
        validate_split(Dataset.from_dict(_qa_rows(id=["a", "a"])), v2, "train")
    bad = _qa_rows(answers=[{"text": ["yy"], "answer_start": [30]}, {"text": [], "answer_start": []}])
    with pytest.raises(DataError, match="outside its context"):
        validate_split(Dataset.from_dict(bad), v2, "train")


def test_qa_datamodule_batches_windows_with_labels_and_feature_rows():
    task = get_task("synth_qa_v2", synthetic={"n_train": 60, "n_eval": 20, "context_words": 40}, max_length=32,
                    doc_stride=8)
    dm = TaskDataModule(task, {STUDENT: synthetic_tokenizer()}, batch_size=8, eval_batch_size=8)
    dm.setup()
    train, val = dm.encoded["train"], dm.encoded["validation"]
    assert len(train) > 60 and train["row_id"] == list(range(len(train)))  # several windows per question
    assert set(train["example_index"]) == set(range(60)) and len(dm.raw["validation"]) == 20
    assert {"offset_mapping", "context_span", "example_index"} <= set(val.column_names)
    batch = next(iter(dm.split_loader("validation")))
    ids = batch["inputs"][STUDENT]["input_ids"]
    assert batch["labels"].shape == (8, 2) and torch.equal(batch["row_id"], torch.arange(8))
    assert torch.equal(batch["feature_row"], batch["row_id"]) and batch["example_index"].shape == (8,)
    assert int(batch["labels"].max()) < ids.shape[1] and ids.shape[1] <= task.max_length
    with pytest.raises(ValueError, match="one tokenizer view"):
        TaskDataModule(task, {STUDENT: synthetic_tokenizer(), "t": synthetic_tokenizer(7)}).setup()
