"""Finding runs, grouping them into methods and seeds, and loading their paired dev predictions.

Grouping rule (``group="config"``): runs whose configs are equal except for ``seed`` are seeds of one method.
"Config" is the run's identity (:func:`tmkd.pipeline.manifest.identity`: what determines its result), where a
reference to another run's folder (a teacher, an ``init_from``) stands for *that* run's method, so a student trained
with ``seed=1`` from teachers that were also trained with ``seed=1`` is a seed of the same method as its ``seed=2``
twin. A plan that runs one run per seed therefore gives one method with one run per seed. ``group="experiment"``
groups by experiment and run name alone (configs may differ in anything).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from tmkd.pipeline import manifest
from tmkd.pipeline.plan import base_name
from tmkd.pipeline.predictions import read_predictions

GROUPS = ("config", "experiment")


class CompareError(ValueError):
    """Runs that cannot be compared; the message names the runs and the problem."""


@dataclass
class RunInfo:
    folder: Path
    experiment: str
    name: str
    seed: int
    config: dict[str, Any]
    metrics: dict[str, Any]
    key: str = ""  # the method's grouping key
    method: str = ""  # the method's label
    ident: dict[str, Any] = field(default_factory=dict)  # identity without seed, run references replaced


def is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file() and (folder / "metrics.json").is_file() \
        and not (folder / "plan.json").is_file()


def discover(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Run folders under the given paths, and notes on what was skipped.

    A path is a run folder (config.yaml + metrics.json), an experiment folder (plan.json: every run of its final
    stage, see :func:`final_runs`), or any folder above run folders (e.g. ``checkpoints/runs/<experiment>``: every
    run below, 3 levels deep). Runs whose manifest is not ``done`` are skipped (noted).
    """
    found: list[Path] = []
    notes: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise CompareError(f"{path} is not a folder")
        if is_run(path):
            found.append(path)
        elif (path / "plan.json").is_file():
            found.extend(final_runs(path))
        else:
            below = sorted(p.parent for depth in ("*", "*/*", "*/*/*") for p in path.glob(f"{depth}/metrics.json")
                           if is_run(p.parent))
            if not below:
                raise CompareError(f"{path} holds no run folder (a folder with config.yaml and metrics.json) nor "
                                   "an experiment folder (plan.json)")
            found.extend(below)
    unique: list[Path] = []
    seen: set[Path] = set()
    for folder in found:
        resolved = folder.resolve()
        status = (manifest.read(folder) or {}).get("status", "done")
        if status != "done":
            notes.append(f"skipped {folder}: its manifest says {status!r}")
        elif not (folder / "metrics.json").is_file():
            notes.append(f"skipped {folder}: no metrics.json (not finished)")
        elif resolved not in seen:
            seen.add(resolved)
            unique.append(folder)
    return unique, notes


def final_runs(experiment_dir: Path) -> list[Path]:
    """Every run of an experiment's final stage: the one plan.json lists and its siblings of the same stage name.

    plan.json holds the last invocation's plan, but each ``seed=`` (or other override) gets its own run folder
    beside it (``runs/<experiment>/<stage>-<hash8>``): the siblings are the other seeds (and other configs,
    which grouping keeps apart)."""
    plan = json.loads((experiment_dir / "plan.json").read_text())
    final = plan.get("final")
    stage = base_name(str(final))  # with a seeds axis the final stage runs as <stage>-s<seed>
    listed = [Path(r["folder"]) for r in plan.get("runs", []) if base_name(str(r.get("name"))) == stage]
    if not listed:
        raise CompareError(f"{experiment_dir}/plan.json lists no run of its final stage {final!r}")
    found = list(listed)
    for parent in {p.parent for p in listed}:
        found += sorted(p for p in parent.glob(f"{stage}-*") if is_run(p) and p not in found
                        and base_name(str((manifest.read(p) or {}).get("name", stage))) == stage)
    return found


def load_run(folder: Path) -> RunInfo:
    config = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=False)
    metrics = json.loads((folder / "metrics.json").read_text())
    man = manifest.read(folder) or {}
    if "seed" not in config:
        raise CompareError(f"{folder}/config.yaml has no seed")
    return RunInfo(folder=folder, experiment=str(man.get("experiment") or metrics.get("experiment")),
                   name=str(man.get("name") or "main"), seed=int(config["seed"]), config=config, metrics=metrics)


# how a config names another run's folder: <checkpoints>/runs/<experiment>/<name>-<hash8>[/hf | /checkpoints/...]
RUN_PATH = re.compile(r"(?:^|/)runs/([^/]+)/([^/]+)-[0-9a-f]{8}(?:/(.*))?$")


def _run_folder_of(value: str, root: Path | None) -> Path | None:
    """The run folder a config string points into (the folder itself, its hf/ export, a checkpoint), if it exists:
    as written, or (a path relative to where the run was launched) under ``root``, the runs' checkpoints folder."""
    if "/" not in value:
        return None
    path = Path(value)
    candidates = [path, *list(path.parents)[:3]]
    match = RUN_PATH.search(value)
    if match and root is not None:
        folder = root / "runs" / match[1] / value[match.start():].strip("/").split("/")[2]
        candidates.append(folder)
    return next((c for c in candidates if is_run(c)), None)


class Grouper:
    """Method keys (see the module docstring), memoised per run folder."""

    def __init__(self) -> None:
        self.keys: dict[Path, dict[str, Any]] = {}

    def identity(self, folder: Path, stack: tuple[Path, ...] = ()) -> dict[str, Any]:
        resolved = folder.resolve()
        if resolved not in self.keys:
            if resolved in stack:
                raise CompareError(f"run folders refer to each other in a cycle: {[str(p) for p in stack]}")
            config = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=False)
            ident = manifest.identity(config)
            ident.pop("seed", None)
            root = resolved.parents[2] if resolved.parent.parent.name == "runs" else None
            self.keys[resolved] = self._replace(ident, (*stack, resolved), root)
        return self.keys[resolved]

    def _replace(self, node: Any, stack: tuple[Path, ...], root: Path | None) -> Any:
        if isinstance(node, dict):
            return {k: self._replace(v, stack, root) for k, v in node.items()}
        if isinstance(node, list):
            return [self._replace(v, stack, root) for v in node]
        if isinstance(node, str):
            if (ref := _run_folder_of(node, root)) is not None:
                return {"run": self.identity(ref, stack), "within": _within(node, ref)}
            if match := RUN_PATH.search(node):  # a run folder that is not here: its experiment and name stand in
                return {"run": f"{match[1]}/{match[2]}", "within": match[3] or "."}
        return node


def _within(value: str, ref: Path) -> str:
    """Where in the run folder ``value`` points (``.``, ``hf``, ``checkpoints/best.ckpt``)."""
    match = RUN_PATH.search(value)
    if match:
        return match[3] or "."
    try:
        return str(Path(value).resolve().relative_to(ref.resolve()))
    except ValueError:  # e.g. through a symbolic link
        return value


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, val in node.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): json.dumps(node, sort_keys=True, default=str)}


def split_labelled(paths: list[str | Path]) -> tuple[list[str | Path], list[tuple[str, str]]]:
    """``LABEL=DIR`` arguments name their runs' method (e.g. ``tmkd=checkpoints/runs/.../stage2-s1-...``); the
    rest are found and grouped by the rule. A path that exists as given is never read as a label."""
    plain: list[str | Path] = []
    labelled: list[tuple[str, str]] = []
    for raw in paths:
        label, sep, folder = str(raw).partition("=")
        if not sep or Path(str(raw)).exists() or "/" in label:
            plain.append(raw)
        elif not label.strip() or not folder:
            raise CompareError(f"{raw!r}: write LABEL=DIR with a label and a folder")
        else:
            labelled.append((label.strip(), folder))
    return plain, labelled


def check_distinct_seeds(label: str, members: list[RunInfo]) -> None:
    members.sort(key=lambda r: r.seed)
    for a, b in itertools.pairwise(members):
        if a.seed == b.seed:
            raise CompareError(f"method {label!r} has two runs with seed {a.seed}: {a.folder} and {b.folder}; "
                               "leave one out")
    for r in members:
        r.method = label


def label_runs(labelled: dict[str, list[RunInfo]], grouped: dict[str, list[RunInfo]]) -> dict[str, list[RunInfo]]:
    """Methods named on the command line (``LABEL=DIR``) next to the grouped ones; a label may not be used twice."""
    clash = sorted(set(labelled) & set(grouped))
    if clash:
        raise CompareError(f"label(s) {clash} name both LABEL=DIR runs and a grouped method; choose other labels")
    for label, members in labelled.items():
        for r in members:
            r.key = f"label:{label}"
        check_distinct_seeds(label, members)
    return {**grouped, **labelled}


def group_runs(runs: list[RunInfo], rule: str = "config") -> dict[str, list[RunInfo]]:
    """Methods (label -> runs sorted by seed). Labels are ``<experiment>`` or ``<experiment>/<run name>``; methods
    that share a label get the config keys that tell them apart, e.g. ``finetune_qnli[optim.lr=0.0001]``."""
    if rule not in GROUPS:
        raise CompareError(f"unknown grouping {rule!r}; valid: {list(GROUPS)}")
    grouper = Grouper()
    for r in runs:
        base = r.experiment if r.name == "main" else f"{r.experiment}/{r.name}"
        r.ident = grouper.identity(r.folder) if rule == "config" else {"method": base}
        payload = json.dumps(r.ident, sort_keys=True, default=str)
        r.key = hashlib.sha256(f"{base}|{payload}".encode()).hexdigest()
        r.method = base
    by_label: dict[str, dict[str, list[RunInfo]]] = {}
    for r in runs:
        by_label.setdefault(r.method, {}).setdefault(r.key, []).append(r)
    methods: dict[str, list[RunInfo]] = {}
    for label, keyed in by_label.items():
        if len(keyed) == 1:
            methods[label] = next(iter(keyed.values()))
            continue
        flats = {key: _flat(members[0].ident) for key, members in keyed.items()}
        names = sorted({k for f in flats.values() for k in f})
        differing = [k for k in names if len({f.get(k) for f in flats.values()}) > 1]
        for key, members in keyed.items():
            shown = [f"{k}={json.loads(flats[key][k]) if k in flats[key] else None}" for k in differing[:3]]
            extra = f",+{len(differing) - 3}" if len(differing) > 3 else ""
            methods[f"{label}[{','.join(shown)}{extra}]"] = members
    for label, members in methods.items():
        check_distinct_seeds(label, members)
    return methods


def load_predictions(run: RunInfo) -> dict[str, dict[str, Any]]:
    """``split -> {"prefix", "table"}`` of a run (metrics.json's ``predictions``)."""
    entries = run.metrics.get("predictions")
    if not entries:
        why = ("a question-answering run (per-example comparison supports classification)"
               if (run.folder / "predictions.json").is_file() else "made before tmkd saved per-example predictions")
        raise CompareError(f"run {run.folder} has no per-example predictions (metrics.json has no 'predictions'): "
                           f"{why}; rerun it or leave it out")
    return {split: {"prefix": e["prefix"], "table": read_predictions(run.folder / e["file"])}
            for split, e in entries.items()}


def check_reported(run: RunInfo, split: str, prefix: str, table: dict[str, np.ndarray]) -> None:
    """Warn when accuracy recomputed from the file differs from metrics.json's (the file is not the report's)."""
    reported = (run.metrics.get("best") or {}).get(f"{prefix}/accuracy")
    if reported is None:
        return
    recomputed = float(np.mean(table["pred"] == table["label"]))
    if abs(recomputed - float(reported)) > 1e-5:
        print(f"warning: {run.folder}: {split} accuracy from predictions {recomputed:.6f} differs from metrics.json's "
              f"{float(reported):.6f}", file=sys.stderr)
