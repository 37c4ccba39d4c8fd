"""One atomic-write helper for every file tmkd caches or records (soft targets, features' metadata, manifests).

Hand-rolled temp-file + ``os.replace``: it is the stdlib atomic-rename idiom, and the dedicated package
(``atomicwrites``) is archived. Same directory => same filesystem => the rename is atomic, so a crash never leaves
half a file under the real name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` (flushed and fsynced) when the block ends without error."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
