"""Stage chaining: a model that a run needs but that does not exist yet is trained first, by recipe."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from tmkd.models.build import HF_EXPORT

log = logging.getLogger(__name__)


def ensure_trained(spec: dict[str, Any]) -> None:
    """Train a missing model from its ``recipe`` (an experiment + overrides) into ``name_or_path``.

    This chains stages: a run whose teachers (or whose stage-1 student) do not exist yet trains them
    first, once; later runs find the folder and reuse it. It runs as a child process because Hydra
    allows one composed app per process.
    """
    recipe, path = spec.get("recipe"), spec.get("name_or_path")
    if not recipe or not path or (Path(path) / HF_EXPORT / "config.json").is_file():
        return
    overrides = [f"experiment={recipe['experiment']}", *recipe.get("overrides", []), f"hydra.run.dir={path}",
                 f"run_name={Path(path).name}"]
    log.info("%s missing: training it with %s", spec.get("name"), " ".join(overrides))
    done = subprocess.run([sys.executable, "-m", "tmkd.run", *overrides], check=False)
    if done.returncode != 0 or not (Path(path) / HF_EXPORT / "config.json").is_file():
        raise RuntimeError(f"training {spec.get('name') or path!r} by recipe {recipe} failed "
                           f"(exit {done.returncode}); see {path}")
