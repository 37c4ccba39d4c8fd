"""The one place the planner and the search ask "what does this run's method (stage type) do?".

Kept to one small function so that the stage-type registry (tmkd.pipeline.stages, issue 18) answers it once it
lands: point :func:`uses_teachers` at the registry and nothing else in plan.py / search/sweeps.py changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def uses_teachers(config: Mapping[str, Any]) -> bool:
    """Whether a resolved run config distils from ``distill.teachers`` (so they are planned, checked and hashed):
    every method but ``finetune``, and ``adapter`` only with ``adapter.distill: true``."""
    method = config.get("method", "finetune")
    if method == "adapter":
        return bool((config.get("adapter") or {}).get("distill"))
    return method != "finetune"
