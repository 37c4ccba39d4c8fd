"""What an offline W&B run logged: its summary (the last value of every logged key), read from its run folder.

An online run (and older wandb) leaves ``files/wandb-summary.json``; an offline run of wandb >= 0.19 (wandb-core)
leaves only its transaction log ``run-<id>.wandb`` (what ``wandb sync`` uploads). That file is a LevelDB-style log
(a 7-byte header ``:W&B``, magic 0xBEE1, version 0; then 32 KiB blocks of chunks, each ``<crc32:u32, length:u16,
type:u8>`` + data, type 1 = a whole record, 2/3/4 = first/middle/last piece) of ``wandb.proto`` ``Record``
messages; the summary is the fold of its ``summary`` records' updates.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
IDENT, MAGIC, VERSION = b":W&B", 0xBEE1, 0
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def run_dirs(wandb_dir: Path) -> list[Path]:
    """Run folders under a ``wandb`` directory (``run-*`` / ``offline-run-*``), oldest first."""
    return sorted(p for p in Path(wandb_dir).glob("*run-*") if p.is_dir() and not p.is_symlink())


def transaction_records(path: Path) -> list[bytes]:
    """The raw records of a ``run-<id>.wandb`` transaction log."""
    data = Path(path).read_bytes()
    if len(data) < HEADER.size:
        return []
    ident, magic, version = HEADER.unpack_from(data)
    if (ident, magic, version) != (IDENT, MAGIC, VERSION):
        raise ValueError(f"{path} is not a W&B transaction log (header {ident!r}, {magic:#x}, {version})")
    records, pending, pos = [], b"", HEADER.size
    while pos + CHUNK.size <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK.size:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding
            pos += room
            continue
        body = data[pos + CHUNK.size:pos + CHUNK.size + length]
        pos += CHUNK.size + length
        if kind == FULL:
            records.append(body)
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            records.append(pending + body)
            pending = b""
    return records


def _decode(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except json.JSONDecodeError:
        return value_json


def summary_from_log(path: Path) -> dict[str, Any]:
    """The run summary folded from the ``summary`` records of a transaction log (nested keys joined by ``/``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    summary: dict[str, Any] = {}
    for raw in transaction_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "summary":
            continue
        for item in record.summary.update:
            summary[item.key or "/".join(item.nested_key)] = _decode(item.value_json)
        for item in record.summary.remove:
            summary.pop(item.key or "/".join(item.nested_key), None)
    return summary


def read_summary(run_dir: Path) -> tuple[dict[str, Any], str]:
    """(summary, where it came from) of one W&B run folder: ``files/wandb-summary.json`` if written, else the
    fold of the transaction log ``run-<id>.wandb``."""
    run_dir = Path(run_dir)
    summary_json = run_dir / "files" / "wandb-summary.json"
    if summary_json.is_file():
        return json.loads(summary_json.read_text()), str(summary_json)
    logs = sorted(run_dir.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{run_dir} has neither files/wandb-summary.json nor a run-*.wandb log")
    return summary_from_log(logs[0]), str(logs[0])
