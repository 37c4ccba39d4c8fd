"""What a later run trusts in a finished run folder, and whether it still holds: checksums and checkpoint checks.

A run's manifest records, when it is marked ``done``, the size, sha256 and mtime of the files later runs and
re-runs read (:func:`outputs`: ``metrics.json`` and every file of the ``hf/`` export). Planning re-checks them
(:func:`damaged`) with a cost bounded for large weights: the size always; the full sha256 for files up to
:data:`HASH_ALWAYS_BYTES`, and for larger ones only when their mtime changed since the record. A resumable
checkpoint is checked by opening it as a zip (a truncated file fails there) and unpickling its index with the
tensors memory-mapped, not read (:func:`checkpoint_problem`).
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from tmkd.fingerprint import file_sha256  # never the cached variant: a checksum must read the bytes

log = logging.getLogger(__name__)
HASH_ALWAYS_BYTES = 64 << 20  # configs, tokenizers, metrics and tiny/small models: always hashed when planning
CHECKSUMMED_ROOT_FILES = ("metrics.json",)


def outputs(folder: Path) -> list[str]:
    """The files of a finished run that later runs read, relative to ``folder`` (sorted)."""
    from tmkd.models.build import HF_EXPORT  # lazy: planning imports this module and must stay light

    found = [name for name in CHECKSUMMED_ROOT_FILES if (folder / name).is_file()]
    export = folder / HF_EXPORT
    if export.is_dir():
        found += [p.relative_to(folder).as_posix() for p in export.rglob("*") if p.is_file()]
    return sorted(found)


def record(folder: Path, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{relative path: {size, sha256, mtime_ns}}`` of ``names`` (default :func:`outputs`) for the manifest."""
    out = {}
    for name in outputs(folder) if names is None else names:
        path = folder / name
        stat = path.stat()
        out[name] = {"size": stat.st_size, "sha256": file_sha256(path), "mtime_ns": stat.st_mtime_ns}
    return out


def damaged(folder: Path, files: dict[str, dict[str, Any]] | None) -> list[str]:
    """``"<path> (<why>)"`` for every recorded file that is missing or no longer matches its record.

    A manifest from before checksums were recorded has none: then only ``metrics.json`` must parse."""
    if not files:
        path = folder / "metrics.json"
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as err:
            return [f"{path} (unreadable: {type(err).__name__}: {err})"]
        return []
    problems = []
    for name, rec in sorted(files.items()):
        path = folder / name
        try:
            stat = path.stat()
        except OSError:
            problems.append(f"{path} (missing)")
            continue
        if stat.st_size != rec.get("size"):
            problems.append(f"{path} (size {stat.st_size} bytes, recorded {rec.get('size')})")
            continue
        rehash = stat.st_size <= HASH_ALWAYS_BYTES or stat.st_mtime_ns != rec.get("mtime_ns")
        if rehash and file_sha256(path) != rec.get("sha256"):
            problems.append(f"{path} (sha256 differs from the recorded one)")
    return problems


def checkpoint_problem(path: Path, trusted: bool = False, resumable: bool = True) -> str | None:
    """Why ``path`` cannot be resumed from (missing, truncated, unreadable, weights only), or None when it can.

    Cheap: the zip's central directory (at the end of the file, so truncation shows) and the pickled index, with the
    tensors memory-mapped rather than read."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.header_offset + info.compress_size > size:
                    return f"truncated ({info.filename} ends past the end of the file)"
    except FileNotFoundError:
        return "missing"
    except (OSError, zipfile.BadZipFile) as err:
        return f"not a readable checkpoint ({type(err).__name__}: {err})"
    import torch  # lazy: planning imports this module and must stay light

    try:
        state = torch.load(path, map_location="cpu", weights_only=not trusted, mmap=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        return f"unreadable ({type(err).__name__}: {err})"
    if not isinstance(state, dict) or "state_dict" not in state:
        return "not a Lightning checkpoint (no state_dict)"
    if resumable and "optimizer_states" not in state:
        return "holds weights only (cannot resume training from it)"
    return None


def resume_point(ckpt_dir: Path, trusted: bool = False) -> tuple[Path | None, list[str]]:
    """The checkpoint to resume from: ``last.ckpt`` when it is sound, else the newest other sound one (e.g. the best
    epoch's: epochs are reproducible, so the run ends the same); ``(None, problems)`` when none is, or when
    ``best.ckpt`` (which a resumed run loads at its end) is damaged: then the run starts afresh.
    Only called when a ``last.ckpt`` exists; ``problems`` names each damaged file and why."""
    best = ckpt_dir / "best.ckpt"
    if best.exists():
        problem = checkpoint_problem(best, trusted, resumable=False)
        if problem is not None:
            return None, [f"{best} ({problem})"]
    last = ckpt_dir / "last.ckpt"
    problem = checkpoint_problem(last, trusted)
    if problem is None:
        return last, []
    problems = [f"{last} ({problem})"]
    others = sorted((p for p in ckpt_dir.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime_ns,
                    reverse=True)
    for other in others:
        problem = checkpoint_problem(other, trusted)
        if problem is None:
            return other, problems
        problems.append(f"{other} ({problem})")
    return None, problems


def remove_checkpoints(ckpt_dir: Path, keep: Path | None, why: str) -> None:
    """Delete the ``*.ckpt`` files of ``ckpt_dir`` except ``keep`` (stale or damaged ones: a fresh start would
    otherwise write ``last-v1.ckpt`` beside a stale ``last.ckpt``, and the next resume would pick the stale one)."""
    for path in sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []:
        if keep is not None and path == keep:
            continue
        log.warning("removing %s (%s)", path, why)
        path.unlink(missing_ok=True)
