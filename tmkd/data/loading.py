"""Load a task's splits: from the hub by default, from local files under ``data.dir`` when given.

Every split is validated (:mod:`tmkd.data.sources`: columns, labels, emptiness) so bad data fails before any
training, with an error that names the file, split or column at fault; then held out, capped and numbered here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from tmkd.data.derived import build_train_split
from tmkd.data.holdout import HOLDOUT_SPLIT, Holdout, split_train
from tmkd.data.kinds import get_kind
from tmkd.data.sources import (
    DataError,
    from_memory,
    load_hub,
    load_local,
    local_file,
    resolve_data_dir,
    validate_split,
)
from tmkd.data.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)


def local_split_files(task: TaskSpec, root: Path) -> dict[str, Path]:
    """The file each split of ``task`` is read from under the data folder ``root`` (what :func:`load_splits`
    reads; a run's identity fingerprints exactly these)."""
    folder = root / (task.local_path or task.name)
    files = {split: local_file(folder, split) for split in task.eval_splits}
    if task.derived is not None:  # built from another task's split (tmkd.data.derived): that file is what is read
        source = get_task(task.derived.get("source", "squad"))
        files[task.train_split] = local_file(root / (source.local_path or source.name),
                                             task.derived.get("source_split", source.train_split))
    else:
        files[task.train_split] = local_file(folder, task.train_split)
    return files


def load_splits(
    task: TaskSpec,
    data_dir: str | os.PathLike | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    holdout: Holdout | None = None,
    in_memory: Mapping[str, Any] | None = None,
) -> DatasetDict:
    """The task's train and eval splits, validated, capped, with a ``row_id`` column (0..n-1).

    ``row_id`` is each row's position in the capped split; soft-target caches are indexed by it.
    A train cap takes a seeded random subset (files can be sorted by label); eval caps take the head.

    With ``holdout`` only the train split is read: it is cut (:mod:`tmkd.data.holdout`) into train' and
    ``holdout``, which are returned instead of the train and eval splits. Caps apply after the cut: the train cap
    to train', the eval cap to ``holdout``, so capping never moves a row from one part to the other.

    ``in_memory`` (split name -> ``datasets.Dataset`` / pandas ``DataFrame`` / dict of lists; the Python API) are read
    instead of files, the hub or a synthetic task's generator, and checked, held out and capped the same way.
    """
    splits = [task.train_split] if holdout is not None else [task.train_split, *task.eval_splits]
    if holdout is not None and not task.train_labelled:
        raise DataError(f"{task.name}: data.holdout needs labelled train rows to score the held-out part, but the "
                        "task's train split is unlabelled (train_labelled=false); evaluate on its eval splits instead")
    if in_memory is not None:
        raw = dict(from_memory(in_memory, splits, task))
    elif task.synthetic is not None:
        # with holdout on, the generated dev file keeps its usual name (it is written, never read)
        source = task if holdout is None else replace(task, eval_splits=("validation",))
        folder = get_kind(task.kind).materialise(source)
        raw = dict(load_local(folder, splits))
    else:
        # a derived train split (e.g. QNLI pairs from SQuAD train) is checked against the eval splits: read them
        read = list(task.eval_splits) if task.derived is not None else splits
        root = resolve_data_dir(data_dir)
        raw = dict(load_local(root / (task.local_path or task.name), read) if root is not None
                   else load_hub(task, read))
        if task.derived is not None:
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


def row_fingerprints(ds: Dataset, task: TaskSpec) -> list[int]:
    """A 64-bit content hash of each row's texts (column names included), in row order: what a model reads of the
    row, so a row has the same print in every split, task or cut that holds it (labels are not part of it)."""
    columns = [ds[col] for col in task.text_columns]
    names = [col.encode() + b"\0" for col in task.text_columns]
    prints = []
    for values in zip(*columns, strict=True):
        digest = hashlib.sha256()
        for name, value in zip(names, values, strict=True):
            digest.update(name + str(value).encode() + b"\x1f")
        prints.append(int.from_bytes(digest.digest()[:8], "little", signed=True))
    return prints


def split_fingerprint(ds: Dataset, task: TaskSpec, labelled: bool = True) -> str:
    """Content hash of the texts and labels in row order (``datasets`` fingerprints of local files
    follow paths and times, not content, so they are not enough to rule out stale targets).

    ``labelled=False`` (an unlabelled train split): the texts only, so the targets do not depend on a label column
    (there is none: the loader drops it)."""
    digest = hashlib.sha256()
    for col in (*task.text_columns, *((task.label_column,) if labelled else ())):
        digest.update(col.encode() + b"\0")
        for value in ds[col]:
            digest.update(str(value).encode() + b"\x1f")
    return digest.hexdigest()
