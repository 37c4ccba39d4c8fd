"""A seeded held-out part of a task's train split: choose settings (epochs, KD temperature, alpha, aggregator)
without looking at the dev set.

With ``data.holdout.fraction`` set, the validated train split is cut once into train' (the rest) and a split named
``holdout`` that *replaces* the task's eval splits: validation, checkpoint selection and the reported ``val/*``
metrics are all on it, and the dev files are never read. The cut depends only on the train rows, the fraction and
``holdout.seed``, never on the run's ``seed``, so every point of a grid or an Optuna study sees the same rows.

How rows are drawn (:func:`group_by`):

- classification: stratified by label (each label keeps its share of the held-out part);
- extractive QA: by article (``title``) when the split has several titles, else by ``context``; either way every
  question of one paragraph is on the same side, so a held-out answer was never read in training;
- any other kind: uniformly at random.

Written with numpy rather than ``datasets.Dataset.train_test_split`` (stratification needs a ``ClassLabel`` column
and it cannot keep groups together) or scikit-learn (not a dependency; its group splitter cannot hit a row fraction).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from datasets import Dataset

from tmkd.data.tasks import TaskSpec

HOLDOUT_SPLIT = "holdout"
KEYS = ("fraction", "seed")


class HoldoutError(ValueError):
    """A bad ``data.holdout`` setting, or a train split that cannot be cut as asked."""


@dataclass(frozen=True)
class Holdout:
    """``fraction`` of the train rows, drawn with ``seed`` (not the run's seed), held out for evaluation."""

    fraction: float
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not 0 < self.fraction < 1:
            raise HoldoutError(f"data.holdout.fraction must be a number in (0, 1), got {self.fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise HoldoutError(f"data.holdout.seed must be an integer, got {self.seed!r}")

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> Holdout | None:
        """``None`` (off) for a missing node or ``fraction: null``; else the validated setting."""
        if node is None:
            return None
        if not isinstance(node, Mapping):
            raise HoldoutError(f"data.holdout must be a mapping {{fraction, seed}} or null, got {node!r}")
        unknown = sorted(set(node) - set(KEYS))
        if unknown:
            raise HoldoutError(f"unknown data.holdout key(s) {unknown}; valid: {list(KEYS)}")
        if node.get("fraction") is None:
            return None
        seed = node.get("seed")
        return cls(fraction=node["fraction"], seed=0 if seed is None else seed)

    def describe(self) -> str:
        """The words reports and model cards use for where the scores come from."""
        return f"held-out part of train ({self.fraction * 100:g}%, seed {self.seed}), not the dev set"


def holdout_task(task: TaskSpec, holdout: Holdout | None) -> TaskSpec:
    """The task as a run with ``holdout`` sees it: its only eval split is ``holdout`` (logged as ``val/*``)."""
    if holdout is None:
        return task
    if task.train_split == HOLDOUT_SPLIT:
        raise HoldoutError(f"task {task.name!r}: train split is named {HOLDOUT_SPLIT!r}, which data.holdout needs")
    return replace(task, eval_splits=(HOLDOUT_SPLIT,))


def group_by(ds: Dataset, task: TaskSpec) -> str | None:
    """Which column keeps rows together or stratifies them: ``title`` / ``context`` (QA), the label column
    (classification), or ``None`` (plain random draw)."""
    if task.kind == "qa":
        if "title" in ds.column_names and len(set(ds["title"])) > 1:
            return "title"
        return "context"
    if task.kind == "classification" and task.label_column in ds.column_names:
        return task.label_column
    return None


def holdout_rows(ds: Dataset, task: TaskSpec, holdout: Holdout) -> tuple[list[int], list[int]]:
    """(train' rows, held-out rows): disjoint, together every row of ``ds``, each in ascending order."""
    n = len(ds)
    rng = np.random.default_rng(holdout.seed)
    column = group_by(ds, task)
    if column is None:
        held = rng.permutation(n)[:round(holdout.fraction * n)]
    elif task.kind == "qa":
        held = _whole_groups(ds[column], holdout.fraction, rng)
    else:
        held = _stratified(np.asarray(ds[column]), holdout.fraction, rng)
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    kept, out = np.flatnonzero(~mask).tolist(), np.flatnonzero(mask).tolist()
    if not kept or not out:
        raise HoldoutError(f"{task.name}/{task.train_split}: holding out {holdout.fraction} of {n} rows "
                           f"(by {column or 'row'}) leaves {len(kept)} to train on and {len(out)} to evaluate; "
                           "both must be non-empty: change data.holdout.fraction")
    return kept, out


def _stratified(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``round(fraction * count)`` rows of every label, labels in sorted order (so the draw is reproducible)."""
    picked = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        picked.append(rng.permutation(rows)[:round(fraction * len(rows))])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=int)


def _whole_groups(keys: list[Any], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Whole groups in a seeded order until at least ``fraction`` of the rows are held out (never every group)."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    members = list(groups.values())  # first-appearance order: fixed by the file, so the draw is reproducible
    target = round(fraction * len(keys))
    picked: list[int] = []
    for g in rng.permutation(len(members))[:-1]:
        if len(picked) >= target:
            break
        picked.extend(members[g])
    return np.asarray(picked, dtype=int)


def split_train(ds: Dataset, task: TaskSpec, holdout: Holdout) -> tuple[Dataset, Dataset]:
    """(train', held-out) datasets of a validated train split (rows keep their file order)."""
    kept, out = holdout_rows(ds, task, holdout)
    return ds.select(kept), ds.select(out)
