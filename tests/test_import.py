"""``import tmkd`` stays light: a notebook or the command line pays for torch, transformers and Lightning only
when it builds or trains something (the layers themselves are checked by ``lint-imports``, see setup.cfg)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "pytorch_lightning", "lightning_fabric", "datasets", "torchmetrics", "pandas",
         "pyarrow", "hydra", "wandb")


def imported_after(code: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter (this checkout's tmkd)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.partition('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_tmkd_loads_no_heavy_library():
    loaded = imported_after(f"import tmkd; assert tmkd.__file__.startswith({str(ROOT)!r}), tmkd.__file__")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_metrics_package_names_its_functions_without_importing_them():
    loaded = imported_after("import tmkd.metrics; assert {'build_metrics', 'evaluate'} <= set(tmkd.metrics.__all__)")
    assert "torchmetrics" not in loaded and "tmkd" in loaded
