"""tmkd: multi-teacher two-stage knowledge distillation for BERT-style models.

``import tmkd`` is light (no torch, transformers or Lightning): the command line plans runs before it trains any,
and tests/test_import.py keeps it that way. tmkd's own model classes (``tmkd_pruned_bert``) are registered with
transformers' Auto classes by ``import tmkd.prune``, which every tmkd model loader does (:mod:`tmkd.models.build`).
``tmkd.distil``, ``tmkd.Distiller``, ``tmkd.plan`` and ``tmkd.run_plan`` (:mod:`tmkd.api`) load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# The Python API (README "Python API"), imported on first use: `import tmkd` stays light (tests/test_import.py).
_LAZY = {"distil": "tmkd.api", "Distiller": "tmkd.api", "Result": "tmkd.api", "plan": "tmkd.api",
         "run_plan": "tmkd.api", "TaskSpec": "tmkd.data.tasks"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'tmkd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
