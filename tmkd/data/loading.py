"""Load a task's raw splits: from the hub by default, from local files under ``data.dir`` when given.

Every split is validated here (columns, labels, emptiness) so bad data fails before any training,
with an error that names the file, split or column at fault.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict

from tmkd.data.holdout import HOLDOUT_SPLIT, Holdout, split_train
from tmkd.data.kinds import KindDataError, get_kind
from tmkd.data.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

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


def _local_file(folder: Path, split: str) -> Path:
    for ext in LOCAL_FORMATS:
        candidate = folder / f"{split}{ext}"
        if candidate.is_file():
            return candidate
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise DataError(
        f"no file for split {split!r} in {folder} (looked for {split}{{{','.join(LOCAL_FORMATS)}}}); "
        f"present: {present or 'nothing (folder missing)'}"
    )


def local_split_files(task: TaskSpec, root: Path) -> dict[str, Path]:
    """The file each split of ``task`` is read from under the data folder ``root`` (what :func:`load_splits`
    reads; a run's identity fingerprints exactly these)."""
    folder = root / (task.local_path or task.name)
    files = {split: _local_file(folder, split) for split in task.eval_splits}
    if task.derived is not None:  # built from another task's split (tmkd.data.derived): that file is what is read
        source = get_task(task.derived.get("source", "squad"))
        files[task.train_split] = _local_file(root / (source.local_path or source.name),
                                              task.derived.get("source_split", source.train_split))
    else:
        files[task.train_split] = _local_file(folder, task.train_split)
    return files


def _has_no_rows(path: Path) -> bool:
    """Whether a file that ``datasets`` failed on is merely empty (its builders fail on empty files)."""
    try:
        if path.suffix == ".parquet":
            return pq.read_metadata(path).num_rows == 0
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        return len(lines) <= (1 if path.suffix == ".csv" else 0)  # a CSV header alone has no rows
    except Exception:
        return False


def _load_local(folder: Path, splits: list[str]) -> DatasetDict:
    out = {}
    for split in splits:
        path = _local_file(folder, split)
        try:
            loaded = datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files={split: str(path)})
        except Exception as err:  # datasets raises many types for a bad file; all mean "unreadable"
            if _has_no_rows(path):
                raise DataError(f"split {split!r} is empty: {path} has no rows") from err
            cause = err.__cause__ or err  # DatasetGenerationError hides the reason in its cause
            raise DataError(f"cannot read {path}: {type(cause).__name__}: {cause}") from err
        out[split] = loaded[split]
    return DatasetDict(out)


def _load_hub(task: TaskSpec, splits: list[str]) -> DatasetDict:
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


def load_splits(
    task: TaskSpec,
    data_dir: str | os.PathLike | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    holdout: Holdout | None = None,
) -> DatasetDict:
    """The task's train and eval splits, validated, capped, with a ``row_id`` column (0..n-1).

    ``row_id`` is each row's position in the capped split; soft-target caches are indexed by it.
    A train cap takes a seeded random subset (files can be sorted by label); eval caps take the head.

    With ``holdout`` only the train split is read: it is cut (:mod:`tmkd.data.holdout`) into train' and
    ``holdout``, which are returned instead of the train and eval splits. Caps apply after the cut: the train cap
    to train', the eval cap to ``holdout``, so capping never moves a row from one part to the other.
    """
    splits = [task.train_split] if holdout is not None else [task.train_split, *task.eval_splits]
    if holdout is not None and not task.train_labelled:
        raise DataError(f"{task.name}: data.holdout needs labelled train rows to score the held-out part, but the "
                        "task's train split is unlabelled (train_labelled=false); evaluate on its eval splits instead")
    if task.synthetic is not None:
        # with holdout on, the generated dev file keeps its usual name (it is written, never read)
        source = task if holdout is None else replace(task, eval_splits=("validation",))
        folder = get_kind(task.kind).materialise(source)
        raw = dict(_load_local(folder, splits))
    else:
        # a derived train split (e.g. QNLI pairs from SQuAD train) is checked against the eval splits: read them
        read = list(task.eval_splits) if task.derived is not None else splits
        root = resolve_data_dir(data_dir)
        raw = dict(_load_local(root / (task.local_path or task.name), read) if root is not None
                   else _load_hub(task, read))
        if task.derived is not None:
            from tmkd.data.derived import build_train_split

            raw[task.train_split] = build_train_split(task, data_dir, {s: raw[s] for s in task.eval_splits})
    validated = {}
    for split in splits:
        ds = raw[split]
        if not task.split_labelled(split) and task.label_column in ds.column_names:
            ds = ds.remove_columns(task.label_column)  # unlabelled text: nothing downstream can read a label
            log.info("%s/%s: label column %r ignored (train_labelled=false)", task.name, split, task.label_column)
        validated[split] = validate_split(ds, task, split)
    if holdout is not None:
        validated[task.train_split], validated[HOLDOUT_SPLIT] = split_train(validated[task.train_split], task, holdout)
        log.info("%s: held out %d of %d train rows (%s); the dev set is not loaded", task.name,
                 len(validated[HOLDOUT_SPLIT]), len(validated[HOLDOUT_SPLIT]) + len(validated[task.train_split]),
                 holdout.describe())
    out = {}
    for split, ds in validated.items():
        cap = max_train_samples if split == task.train_split else max_eval_samples
        if cap is not None:
            if cap <= 0:
                raise DataError(f"sample caps must be positive, got {cap} for {task.name}/{split}")
            if cap < len(ds):
                ds = ds.shuffle(seed=seed).select(range(cap)) if split == task.train_split else ds.select(range(cap))
        if "row_id" in ds.column_names:
            ds = ds.remove_columns("row_id")
        out[split] = ds.add_column("row_id", list(range(len(ds))))
        log.info("%s/%s: %d rows", task.name, split, len(ds))
    return DatasetDict(out)
