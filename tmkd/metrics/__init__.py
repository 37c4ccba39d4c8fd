"""Task metrics: classification metrics by name (torchmetrics), and the official SQuAD evaluation.

The lowest layer beside tmkd.registry: task kinds (tmkd.data.kinds) build their evaluators from it.
Names are loaded lazily: importing ``tmkd.metrics.squad`` here would make ``python -m tmkd.metrics.squad``
warn (runpy finds the module already imported) on stderr, which the CLI keeps for its one-line errors.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    **dict.fromkeys(("METRICS", "build_metrics"), "tmkd.metrics.classification"),
    **dict.fromkeys(("SquadInputError", "evaluate", "exact_match", "f1", "find_best_thresh", "golds_from_rows",
                     "load_squad_json", "normalize_answer"), "tmkd.metrics.squad"),
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
