"""What a run ran on: tmkd's version and commit, Python and the libraries that decide its numbers, device, threads.

Recorded in every run's manifest and shown in reports and model cards, so a number can be traced to the software
that produced it. Not part of a run's identity (its config hash): a run stays reusable across upgrades, and the plan
says when a reused run was made with other versions (:func:`version_changes`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from tmkd import __version__

# Distributions whose versions change results; their versions are compared when a finished run is reused.
PACKAGES = ("torch", "transformers", "pytorch-lightning", "datasets", "torchmetrics", "tokenizers")


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cpus() -> int:
    """CPUs this process may run on (affinity / container limits), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_state(folder: Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout holding tmkd's source; both None outside a checkout (a wheel)."""
    folder = folder or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        # tracked files only: untracked scratch files do not change what tmkd runs
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "--",
                                 str(folder)], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status.strip())}


def device_name(accelerator: str | None = None) -> str:
    """``cuda: <GPU name>`` when a run trains on a GPU, else ``cpu: <CPU name>``."""
    import torch

    if accelerator != "cpu" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    return f"cpu: {cpu_model()}"


def environment(threads: int | None = None, accelerator: str | None = None) -> dict[str, Any]:
    """The environment of this process, as recorded in a manifest (``threads``: the intra-op threads in use)."""
    import torch

    return {
        "tmkd": __version__, **{f"git_{k}": v for k, v in git_state().items()},
        "python": platform.python_version(), **{name: package_version(name) for name in PACKAGES},
        "device": device_name(accelerator), "threads": int(threads or torch.get_num_threads()),
        "cpus": usable_cpus(), "platform": platform.platform(),
    }


def version_changes(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """``["transformers 5.23.0 -> 5.25.0", ...]``: what differs between a run's recorded versions and now."""
    if not recorded:
        return ["no environment recorded"]
    keys = ("tmkd", "python", *PACKAGES)
    return [f"{k} {recorded.get(k)} -> {current.get(k)}" for k in keys if recorded.get(k) != current.get(k)]


def summary(env: dict[str, Any] | None) -> str:
    """One line for reports and model cards."""
    if not env:
        return "environment not recorded"
    commit = env.get("git_commit")
    code = f"tmkd {env.get('tmkd')}" + (f" @ {commit[:10]}{' (dirty)' if env.get('git_dirty') else ''}" if commit
                                         else "")
    libs = ", ".join(f"{k} {env[k]}" for k in ("python", *PACKAGES) if env.get(k))
    return f"{code}; {libs}; {env.get('device')}, {env.get('threads')} thread(s)"
