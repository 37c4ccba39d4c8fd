"""A run's identity: what its result depends on, by value and by content, hashed into its folder name.

The identity is the run's resolved config without :data:`tmkd.pipeline.manifest.VOLATILE_KEYS` (paths, logging,
speed knobs, run and experiment names), made canonical and with every path replaced by what it holds:

- the task node becomes the task's effective spec (its registered defaults for every null field), and a null
  ``data.max_length`` the task's max length: a value spelled out and its default are one identity;
- whole floats hash as integers (``temperature=2`` and ``2.0``); only the hashed payload changes, not the config;
- the runs of the plan it starts from are ``run@<their hash>``;
- other models (``model.name_or_path``, ``model.tokenizer``, a teacher's ``name_or_path``/``tokenizer``, the
  adapter's frozen ``adapter.encoder``, which defaults to ``model.name_or_path``, and ``adapter.ensemble_with``)
  are ``content:<fingerprint>`` of the files loaded (:func:`tmkd.fingerprint.folder_fingerprint`: a run folder's
  ``hf/`` export, a ``.ckpt`` with its run's export, an HF folder, or a hub id's cached snapshot); a hub id that is
  not in the local cache stays ``hub:<id>``;
- ``inputs.data`` is the sha256 of each split file read under ``data.dir`` (which itself is volatile); for hub
  datasets (no ``data.dir``) the dataset id and config at revision ``main`` (see :func:`hub_dataset`); synthetic
  tasks are generated from their config, which the identity already holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from tmkd.data.loading import local_split_files
from tmkd.data.sources import DataError, resolve_data_dir
from tmkd.data.tasks import TaskSpec, get_task
from tmkd.fingerprint import cached_file_sha256, folder_fingerprint
from tmkd.pipeline import manifest

RUN_REF = "run@"
CONTENT_REF = "content:"
HUB_REF = "hub:"
HF_EXPORT = "hf"  # a run folder's save_pretrained export (tmkd.models.build.HF_EXPORT)
MODEL_REFS = (("model", "name_or_path"), ("model", "tokenizer"), ("adapter", "encoder"), ("adapter", "ensemble_with"))
TEACHER_REFS = ("name_or_path", "tokenizer")


class IdentityError(ValueError):
    """Something a run reads cannot be fingerprinted (a missing data file, a .ckpt outside a run folder)."""


def run_identity(config: dict[str, Any], upstream: dict[str, str], distills: bool) -> dict[str, Any]:
    """The payload hashed into a run's folder name; ``upstream`` maps folders of the plan's runs to ``run@<hash>``."""
    ident = manifest.identity(config)
    if not distills:
        ident.pop("distill", None)  # a fine-tune's result does not depend on distillation settings
    task = effective_task(config)
    ident["task"] = dataclasses.asdict(task)
    data = ident.setdefault("data", {})
    data["max_length"] = data.get("max_length") or task.max_length
    adapter = ident.get("adapter")
    if config.get("method") == "adapter" and isinstance(adapter, dict) and adapter.get("encoder") is None:
        adapter["encoder"] = (ident.get("model") or {}).get("name_or_path")
    ident = replace_upstream(ident, {path: f"{RUN_REF}{digest}" for path, digest in upstream.items()})
    for section, key in MODEL_REFS:
        node = ident.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = model_ref(node[key])
    for teacher in (ident.get("distill") or {}).get("teachers") or []:
        for key in TEACHER_REFS:
            if isinstance(teacher, dict) and isinstance(teacher.get(key), str):
                teacher[key] = model_ref(teacher[key])
    ident["inputs"] = {"data": data_fingerprint(task, (config.get("data") or {}).get("dir"))}
    return canonical(ident)


def effective_task(config: dict[str, Any]) -> TaskSpec:
    node = dict(config.get("task") or {})
    name = node.pop("name", None)
    try:
        return get_task(name, **node)
    except (KeyError, ValueError) as err:
        raise IdentityError(f"task {name!r}: {err}") from err


def replace_upstream(ident: Any, refs: dict[str, str]) -> Any:
    """Folders of the plan's runs enter the identity as ``run@<hash>``, not as paths."""
    if isinstance(ident, dict):
        return {k: replace_upstream(v, refs) for k, v in ident.items()}
    if isinstance(ident, list):
        return [replace_upstream(v, refs) for v in ident]
    return refs.get(ident, ident) if isinstance(ident, str) else ident


def canonical(value: Any) -> Any:
    """Whole floats as ints (``2.0`` -> ``2``), recursively; bools and everything else unchanged."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- models --------------------------------------------------------------------------------------------------
def model_ref(ref: str) -> str:
    """``content:<fingerprint>`` of what loading ``ref`` reads; references that are not files stay as they are."""
    if ref.startswith((RUN_REF, CONTENT_REF, HUB_REF, "synthetic")):
        return ref
    path = Path(ref).expanduser()
    if path.exists():
        return CONTENT_REF + _local_fingerprint(path)
    snapshot = hub_snapshot(ref, "model")
    return CONTENT_REF + folder_fingerprint(snapshot) if snapshot is not None else HUB_REF + ref


def _local_fingerprint(path: Path) -> str:
    if path.is_dir():  # a run folder loads its export (HF model or saved adapter), anything else itself
        return folder_fingerprint(path / HF_EXPORT if (path / HF_EXPORT).is_dir() else path)
    if path.suffix == ".ckpt":  # the weights, in the architecture of its run's export (tmkd.models.build)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if not (run_dir / HF_EXPORT).is_dir():
            raise IdentityError(f"{path}: a .ckpt must be a file inside a tmkd run folder (<run>/checkpoints/) "
                                f"whose {HF_EXPORT}/ export gives the architecture")
        both = f"{folder_fingerprint(run_dir / HF_EXPORT)}+{cached_file_sha256(path)}"
        return hashlib.sha256(both.encode()).hexdigest()
    return cached_file_sha256(path)


def hub_snapshot(repo_id: str, repo_type: str) -> Path | None:
    """The locally cached snapshot of a hub repo's ``main`` (what ``from_pretrained`` offline loads), or None."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    try:
        folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
        revision = (folder / "refs" / "main").read_text().strip()
    except (OSError, ValueError):
        return None
    snapshot = folder / "snapshots" / revision
    return snapshot if revision and snapshot.is_dir() else None


# --- data ----------------------------------------------------------------------------------------------------
def data_fingerprint(task: TaskSpec, data_dir: str | None) -> dict[str, Any]:
    """What the run's splits are read from, by content (see the module docs)."""
    if task.synthetic is not None:
        return {"synthetic": True}  # generated from task.synthetic (part of the identity) by tmkd's generator
    try:
        root = resolve_data_dir(data_dir)
        if root is None:
            return {"hub": hub_dataset(task)}
        files = local_split_files(task, root)
    except DataError as err:
        raise IdentityError(str(err)) from err
    return {split: {"file": path.name, "sha256": cached_file_sha256(path)} for split, path in files.items()}


def hub_dataset(task: TaskSpec) -> str:
    """``<id>/<config>@main``: the revision ``load_dataset`` reads. Not the content: what the local ``datasets``
    cache holds changes when a run first downloads it, which would change the identity of the run that did; pin
    data by content with ``data.dir``."""
    return f"{task.hub_id}/{task.hub_config or 'default'}@main"
