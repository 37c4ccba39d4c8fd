"""The quick experiments reproduce their pinned dev metrics (tests/pinned/quick_metrics.json).

The pin was made by ``experiments/pin_quick_metrics.py`` before the issue-18 redesign; a refactor must give the same
numbers (to float tolerance) or re-pin with the reason in its commit. Each experiment runs as the command line runs it,
into one checkpoint folder shared by the test's workers (the quick experiments share their tiny teachers, and the
runner's locks make concurrent workers train each shared run once).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import pin_quick_metrics as pin

pytestmark = pytest.mark.slow
PINNED = json.loads(pin.OUT.read_text())
# float tolerance: the same code on another CPU may sum in another order (threads, BLAS kernels)
ABS_TOL = 1e-4


@pytest.fixture(scope="session")
def shared_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp()
    shared = (root.parent if root.name.startswith("popen-gw") else root) / "numbers-stay"  # one for all xdist workers
    shared.mkdir(exist_ok=True)
    return shared


# the two longest first (longest-first on the xdist workers; see tests/conftest.py)
ORDER = sorted(PINNED["experiments"], key=lambda name: name not in ("quickstart", "m_o_1_quick_qa_v2"))


@pytest.mark.parametrize("experiment", ORDER)
def test_quick_experiment_reproduces_its_pinned_metrics(experiment: str, shared_checkpoints: Path) -> None:
    pin.run_experiment(experiment, shared_checkpoints)
    got = pin.plan_scores(experiment, shared_checkpoints)
    want = PINNED["experiments"][experiment]
    assert sorted(got) == sorted(want), "the plan's runs changed"
    for run, metrics in want.items():
        assert sorted(got[run]) == sorted(metrics), f"{experiment}/{run}: other metrics"
        for key, value in metrics.items():
            assert math.isclose(got[run][key], value, abs_tol=ABS_TOL), (
                f"{experiment}/{run} {key}: {got[run][key]} != pinned {value} (commit {PINNED['commit']})")
