"""Who may train a run folder: one OS-level lock per run, an owner recorded in the manifest, children that die with us.

Several processes (W&B sweep agents, on one machine or several sharing a file system) may run overlapping plans on one
``paths.checkpoints``. Every run folder has a lock (``<run folder>/.lock``), held for the whole training of that
run; a process that finds it taken trains something else first or waits, then re-reads the manifest and reuses
the finished run.

The lock is :class:`filelock.UnixFileLock` (``flock``; Windows: ``WindowsFileLock``, ``msvcrt.locking``), not
``SoftFileLock``: an ``flock`` belongs to an open file and the kernel drops it when the process dies, SIGKILL and
power loss of a client included, so a killed agent never leaves a lock that someone has to break by hand or by a
timeout guess. A soft lock (a file that exists) survives its owner; telling a dead owner from a slow one needs host
and pid checks that do not work across machines. Caveat: on NFS ``flock`` is emulated with NFS byte-range locks,
which work across clients only when the mount supports locking (NFSv4, or v3 with lockd; not ``nolock``); some FUSE
file systems offer no cross-host locking at all (README).

While a run is ``running`` its manifest names its owner (host, pid, a random token, start time); a process writes a
manifest only while it holds the run's lock and, after claiming it, only with its own token. A ``running`` manifest
whose lock is free was left by a process that is gone: the run counts as interrupted (resumed or run again).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import BaseFileLock, Timeout

from tmkd.pipeline import manifest

if sys.platform == "win32":  # pragma: no cover - tmkd runs on Linux; kept so the module imports everywhere
    from filelock import WindowsFileLock as OsFileLock
else:
    from filelock import UnixFileLock as OsFileLock

log = logging.getLogger(__name__)
ATTEMPTS = "attempts.jsonl"  # one line per start and end of training in the folder: how often it was trained
PARENT_ENV = "TMKD_PARENT_PID"
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Owner:
    """The process training a run: enough to tell it from any other, on any host, at any time."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    started_at: str = field(default_factory=manifest.now)

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} since {self.started_at}"


def describe_owner(found: dict[str, Any] | None) -> str:
    owner = (found or {}).get("owner") or {}
    if not owner:
        return "an unknown process (no owner recorded)"
    return f"{owner.get('host', '?')} pid {owner.get('pid', '?')} since {owner.get('started_at', '?')}"


def holder(folder: Path) -> str:
    """Who holds a locked run, as far as its manifest tells (it is written just after the lock is taken)."""
    found = manifest.read(folder)
    status = (found or {}).get("status")
    if status == "running":
        return f"being trained by {describe_owner(found)}"
    if status == "done":
        return "locked by another process (reusing it, or re-checking it)"
    return "locked by another process that is starting it"


def lock_path(folder: Path) -> Path:
    """``<run folder>/.lock``: inside, so that ``runs/<experiment>/`` keeps holding run folders only (tools glob it)."""
    return folder / ".lock"


def run_lock(folder: Path) -> BaseFileLock:
    folder.mkdir(parents=True, exist_ok=True)  # an empty run folder is a run "to run": harmless
    return OsFileLock(str(lock_path(folder)))


def try_lock(folder: Path) -> BaseFileLock | None:
    """The run's lock, acquired, or None when another process holds it."""
    lock = run_lock(folder)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def is_locked(folder: Path) -> bool:
    """Another process holds the run's lock (probed by trying it; nothing is left held)."""
    lock = try_lock(folder)
    if lock is None:
        return True
    lock.release()
    return False


def stale_note(folder: Path) -> str:
    """For the plan table: a ``running`` manifest is either being trained elsewhere now or left by a dead process."""
    found = manifest.read(folder)
    if not found or found.get("status") != "running":
        return ""
    if is_locked(folder):
        return f" [being trained by {describe_owner(found)}: will wait for it]"
    return f" [interrupted: was running under {describe_owner(found)}, which is gone]"


def claim_runs(runs: list[Any]) -> Iterator[tuple[Any, BaseFileLock]]:
    """Yield each run with its lock held, dependencies first; a run whose lock is taken waits while others go ahead.

    A run is ready when the runs it needs (among ``runs``) came through here. The caller finishes each run before
    asking for the next (the lock is released then). With nothing ready and free, this polls every
    :data:`POLL_SECONDS` and says once whom it waits for. (filelock's own blocking acquire waits for one lock only.)
    """
    names = {r.name for r in runs}
    finished: set[str] = set()
    pending = list(runs)
    told: set[str] = set()
    while pending:
        ready = [r for r in pending if all(n in finished or n not in names for n in r.needs)]
        for run in ready:
            lock = try_lock(run.out_dir)
            if lock is None:
                if run.name not in told:
                    told.add(run.name)
                    print(f"run {run.name}: {holder(run.out_dir)}; "
                          f"{'doing other runs first, then ' if len(ready) > 1 else ''}waiting for it", flush=True)
                continue
            pending.remove(run)
            try:
                yield run, lock
            finally:
                lock.release()
            finished.add(run.name)
            break
        else:
            time.sleep(POLL_SECONDS)


def take_over(folder: Path, run_name: str) -> None:
    """Called with the lock held: a manifest still ``running`` belongs to a process that is gone; say so."""
    found = manifest.read(folder)
    if found and found.get("status") == "running":
        print(f"run {run_name}: its manifest says running under {describe_owner(found)}, but that process is gone "
              "(its lock is free): treating the run as interrupted", flush=True)


def claim_manifest(folder: Path, owner: Owner, data: dict[str, Any]) -> None:
    """Write a fresh ``running`` manifest naming ``owner``; only with the run's lock held."""
    manifest.write(folder, {**data, "status": "running", "owner": asdict(owner)})
    record_attempt(folder, owner, "start")


def update_owned(folder: Path, owner: Owner, **changes: Any) -> bool:
    """Update the manifest if ``owner`` still owns it; False (and nothing written) when it names someone else."""
    found = manifest.read(folder) or {}
    token = (found.get("owner") or {}).get("token")
    if token != owner.token:
        log.error("not updating %s/%s: it belongs to %s, not to this process (%s)", folder, manifest.MANIFEST,
                  describe_owner(found), owner.describe())
        return False
    manifest.write(folder, {**found, **changes})
    if "status" in changes:
        record_attempt(folder, owner, str(changes["status"]))
    return True


def record_attempt(folder: Path, owner: Owner, event: str) -> None:
    """Append one line to ``attempts.jsonl`` (O_APPEND: whole lines even if a foreign writer interleaves)."""
    line = json.dumps({"event": event, "at": manifest.now(), **asdict(owner)}) + "\n"
    fd = os.open(folder / ATTEMPTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def attempts(folder: Path) -> list[dict[str, Any]]:
    path = folder / ATTEMPTS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# --- children die with their parent -------------------------------------------------------------------------------
PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None) -> None:
    """Make this process die (SIGKILL) when its parent does, so no orphan keeps writing into a run folder.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, delivered by the kernel the moment the parent exits, SIGKILL
    included, at no cost. SIGKILL, not SIGTERM: the run's owner is gone and another process may already hold its
    lock, so nothing here should write anything more. Elsewhere: a daemon thread polls the parent pid every second.
    ``expected_parent`` closes the race of a parent that died before the call (we would already be re-parented).
    Children this process starts (Lightning's DDP ranks) inherit :data:`PARENT_ENV` naming this process, and do the
    same in :mod:`tmkd.pipeline.node`, so a whole tree goes down with the runner.
    """
    parent = expected_parent if expected_parent is not None else os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:  # pragma: no cover - no prctl: poll
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="tmkd-parent-watchdog", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    os.environ[PARENT_ENV] = str(os.getpid())
