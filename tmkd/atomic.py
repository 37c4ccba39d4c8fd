"""Atomic writes for every file tmkd caches or records (soft targets, features, manifests, metrics, exports).

Hand-rolled temp-file + ``os.replace``: it is the stdlib atomic-rename idiom, and the dedicated package
(``atomicwrites``) is archived. Same directory => same filesystem => the rename is atomic, so a crash never leaves
half a file under the real name. ``tempfile.mkstemp`` creates files mode 0600 whatever the umask; the helpers
here give every file the mode ``open()`` would (0666 & ~umask), so one checkpoint folder shared by a team follows
one rule. Temp names start with ``.`` and end with ``.tmp`` (:data:`TMP_GLOB`), so leftovers of a crash can be found
and removed (:func:`clean_tmp`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)
TMP_GLOB = ".*.tmp"  # files and folders left by an interrupted atomic write
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status); elsewhere by
    setting and restoring it under a lock (``os.umask`` has no read-only form, and the swap is process-wide)."""
    try:
        match = re.search(r"^Umask:\s*([0-7]+)$", Path("/proc/self/status").read_text(), re.MULTILINE)
        if match:
            return int(match.group(1), 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """What ``open()`` (0666) or ``mkdir`` (0777) would give under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def apply_umask(path: str | Path, directory: bool = False) -> None:
    """Give a ``mkstemp``/``mkdtemp`` result the mode a plain ``open``/``mkdir`` would have had."""
    os.chmod(path, default_mode(directory))


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` (flushed and fsynced) when the block ends without error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        apply_umask(tmp)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` (and the folders), e.g. what a library's ``save_pretrained`` wrote."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(Path(folder) / name, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(folder))


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temp folder next to ``path``; when the block ends without error its files are fsynced and it replaces
    ``path`` (an old ``path`` is moved aside first and then deleted: ``os.replace`` cannot replace a non-empty folder,
    so a crash between the two renames leaves no ``path`` at all, never a half-written one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        apply_umask(tmp, directory=True)
        yield tmp
        fsync_tree(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old.", suffix=".tmp"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_tmp(root: Path, recursive: bool = True) -> list[Path]:
    """Remove what interrupted atomic writes left under ``root`` (``.*.tmp`` files and folders); returns them.

    Only call this where no other process is writing (e.g. a run's own folder when the run starts)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = sorted(root.rglob(TMP_GLOB) if recursive else root.glob(TMP_GLOB))
    removed = []
    for item in found:
        if not item.exists():  # inside a folder removed before
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        removed.append(item)
    if removed:
        log.info("removed %d leftover temp file(s) of interrupted writes under %s: %s", len(removed), root,
                 ", ".join(str(p.relative_to(root)) for p in removed))
    return removed
