"""Frozen-encoder features for BERTVision-style adapters, computed once per split and read from a memmap.

Classification: each row is stored as the pooled ([CLS] or masked-mean) state of every selected layer,
``[rows, layers, hidden]`` in fp16, in a ``.npy`` file opened with ``np.load(mmap_mode="r")`` so an
epoch pages rows in from disk instead of holding the split in RAM (MNLI train, 393k rows: 7.8 GB for
MPNet 13x768, 2.1 GB for MiniLM 7x384). Keys follow the soft-target cache (tmkd.distill.targets):
encoder weights, split content, tokenizer, max_length, plus pooling and layers, so any change computes
new features instead of reading stale ones. Files are written atomically with a JSON sidecar (shape,
dtype, key parts, sha256) and verified on load; a damaged pair is deleted and recomputed.

Spans (SQuAD) are *not* cached; their per-token states are streamed from the frozen encoder during
training (:meth:`tmkd.features.encoder.FrozenEncoder.hidden_states`). SQuAD 2.0 train is 130k questions,
~132k windows of 384 tokens; per-token fp16 states cost

- MPNet (13 states x 768): 384*13*768*2 B = 7.67 MB per window -> ~1.01 TB for the split;
- MiniLM (7 states x 384):  384*7*384*2 B  = 2.06 MB per window -> ~272 GB for the split.

That exceeds the disks we train on (64 GiB) many times over, and even on a big disk one epoch would read
0.3-1 TB, no faster than recomputing: the frozen forward pass (no backward, no optimiser state) over 132k
windows is ~1e16 FLOPs for MPNet-base (2 x 85M weights x 51M tokens, plus attention), on the order of a
minute per epoch on one H100 in bf16 (an estimate, not measured here). So spans pay one encoder forward
per batch per epoch and store nothing; pooled classification features, 384x smaller per row, are cached.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset
from transformers import PreTrainedTokenizerBase

from tmkd.atomic import apply_umask, atomic_file
from tmkd.data.loading import split_fingerprint
from tmkd.data.synthetic import cache_root
from tmkd.data.tasks import TaskSpec
from tmkd.data.tokenize import SEP, encode_view, tokenizer_fingerprint
from tmkd.features.encoder import POOLINGS, FrozenEncoder
from tmkd.fingerprint import cache_key, file_sha256  # file_sha256: shared with the run identity (pipeline.identity)

logger = logging.getLogger(__name__)

FORMAT = "tmkd-features/v1"
DTYPE = np.float16
_FP16_MAX = float(np.finfo(np.float16).max)
_VIEW = "encoder"  # column prefix of the tokenised split (tmkd.data.tokenize views)


def default_feature_dir() -> Path:
    """``$TMKD_CACHE_DIR/features`` (default ``~/.cache/tmkd/features``), next to the synthetic data."""
    return cache_root() / "features"


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


class FeatureCache:
    """Directory of ``<key>.npy`` (fp16 features) + ``<key>.json`` (sidecar) pairs.

    The ``.npy`` is replaced first and the sidecar second, so a crash in between leaves an array without
    a matching sidecar, which :meth:`open` treats as damaged; readers never trust a half-written pair.
    :meth:`open` hashes the whole file (one sequential read, seconds for GB-sized splits), once per open
    rather than per epoch. Two processes computing one key race harmlessly: the loser's file is replaced,
    and a mismatched pair seen in between is recomputed, not trusted.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_feature_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.npy", self.root / f"{key}.json"

    def open(self, key: str, shape: tuple[int, ...], parts: dict[str, Any]) -> np.memmap | None:
        """The verified read-only memmap for ``key``, or None when absent or damaged (then deleted)."""
        array_path, meta_path = self.paths(key)
        if not array_path.exists() and not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return self._discard(key, f"sidecar unreadable: {type(exc).__name__}: {exc}")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return self._discard(key, "sidecar is not a tmkd feature sidecar")
        if meta.get("parts") != parts or meta.get("shape") != list(shape) or meta.get("dtype") != "float16":
            return self._discard(key, "sidecar does not match the requested features")
        if not array_path.exists() or array_path.stat().st_size != meta.get("bytes"):
            return self._discard(key, "array missing or of the wrong size")
        if file_sha256(array_path) != meta.get("sha256"):
            return self._discard(key, "checksum mismatch")
        try:
            array = np.load(array_path, mmap_mode="r")
        except Exception as exc:  # a bad header raises ValueError, OSError, ...
            return self._discard(key, f"unreadable array: {type(exc).__name__}: {exc}")
        if array.shape != tuple(shape) or array.dtype != DTYPE:
            return self._discard(key, f"array is {array.dtype}{array.shape}, expected float16{tuple(shape)}")
        return array

    def create(self, key: str, shape: tuple[int, ...]) -> tuple[np.memmap, Path]:
        """A writable fp16 memmap at a temporary path in the cache dir; fill it, then :meth:`commit`."""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".npy.tmp")
        os.close(fd)
        try:
            apply_umask(tmp)  # mkstemp's 0600 would make shared feature caches unreadable to the team
            return np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=shape), Path(tmp)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def commit(self, key: str, array: np.memmap, tmp: Path, parts: dict[str, Any]) -> np.memmap:
        """Flush, checksum and atomically publish ``tmp`` under ``key``; returns the read-only memmap."""
        array_path, meta_path = self.paths(key)
        shape = list(array.shape)
        try:
            array.flush()
            del array
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            meta = {"format": FORMAT, "key": key, "parts": parts, "shape": shape, "dtype": "float16",
                    "bytes": tmp.stat().st_size, "sha256": file_sha256(tmp)}
            os.replace(tmp, array_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _write_atomic(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode())
        return np.load(array_path, mmap_mode="r")

    def _discard(self, key: str, reason: str) -> None:
        array_path, meta_path = self.paths(key)
        logger.warning("feature cache entry %s is damaged (%s); deleting it and recomputing", array_path, reason)
        array_path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return None


class CachedFeatureDataset(TorchDataset):
    """Rows ``{"features": [layers, hidden] float32, "labels": int, "row_id": int}`` read from a memmap.

    Only the rows a batch asks for are read (and cast up from fp16), so RAM use does not grow with the split.
    """

    def __init__(self, features: np.ndarray, labels: Sequence[int], row_ids: Sequence[int] | None = None) -> None:
        if len(labels) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        self.features = features
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.row_ids = torch.arange(len(features)) if row_ids is None else torch.as_tensor(np.asarray(row_ids))
        if len(self.row_ids) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(self.row_ids)} row ids")

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"features": torch.from_numpy(np.array(self.features[index], dtype=np.float32)),
                "labels": self.labels[index], "row_id": self.row_ids[index]}


class FeatureStore:
    """Pooled per-layer states of a frozen encoder for whole classification splits, cached on disk.

    Row ``i`` of the array belongs to row ``i`` of the split (the datamodule's ``row_id``), although the
    encoder runs over length-sorted batches to cut padding.
    """

    def __init__(self, encoder: FrozenEncoder, tokenizer: PreTrainedTokenizerBase, task: TaskSpec,
                 max_length: int | None = None, pooling: str = "cls", cache_dir: str | Path | None = None,
                 batch_size: int = 64) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if task.kind != "classification":
            raise ValueError(f"task {task.name!r} is {task.kind!r}: only classification features are cached; "
                             "span tasks stream per-token states (FrozenEncoder.hidden_states), see module docs")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.task = task
        self.max_length = max_length or task.max_length
        self.pooling = pooling
        self.cache = FeatureCache(cache_dir)
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0
        self.seconds = 0.0  # wall time in split_features (encoding, or verifying and opening the cache)

    def key_parts(self, split: str, data_print: str) -> dict[str, Any]:
        """Everything the features depend on; also stored in the sidecar and checked on load."""
        return {"kind": FORMAT, "encoder": self.encoder.fingerprint(), "task": self.task.name, "split": split,
                "data": data_print, "tokenizer": tokenizer_fingerprint(self.tokenizer),
                "max_length": self.max_length, "pooling": self.pooling, "layers": list(self.encoder.layers),
                "dtype": "float16"}

    def shape(self, rows: int) -> tuple[int, int, int]:
        return rows, len(self.encoder.layers), self.encoder.hidden_size

    def split_features(self, ds: Dataset, split: str) -> np.memmap:
        """Read-only memmap ``[rows, layers, hidden]`` fp16 for ``ds`` (computed on the first call only)."""
        if len(ds) == 0:
            raise ValueError(f"{self.task.name}/{split} is empty: nothing to encode")
        started = time.perf_counter()
        try:
            return self._split_features(ds, split)
        finally:
            self.seconds += time.perf_counter() - started

    def _split_features(self, ds: Dataset, split: str) -> np.memmap:
        parts = self.key_parts(split, split_fingerprint(ds, self.task))
        key = cache_key(**parts)
        shape = self.shape(len(ds))
        cached = self.cache.open(key, shape, parts)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        logger.info("features: encoding %s/%s (%d rows, layers %s, %s pooling)", self.task.name, split, len(ds),
                    list(self.encoder.layers), self.pooling)
        array, tmp = self.cache.create(key, shape)
        try:
            self._compute(ds, split, array)
        except BaseException:
            del array
            tmp.unlink(missing_ok=True)
            raise
        return self.cache.commit(key, array, tmp, parts)

    def dataset(self, ds: Dataset, split: str) -> CachedFeatureDataset:
        """Torch dataset over the cached features, the split's labels and its ``row_id`` (if any)."""
        features = self.split_features(ds, split)
        row_ids = ds["row_id"] if "row_id" in ds.column_names else None
        return CachedFeatureDataset(features, ds[self.task.label_column], row_ids)

    def _compute(self, ds: Dataset, split: str, out: np.ndarray) -> None:
        encoded = encode_view(ds, self.tokenizer, self.task, self.max_length, _VIEW,
                              desc=f"Tokenizing {split} for features")
        prefix = _VIEW + SEP
        lengths = np.asarray(pc.list_value_length(encoded.with_format("arrow")[prefix + "input_ids"]))
        order = np.argsort(-lengths, kind="stable")  # longest first: an out-of-memory batch fails at once
        device = next(self.encoder.parameters()).device
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            columns = encoded[rows.tolist()]
            batch = self.tokenizer.pad({k[len(prefix):]: v for k, v in columns.items()}, return_tensors="pt")
            with torch.inference_mode():
                pooled = self.encoder.pooled({k: v.to(device) for k, v in batch.items()}, self.pooling)
            out[rows] = pooled.clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16).cpu().numpy()
