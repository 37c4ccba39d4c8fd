"""Task metrics that need more than a classifier's accuracy/F1 (for now: the official SQuAD evaluation).

Names are loaded lazily: importing ``tmkd.metrics.squad`` here would make ``python -m tmkd.metrics.squad``
warn (runpy finds the module already imported) on stderr, which the CLI keeps for its one-line errors.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SquadInputError", "evaluate", "exact_match", "f1", "find_best_thresh", "golds_from_rows",
           "load_squad_json", "normalize_answer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("tmkd.metrics.squad"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
