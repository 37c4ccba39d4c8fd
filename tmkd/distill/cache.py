"""On-disk soft-target cache: teacher forward passes are paid once across epochs, stages and trials.

Keys are content hashes (:func:`tmkd.fingerprint.cache_key`, :func:`tmkd.fingerprint.fingerprint_module`), so a
changed teacher, dataset or preprocessing setting yields a new key instead of stale targets. Files are written
atomically and verified by checksum on load; a damaged file is dropped and recomputed, never trusted.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tmkd.atomic import atomic_file
from tmkd.fingerprint import tensor_checksum

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class SoftTargetCache:
    """Directory of ``<key>.pt`` files, each holding a tensor, its checksum and JSON metadata."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """File for ``key``; keys must be plain file names so they cannot escape the cache directory."""
        if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
            raise ValueError(f"invalid cache key {key!r}: use letters, digits, '_', '-', '.' only")
        return self.root / f"{key}.pt"

    def load(self, key: str) -> Tensor | None:
        """The cached tensor (on CPU), or None when absent or damaged (damaged files are deleted)."""
        entry = self.load_with_meta(key)
        return None if entry is None else entry[0]

    def load_with_meta(self, key: str) -> tuple[Tensor, dict[str, Any]] | None:
        """Like :meth:`load`, also returning the metadata saved with the tensor."""
        entry = self._read(key)
        return None if entry is None else entry[:2]

    def load_indexed(self, key: str) -> tuple[Tensor, Tensor | None] | None:
        """The tensor and its row index (one int64 per row, see :meth:`save`; None if saved without one)."""
        entry = self._read(key)
        return None if entry is None else (entry[0], entry[2])

    def keys(self, prefix: str) -> list[str]:
        """The keys that start with ``prefix`` (a family of entries, e.g. one teacher's), sorted."""
        self.path(prefix)  # the same rule as a key: a prefix cannot glob outside the directory
        return sorted(p.name[: -len(".pt")] for p in self.root.glob(f"{prefix}*.pt"))

    def _read(self, key: str) -> tuple[Tensor, dict[str, Any], Tensor | None] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated/garbage files raise many types (EOFError, RuntimeError, ...)
            return self._discard(path, f"unreadable: {type(exc).__name__}: {exc}")
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT_VERSION:
            return self._discard(path, "not a soft-target cache entry")
        tensor, checksum, meta_json = payload.get("tensor"), payload.get("sha256"), payload.get("meta")
        if not isinstance(tensor, Tensor) or not isinstance(checksum, str) or not isinstance(meta_json, str):
            return self._discard(path, "missing or mistyped fields")
        if tensor_checksum(tensor) != checksum:
            return self._discard(path, "checksum mismatch")
        try:
            meta = json.loads(meta_json)
        except json.JSONDecodeError as exc:
            return self._discard(path, f"bad metadata: {exc}")
        index = payload.get("index")
        if index is not None and (not isinstance(index, Tensor) or index.dtype != torch.long
                                  or index.shape != tensor.shape[:1]
                                  or tensor_checksum(index) != payload.get("index_sha256")):
            return self._discard(path, "damaged row index")
        return tensor, meta, index

    def save(self, key: str, tensor: Tensor, meta: dict[str, Any] | None = None, index: Tensor | None = None
             ) -> Path:
        """Write atomically, so readers (or a crash) never see a half-written entry.

        ``index``: an int64 id per row of ``tensor`` (e.g. a content hash of the row's input), so a later split
        that shares rows can reuse them (:meth:`load_indexed`)."""
        if not isinstance(tensor, Tensor):
            raise TypeError(f"can only cache tensors, got {type(tensor).__name__}")
        path = self.path(key)
        tensor = tensor.detach().cpu().contiguous()
        payload = {
            "format": _FORMAT_VERSION,
            "tensor": tensor,
            "sha256": tensor_checksum(tensor),
            # JSON text keeps torch.load(weights_only=True) happy whatever the metadata holds, and
            # rejects non-serialisable metadata now rather than at load time.
            "meta": json.dumps(meta or {}, sort_keys=True),
        }
        if index is not None:
            if not isinstance(index, Tensor) or index.dtype != torch.long or index.shape != tensor.shape[:1]:
                got = f"{index.dtype} {tuple(index.shape)}" if isinstance(index, Tensor) else type(index).__name__
                raise ValueError(f"index must be an int64 tensor of shape ({tensor.shape[0]},), got {got}")
            payload["index"] = index.detach().cpu().contiguous()
            payload["index_sha256"] = tensor_checksum(payload["index"])
        with atomic_file(path) as handle:
            torch.save(payload, handle)
        return path

    def get_or_compute(
        self, key: str, compute: Callable[[], Tensor], meta: dict[str, Any] | None = None
    ) -> Tensor:
        """Cached tensor for ``key``; otherwise ``compute()`` it once, store it and return it.

        Always returns a detached CPU tensor, so a cold and a warm cache behave the same. Concurrent
        writers of one key both compute; the atomic replace keeps the file valid either way.
        """
        cached = self.load(key)
        if cached is not None:
            return cached
        tensor = compute()
        if not isinstance(tensor, Tensor):
            raise TypeError(f"compute() must return a tensor, got {type(tensor).__name__}")
        tensor = tensor.detach().cpu()
        self.save(key, tensor, meta)
        return tensor

    def _discard(self, path: Path, reason: str) -> None:
        logger.warning("soft-target cache file %s is damaged (%s); deleting it", path, reason)
        path.unlink(missing_ok=True)
        return None
