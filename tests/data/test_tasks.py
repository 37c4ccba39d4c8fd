"""Task registry: lookup errors, eval-split prefixes, config overrides."""

import pytest

from tmkd.data import TASKS, get_task

EXPECTED = {"rte", "qnli", "mnli", "snli", "sst2", "synth_pair", "synth_nli"}


def test_registry_holds_the_builtin_tasks():
    assert set(TASKS.names()) >= EXPECTED


def test_unknown_task_error_lists_valid_names():
    with pytest.raises(KeyError) as info:
        get_task("rtee")
    message = str(info.value)
    assert "'rtee'" in message
    for name in EXPECTED:
        assert name in message


def test_mnli_has_two_eval_splits_with_distinct_prefixes():
    mnli = get_task("mnli")
    assert mnli.eval_splits == ("validation_matched", "validation_mismatched")
    assert mnli.split_prefix("validation_matched") == "val"
    assert mnli.split_prefix("validation_mismatched") == "val_mismatched"
    assert mnli.num_labels == 3
    assert mnli.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}


def test_single_eval_split_is_val():
    rte = get_task("rte")
    assert rte.eval_splits == ("validation",)
    assert rte.split_prefix("validation") == "val"
    assert rte.label_names == ("entailment", "not_entailment")


def test_overrides_apply_none_keeps_default_and_lists_become_tuples():
    rte = get_task("rte", max_length=64, label_names=None, text_columns=["a", "b"])
    assert rte.max_length == 64
    assert rte.label_names == ("entailment", "not_entailment")
    assert rte.text_columns == ("a", "b")
    assert get_task("rte").max_length == 128  # the registered spec is untouched


def test_synthetic_override_merges_with_registered_options():
    task = get_task("synth_pair", synthetic={"n_train": 10})
    assert task.synthetic["n_train"] == 10
    assert task.synthetic["labels"] == 2 and task.synthetic["n_eval"] == 500


def test_unknown_task_field_is_an_error_listing_valid_fields():
    with pytest.raises(ValueError, match=r"unknown task field.*max_lenght.*valid:.*max_length"):
        get_task("rte", max_lenght=3)
