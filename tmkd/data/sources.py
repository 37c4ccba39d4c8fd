"""Read one task's raw splits, from local files under ``data.dir`` or from the hub, and validate them.

The bottom of data loading: :mod:`tmkd.data.loading` (caps, holdout, ``row_id``) and :mod:`tmkd.data.derived`
(train splits built from another task's data) both read through here, so neither needs the other's internals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict

from tmkd.data.kinds import KindDataError, get_kind
from tmkd.data.tasks import TaskSpec

# Extension -> `datasets` packaged builder. Parquet first: it is what ../shared/data ships.
LOCAL_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


class DataError(ValueError):
    """A task's data is missing, unreadable or inconsistent with its task spec."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """``data.dir`` wins, then env ``TMKD_DATA_DIR``; ``None`` means "load from the hub"."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get("TMKD_DATA_DIR") or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"data.dir {str(path)!r} is not a directory")
    return path


def local_file(folder: Path, split: str) -> Path:
    """The file ``split`` is read from in ``folder``: ``<split>.<ext>``, the first extension of LOCAL_FORMATS."""
    for ext in LOCAL_FORMATS:
        candidate = folder / f"{split}{ext}"
        if candidate.is_file():
            return candidate
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise DataError(
        f"no file for split {split!r} in {folder} (looked for {split}{{{','.join(LOCAL_FORMATS)}}}); "
        f"present: {present or 'nothing (folder missing)'}"
    )


def _has_no_rows(path: Path) -> bool:
    """Whether a file that ``datasets`` failed on is merely empty (its builders fail on empty files)."""
    try:
        if path.suffix == ".parquet":
            return pq.read_metadata(path).num_rows == 0
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        return len(lines) <= (1 if path.suffix == ".csv" else 0)  # a CSV header alone has no rows
    except Exception:
        return False


def load_local(folder: Path, splits: list[str]) -> DatasetDict:
    out = {}
    for split in splits:
        path = local_file(folder, split)
        try:
            loaded = datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files={split: str(path)})
        except Exception as err:  # datasets raises many types for a bad file; all mean "unreadable"
            if _has_no_rows(path):
                raise DataError(f"split {split!r} is empty: {path} has no rows") from err
            cause = err.__cause__ or err  # DatasetGenerationError hides the reason in its cause
            raise DataError(f"cannot read {path}: {type(cause).__name__}: {cause}") from err
        out[split] = loaded[split]
    return DatasetDict(out)


def from_memory(splits: Mapping[str, Any], wanted: list[str], task: TaskSpec) -> DatasetDict:
    """In-memory splits (a ``datasets.Dataset``, a pandas ``DataFrame`` or a dict of equal-length lists each) as a
    :class:`DatasetDict` of the ``wanted`` splits, which are then checked exactly as files are (:func:`validate_split`).
    A split is a view of the caller's rows: nothing is written."""
    missing = [s for s in wanted if s not in splits]
    if missing:
        raise DataError(f"task {task.name!r} needs split(s) {missing} in memory; given: {sorted(splits) or 'none'}")
    out = {}
    for split in wanted:
        rows = splits[split]
        if isinstance(rows, Dataset):
            out[split] = rows
        elif isinstance(rows, Mapping):
            try:
                out[split] = Dataset.from_dict(dict(rows))
            except Exception as err:  # pyarrow's errors for ragged or mixed columns; all mean "not a table"
                raise DataError(f"{task.name}/{split}: the dict of columns is not a table ({type(err).__name__}: "
                                f"{err})") from err
        elif type(rows).__name__ == "DataFrame" and hasattr(rows, "to_dict"):  # pandas, imported only when given
            out[split] = Dataset.from_pandas(rows, preserve_index=False)
        else:
            raise DataError(f"{task.name}/{split}: in-memory data must be a datasets.Dataset, a pandas DataFrame or a "
                            f"dict of column lists, got {type(rows).__name__}")
    return DatasetDict(out)


def load_hub(task: TaskSpec, splits: list[str]) -> DatasetDict:
    if task.hub_id is None:
        raise DataError(f"task {task.name!r} has no hub dataset; set data.dir to a folder with its files")
    loaded = datasets.load_dataset(task.hub_id, task.hub_config)
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise DataError(f"{task.hub_id}/{task.hub_config} has no split(s) {missing}; it has {list(loaded)}")
    return DatasetDict({s: loaded[s] for s in splits})


def validate_split(ds: Dataset, task: TaskSpec, split: str) -> Dataset:
    """Check a split against its task kind (columns, labels / answers); drop the task's unlabelled rows."""
    try:
        return get_kind(task.kind).validate_split(ds, task, split)
    except KindDataError as err:
        raise DataError(str(err)) from err
