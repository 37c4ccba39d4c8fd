"""A run folder's manifest: the single record of what the folder holds and whether it can be reused.

``manifest.json`` carries the hash of the config that determines the run's result (paths and logging
excluded), the run's status, its best checkpoint and metrics, and timestamps. The planner reuses a
folder only when its manifest says ``done`` under the same hash.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from tmkd.atomic import atomic_file

MANIFEST = "manifest.json"
STATUSES = ("running", "done", "failed", "interrupted")

# Config keys that do not change what a run learns: where it writes, how it logs, how many processes
# share the work, how fast evaluation batches go. Everything else is part of the run's identity.
VOLATILE_KEYS = (
    "paths", "logger", "run_name", "experiment_name", "checkpoint", "optimized_metric", "plan", "stage",
    "stages", "node_overrides", "report", "threads", "data.dir", "data.num_workers", "data.eval_batch_size",
    "distill.cache", "distill.cache_dir", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    "trainer.enable_model_summary", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "trainer.accelerator", "adapter.cache_dir",
)


# Options added after runs existed, as (node, leaf): the node is left out of the identity while the leaf is null
# (the option is off), so adding them did not change the hash, and force a rerun, of every earlier run.
OFF_WHEN_NULL = (("data.holdout", "fraction"),)


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved run config that determines its result (a deep copy without VOLATILE_KEYS, nor
    options that are off: OFF_WHEN_NULL)."""
    out = json.loads(json.dumps(config, default=str))
    for dotted, leaf in OFF_WHEN_NULL:
        parent, name = _parent(out, dotted)
        if isinstance(parent, dict) and isinstance(parent.get(name), dict) and parent[name].get(leaf) is None:
            parent.pop(name)
    for dotted in VOLATILE_KEYS:
        parent, name = _parent(out, dotted)
        if isinstance(parent, dict):
            parent.pop(name, None)
    return out


def _parent(tree: dict[str, Any], dotted: str) -> tuple[Any, str]:
    """(the node holding ``dotted``'s last key, or None where the path breaks off; that key)."""
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    return node, leaf


def config_hash(ident: dict[str, Any]) -> str:
    payload = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is none (a damaged one reads as none: the run is redone)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write(folder: Path, data: dict[str, Any]) -> None:
    """Atomic write (temp file + rename): a crash never leaves half a manifest behind."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / MANIFEST) as handle:
        handle.write((json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())


def update(folder: Path, **changes: Any) -> dict[str, Any]:
    data = {**(read(folder) or {}), **changes}
    write(folder, data)
    return data
