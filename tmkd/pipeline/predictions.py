"""Per-example dev predictions of a classification run: ``<run folder>/predictions/<split>.jsonl``.

One JSON object per dev example, in ``row`` order::

    {"row": 0, "idx": 0, "label": 1, "pred": 1, "probs": [0.0312, 0.9688]}

``row`` is the example's position in the (capped) eval split, the same in every run over the same data, so two
runs' files pair row by row (``tmkd.compare``); ``idx`` is the dataset's own example id where the split has one
(GLUE); ``probs`` are the softmax of the logits, ``pred`` their argmax (computed on the logits, as the metrics are).
The files are the best checkpoint's, i.e. those of the scores metrics.json reports. JSON lines rather than
Parquet: a few hundred KB per split, readable with ``head``, and nothing but the standard library to read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tmkd.atomic import atomic_file

FOLDER = "predictions"
COLUMNS = ("row", "label", "pred", "probs")


def write_predictions(out: Path, tables: Mapping[str, Mapping[str, np.ndarray]],
                      prefix: Callable[[str], str]) -> dict[str, dict[str, str]]:
    """Write each split's table atomically; returns metrics.json's ``predictions`` entry
    (``split -> {"file": relative path, "prefix": its metrics' prefix, e.g. "val"}``)."""
    written: dict[str, dict[str, str]] = {}
    for split, table in tables.items():
        path = Path(out) / FOLDER / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        idx = table.get("idx")
        probs = np.round(np.asarray(table["probs"], dtype=np.float64), 6)
        with atomic_file(path) as handle:
            for i, (row, label, pred) in enumerate(zip(table["row"], table["label"], table["pred"], strict=True)):
                record: dict[str, Any] = {"row": int(row)}
                if idx is not None:
                    record["idx"] = int(idx[i])
                record.update(label=int(label), pred=int(pred), probs=probs[i].tolist())
                handle.write((json.dumps(record) + "\n").encode())
        written[split] = {"file": f"{FOLDER}/{split}.jsonl", "prefix": prefix(split)}
    return written


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """A predictions file as arrays (``row``, ``label``, ``pred``, ``probs`` and ``idx`` if every line has one);
    errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not JSON ({err})") from None
            missing = [c for c in COLUMNS if c not in record]
            if missing:
                raise ValueError(f"{path}:{number}: missing field(s) {missing}; a line holds {list(COLUMNS)}")
            records.append(record)
    if not records:
        raise ValueError(f"predictions file {path} is empty")
    table = {c: np.asarray([r[c] for r in records], dtype=np.int64) for c in ("row", "label", "pred")}
    widths = {len(r["probs"]) for r in records}
    if len(widths) != 1:
        raise ValueError(f"{path}: lines have different numbers of class probabilities {sorted(widths)}")
    table["probs"] = np.asarray([r["probs"] for r in records], dtype=np.float64)
    if all("idx" in r for r in records):
        table["idx"] = np.asarray([r["idx"] for r in records], dtype=np.int64)
    return table
