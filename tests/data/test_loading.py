"""Loading raw splits: local files (Parquet / JSON lines / CSV), the hub path, caps and validation errors."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import datasets
import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from tmkd.data import DataError, get_task, load_splits, sources

RTE = get_task("rte")


def rte_rows(n: int, start: int = 0) -> list[dict]:
    return [{"sentence1": f"premise number {i}", "sentence2": f"hypothesis {i}", "label": i % 2, "idx": i}
            for i in range(start, start + n)]


def write_split(folder: Path, split: str, rows: list[dict] | pd.DataFrame, fmt: str = "parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    path = folder / f"{split}.{fmt}"
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")))
    elif fmt == "csv":
        df.to_csv(path, index=False)
    else:
        raise ValueError(fmt)
    return path


def write_rte(root: Path, n_train: int = 6, n_val: int = 4, fmt: str = "parquet") -> Path:
    """A hub-style layout: ``<root>/glue/rte/{train,validation}.<fmt>``."""
    folder = root / "glue" / "rte"
    write_split(folder, "train", rte_rows(n_train), fmt)
    write_split(folder, "validation", rte_rows(n_val, start=100), fmt)
    return root


# --- local files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_local_files_load_in_every_format(tmp_path, fmt):
    root = write_rte(tmp_path, n_train=6, n_val=4, fmt=fmt)
    out = load_splits(RTE, data_dir=root)
    assert set(out) == {"train", "validation"}
    assert len(out["train"]) == 6 and len(out["validation"]) == 4
    assert out["validation"]["sentence1"][0] == "premise number 100"
    assert out["train"]["label"] == [0, 1, 0, 1, 0, 1]
    assert out["train"]["row_id"] == list(range(6))
    assert out["validation"]["row_id"] == list(range(4))


def test_data_dir_argument_wins_over_env(tmp_path, monkeypatch):
    from_arg = write_rte(tmp_path / "arg", n_train=3)
    from_env = write_rte(tmp_path / "env", n_train=5)
    monkeypatch.setenv("TMKD_DATA_DIR", str(from_env))
    assert len(load_splits(RTE, data_dir=from_arg)["train"]) == 3
    assert len(load_splits(RTE, data_dir=None)["train"]) == 5  # env used when data.dir is unset
    assert len(load_splits(RTE, data_dir="")["train"]) == 5
    assert sources.resolve_data_dir(str(from_arg)) == from_arg


def test_no_data_dir_and_no_env_means_hub(monkeypatch):
    monkeypatch.delenv("TMKD_DATA_DIR", raising=False)
    assert sources.resolve_data_dir(None) is None


def test_data_dir_that_is_not_a_directory_is_an_error(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_splits(RTE, data_dir=tmp_path / "nowhere")


def test_hub_path_calls_load_dataset_with_the_task_ids(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, *args, **kwargs):
        calls.append((path, name))
        return DatasetDict({
            "train": Dataset.from_list(rte_rows(5)),
            "validation": Dataset.from_list(rte_rows(3, start=50)),
            "test": Dataset.from_list([{**r, "label": -1} for r in rte_rows(2)]),
        })

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = load_splits(RTE)
    assert calls == [("nyu-mll/glue", "rte")]
    assert set(out) == {"train", "validation"}  # only the task's splits; the unlabelled test split is ignored
    assert len(out["train"]) == 5 and out["validation"]["row_id"] == [0, 1, 2]


def test_hub_dataset_missing_a_split_is_an_error(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *a, **k: DatasetDict({"train": Dataset.from_list(rte_rows(3))}))
    with pytest.raises(DataError, match=r"no split\(s\) \['validation'\].*\['train'\]"):
        load_splits(RTE)


def test_task_without_hub_id_needs_a_data_dir():
    with pytest.raises(DataError, match=r"no hub dataset.*data\.dir"):
        load_splits(dataclasses.replace(RTE, hub_id=None))


# --- caps ------------------------------------------------------------------------------------------


def test_train_cap_is_a_seeded_subset_with_fresh_row_ids(tmp_path):
    root = write_rte(tmp_path, n_train=40, n_val=10)
    a = load_splits(RTE, root, max_train_samples=7, max_eval_samples=4, seed=1)
    b = load_splits(RTE, root, max_train_samples=7, max_eval_samples=4, seed=1)
    c = load_splits(RTE, root, max_train_samples=7, max_eval_samples=4, seed=2)
    assert len(a["train"]) == 7 and a["train"]["row_id"] == list(range(7))
    assert a["train"]["idx"] == b["train"]["idx"]  # same seed, same subset
    assert a["train"]["idx"] != c["train"]["idx"]  # another seed, another subset
    assert a["train"]["idx"] != list(range(7))  # a random subset, not the head (files can be sorted)
    assert len(set(a["train"]["idx"])) == 7
    assert a["validation"]["idx"] == [100, 101, 102, 103]  # eval caps take the head
    assert a["validation"]["row_id"] == [0, 1, 2, 3]


def test_cap_above_size_keeps_everything_and_non_positive_cap_is_an_error(tmp_path):
    root = write_rte(tmp_path, n_train=5, n_val=3)
    out = load_splits(RTE, root, max_train_samples=100, max_eval_samples=100)
    assert len(out["train"]) == 5 and len(out["validation"]) == 3
    with pytest.raises(DataError, match="positive"):
        load_splits(RTE, root, max_train_samples=0)


def test_existing_row_id_column_is_replaced(tmp_path):
    rows = [{**r, "row_id": 99} for r in rte_rows(4)]
    folder = tmp_path / "glue" / "rte"
    write_split(folder, "train", rows)
    write_split(folder, "validation", rows)
    assert load_splits(RTE, tmp_path)["train"]["row_id"] == [0, 1, 2, 3]


# --- errors ------------------------------------------------------------------------------------------


def test_missing_split_file_names_the_split_and_what_is_present(tmp_path):
    folder = tmp_path / "glue" / "rte"
    write_split(folder, "train", rte_rows(3))
    write_split(folder, "dev", rte_rows(3))
    with pytest.raises(DataError) as info:
        load_splits(RTE, tmp_path)
    message = str(info.value)
    assert "'validation'" in message
    assert "dev.parquet" in message and "train.parquet" in message


def test_missing_task_folder_says_so(tmp_path):
    (tmp_path / "glue").mkdir()
    with pytest.raises(DataError, match=r"'train'.*folder missing"):
        load_splits(RTE, tmp_path)


def test_missing_column_is_named(tmp_path):
    folder = tmp_path / "glue" / "rte"
    write_split(folder, "train", rte_rows(3))
    write_split(folder, "validation", [{"sentence1": "a", "hypothesis": "b", "label": 0}])
    with pytest.raises(DataError) as info:
        load_splits(RTE, tmp_path)
    assert "rte/validation" in str(info.value) and "['sentence2']" in str(info.value)


def test_label_outside_the_label_set_is_named(tmp_path):
    folder = tmp_path / "glue" / "rte"
    write_split(folder, "train", [*rte_rows(3), {"sentence1": "x", "sentence2": "y", "label": 7, "idx": 3}])
    write_split(folder, "validation", rte_rows(2))
    with pytest.raises(DataError, match=r"rte/train: label value\(s\) \[7\] outside the label set"):
        load_splits(RTE, tmp_path)


def test_string_labels_are_reported_not_crashed_on(tmp_path):
    folder = tmp_path / "glue" / "rte"
    rows = [{**r, "label": "entailment"} for r in rte_rows(2)]
    write_split(folder, "train", rows, "csv")
    write_split(folder, "validation", rows, "csv")
    with pytest.raises(DataError, match="'entailment'"):
        load_splits(RTE, tmp_path)


def test_missing_and_out_of_range_labels_together_give_a_data_error(tmp_path):
    # A CSV with an empty label cell and a bad label: the report must not crash comparing None with 7.
    folder = tmp_path / "glue" / "rte"
    (folder).mkdir(parents=True)
    text = "sentence1,sentence2,label\na,b,0\nc,d,\ne,f,7\n"
    (folder / "train.csv").write_text(text)
    (folder / "validation.csv").write_text(text)
    with pytest.raises(DataError) as info:
        load_splits(RTE, tmp_path)
    assert "None" in str(info.value) and "7" in str(info.value)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_empty_split_is_an_error_not_an_unreadable_file(tmp_path, fmt):
    folder = tmp_path / "glue" / "rte"
    write_split(folder, "train", rte_rows(3))
    write_split(folder, "validation", pd.DataFrame(rte_rows(3)).iloc[:0], fmt)  # csv: header only
    with pytest.raises(DataError, match=rf"'validation' is empty: .*validation\.{fmt} has no rows"):
        load_splits(RTE, tmp_path)


def test_unreadable_file_is_a_data_error_naming_it_and_the_reason(tmp_path):
    folder = tmp_path / "glue" / "rte"
    write_split(folder, "train", rte_rows(3))
    (folder / "validation.parquet").write_bytes(b"this is not parquet\x00\x01\x02" * 10)
    with pytest.raises(DataError, match=r"cannot read .*validation\.parquet: ArrowInvalid"):
        load_splits(RTE, tmp_path)


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("validation.jsonl", '{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": \n', "JSON parse error"),
    ("validation.csv", "sentence1,sentence2,label\na,b,0\nc,d,1,2,3\n", "Expected 3 fields"),
])
def test_malformed_text_file_error_gives_the_parsers_reason(tmp_path, name, text, reason):
    folder = tmp_path / "glue" / "rte"
    write_split(folder, "train", rte_rows(3))
    (folder / name).write_text(text)
    with pytest.raises(DataError, match=rf"cannot read .*{re.escape(name)}: .*{reason}"):
        load_splits(RTE, tmp_path)


def test_snli_style_unlabelled_rows_are_dropped(tmp_path):
    snli = get_task("snli")
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": lab} for i, lab in enumerate([0, -1, 2, 1, -1])]
    write_split(tmp_path / "snli", "train", rows)
    write_split(tmp_path / "snli", "validation", rows[:2])
    out = load_splits(snli, tmp_path)
    assert out["train"]["label"] == [0, 2, 1]
    assert out["train"]["premise"] == ["p0", "p2", "p3"]
    assert out["train"]["row_id"] == [0, 1, 2]
    assert out["validation"]["label"] == [0]


def test_split_of_only_unlabelled_rows_is_empty(tmp_path):
    snli = get_task("snli")
    rows = [{"premise": "p", "hypothesis": "h", "label": -1}]
    write_split(tmp_path / "snli", "train", [{"premise": "p", "hypothesis": "h", "label": 0}])
    write_split(tmp_path / "snli", "validation", rows)
    with pytest.raises(DataError, match="snli/validation is empty"):
        load_splits(snli, tmp_path)


def test_minus_one_is_not_dropped_where_the_task_does_not_say_so(tmp_path):
    folder = tmp_path / "glue" / "rte"
    write_split(folder, "train", [*rte_rows(2), {"sentence1": "x", "sentence2": "y", "label": -1, "idx": 9}])
    write_split(folder, "validation", rte_rows(2))
    with pytest.raises(DataError, match=r"\[-1\]"):
        load_splits(RTE, tmp_path)


def test_mnli_loads_both_eval_splits(tmp_path):
    mnli = get_task("mnli")
    folder = tmp_path / "glue" / "mnli"
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(6)]
    for split in ("train", "validation_matched", "validation_mismatched"):
        write_split(folder, split, rows)
    out = load_splits(mnli, tmp_path, max_eval_samples=2)
    assert list(out) == ["train", "validation_matched", "validation_mismatched"]
    assert len(out["validation_mismatched"]) == 2


# --- in memory (the Python API) ------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dataframe", "dataset", "dict"])
def test_in_memory_splits_load_as_the_same_rows_in_files(tmp_path, form):
    frames = {"train": pd.DataFrame(rte_rows(8)), "validation": pd.DataFrame(rte_rows(4, start=100))}
    convert = {"dataframe": lambda df: df, "dataset": Dataset.from_pandas, "dict": lambda df: df.to_dict("list")}
    files = load_splits(RTE, write_rte(tmp_path, 8, 4), max_train_samples=5, seed=3)
    memory = load_splits(RTE, None, max_train_samples=5, seed=3,
                         in_memory={s: convert[form](df) for s, df in frames.items()})
    for split in files:
        assert memory[split].to_list() == files[split].to_list()


def test_in_memory_splits_get_the_same_checks_as_files(tmp_path):
    train, dev = pd.DataFrame(rte_rows(3)), pd.DataFrame(rte_rows(2, start=100))
    with pytest.raises(DataError, match=r"rte/validation: missing column\(s\) \['sentence2'\]"):
        load_splits(RTE, in_memory={"train": train, "validation": dev.drop(columns="sentence2")})
    with pytest.raises(DataError, match=r"rte/train: label value\(s\) \[7\] outside the label set"):
        load_splits(RTE, in_memory={"train": train.assign(label=7), "validation": dev})
    with pytest.raises(DataError, match=r"needs split\(s\) \['validation'\] in memory; given: \['train'\]"):
        load_splits(RTE, in_memory={"train": train})
    with pytest.raises(DataError, match="rte/train: the dict of columns is not a table"):
        load_splits(RTE, in_memory={"train": {"sentence1": ["a", "b"], "sentence2": ["c"], "label": [0, 1]},
                                    "validation": dev})
