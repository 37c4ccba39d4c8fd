"""Atomic writes: whole files or none, temp leftovers found and removed, and modes that follow the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tmkd.atomic import atomic_dir, atomic_file, clean_tmp, current_umask
from tmkd.distill.cache import SoftTargetCache
from tmkd.pipeline import manifest


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_written_atomically_follow_the_umask_like_open_does(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    with atomic_file(tmp_path / "a.bin") as handle:
        handle.write(b"x")
    manifest.write(tmp_path / "run", {"status": "done"})
    cached = SoftTargetCache(tmp_path / "cache").save("k", torch.zeros(2))
    with atomic_dir(tmp_path / "hf") as folder:
        (folder / "config.json").write_text("{}")
    assert mode(tmp_path / "a.bin") == mode(tmp_path / "run" / manifest.MANIFEST) == mode(cached) == 0o666 & ~mask
    assert mode(tmp_path / "hf") == 0o777 & ~mask
    assert current_umask() == mask  # reading it did not change it


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "hf"
    with atomic_dir(target) as folder:
        (folder / "old.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as folder:
        (folder / "new.txt").write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in target.iterdir()] == ["old.txt"]  # the failed write left the old export as it was
    with atomic_dir(target) as folder:
        (folder / "new.txt").write_text("2")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temp folders left


def test_clean_tmp_removes_only_leftovers_of_atomic_writes(tmp_path):
    (tmp_path / ".metrics.json.ab12.tmp").write_text("half")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".last.ckpt.cd34.tmp").write_bytes(b"half")
    (tmp_path / ".hf.ef56.tmp").mkdir()
    (tmp_path / ".hf.ef56.tmp" / "model.safetensors").write_bytes(b"half")
    keep = [tmp_path / "metrics.json", tmp_path / "notes.tmp", tmp_path / "checkpoints" / "last.ckpt"]
    for path in keep:
        path.write_text("keep")
    removed = clean_tmp(tmp_path)
    assert len(removed) == 3
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)
