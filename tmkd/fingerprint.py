"""Content fingerprints of files and model folders, cheap to repeat: what a run's identity and the caches rely on.

A file's fingerprint is the sha256 of its bytes. Hashing a data split or a checkpoint on every plan would make
planning slow, so a digest is remembered in a small sidecar (``$TMKD_CACHE_DIR/fingerprints/<id>.json``, default
``~/.cache/tmkd/fingerprints``) keyed by the file's resolved path, size, ``mtime_ns`` and inode: any write,
replacement or move of the file changes the key and the file is hashed again. A file modified in the last
:data:`RACY_SECONDS` is hashed but not remembered (as git does with "racy" index entries): a rewrite within the
file system's timestamp granularity would otherwise keep its size and mtime and read a stale digest.

A model folder's fingerprint covers the files ``from_pretrained`` reads (:func:`model_files`), by name and content.
In memory: :func:`fingerprint_module` hashes a model's weights, :func:`tensor_checksum` one tensor, and
:func:`cache_key` turns the parts a cache entry depends on into its key (soft targets, features).
Planning imports this module, so it stays light: torch is imported only when a tensor is hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmkd.atomic import atomic_file

if TYPE_CHECKING:
    from torch import Tensor, nn

RACY_SECONDS = 2.0
# Files of a model folder that do not change what the model computes: cards, git metadata, other frameworks'
# copies of the weights (transformers loads safetensors, else the PyTorch .bin), exports for other runtimes.
IGNORED_SUFFIXES = (".md", ".h5", ".msgpack", ".ot", ".onnx", ".onnx_data", ".lock", ".metadata")
IGNORED_NAMES = (".gitattributes", ".gitignore")
IGNORED_FOLDERS = ("onnx", "openvino", "checkpoints", "logs", "wandb", ".cache")


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    """sha256 of a file, streamed (feature files and checkpoints can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sidecar_dir() -> Path:
    """Where remembered digests live (next to tmkd's other caches, ``$TMKD_CACHE_DIR``)."""
    return Path(os.environ.get("TMKD_CACHE_DIR", Path.home() / ".cache" / "tmkd")) / "fingerprints"


def cached_file_sha256(path: str | Path) -> str:
    """:func:`file_sha256`, remembered under the file's (path, size, mtime_ns, inode); see the module docs."""
    real = Path(path).expanduser().resolve()
    stat = real.stat()
    key = {"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
    sidecar = sidecar_dir() / (hashlib.sha256(str(real).encode()).hexdigest()[:32] + ".json")
    try:
        remembered = json.loads(sidecar.read_text())
        if remembered.get("key") == key and isinstance(remembered.get("sha256"), str):
            return remembered["sha256"]
    except (OSError, ValueError, AttributeError):
        pass  # none yet, or damaged: hash again
    digest = file_sha256(real)
    if time.time_ns() - stat.st_mtime_ns > RACY_SECONDS * 1e9:
        try:
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(sidecar) as handle:
                handle.write(json.dumps({"key": key, "sha256": digest}).encode())
        except OSError:
            pass  # a read-only cache only costs speed
    return digest


def model_files(folder: str | Path) -> list[Path]:
    """The files of a model folder that determine the model: every file (sub-folders too, e.g. an adapter's
    tokenizer) but those in IGNORED_*; PyTorch ``.bin`` weights are left out when safetensors weights exist."""
    root = Path(folder)
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_FOLDERS and not d.startswith("."))
        for name in filenames:
            if name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES):
                continue
            files.append(Path(dirpath) / name)
    if any(f.suffix == ".safetensors" for f in files):
        files = [f for f in files if not (f.suffix == ".bin" and f.name.startswith("pytorch_model"))]
    return sorted(files)


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 over the relative names and contents of :func:`model_files` (where the folder is does not count)."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in model_files(root):
        digest.update(f"{path.relative_to(root).as_posix()}\0{cached_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def cache_key(**parts: Any) -> str:
    """Stable key from JSON-serialisable parts (order-independent); 24 hex chars of their sha256."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _update_with_tensor(digest: Any, tensor: Tensor) -> None:
    """Feed dtype, shape and raw bytes of ``tensor`` into a hashlib object (no extra full copy)."""
    import torch  # lazy: planning imports this module without torch (see the module docs)

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{flat.dtype}|{tuple(tensor.shape)}|".encode())
    # Viewing as uint8 works for every dtype (bf16 included, which numpy cannot represent).
    digest.update(flat.view(torch.uint8).numpy())


def tensor_checksum(tensor: Tensor) -> str:
    """sha256 over dtype, shape and bytes of ``tensor``."""
    digest = hashlib.sha256()
    _update_with_tensor(digest, tensor)
    return digest.hexdigest()


def fingerprint_module(model: nn.Module) -> str:
    """sha256 over the state_dict (sorted names, dtype, shape, bytes): changes whenever any weight does."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + b"\0")
        _update_with_tensor(digest, tensor)
    return digest.hexdigest()
