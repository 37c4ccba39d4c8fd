"""Record the dev metrics of the quick experiments, so a refactor can prove it reproduces them (issue 18).

Runs each experiment of ``QUICK`` as the command line does (``python -m tmkd.run``, seed 42, CPU, tiny models and
synthetic data) into one fresh checkpoint folder, then writes every run's validation scores (the students of every
stage and the teachers they trained) to ``tests/pinned/quick_metrics.json`` with the commit that made them.
``tests/test_numbers_stay.py`` re-runs the same experiments and compares to float tolerance.

    python experiments/pin_quick_metrics.py            # writes tests/pinned/quick_metrics.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUICK = ("quickstart", "m_o_1_quick", "m_o_m_quick", "one_to_one_quick", "prune_quick", "adapter_quick",
         "m_o_1_quick_qa_v2")
# what every run of the pin shares: no W&B, no latency timing (machine-dependent), no progress bar
ARGS = ("seed=42", "logger=none", "report.latency=false", "trainer.enable_progress_bar=false")
OUT = ROOT / "tests" / "pinned" / "quick_metrics.json"


def run_experiment(name: str, checkpoints: Path) -> None:
    env = {**os.environ, "TMKD_CHECKPOINTS": str(checkpoints), "WANDB_MODE": "disabled"}
    subprocess.run([sys.executable, "-m", "tmkd.run", f"experiment={name}", *ARGS], env=env, check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)


def scores(checkpoints: Path) -> dict[str, dict[str, float]]:
    """``{"<experiment>/<run name>": {metric: value}}`` for every finished run under ``checkpoints``: the run
    folder's hash is left out (a refactor may change it), and so are timings and anything that is not a score."""
    found: dict[str, dict[str, float]] = {}
    for path in sorted(checkpoints.glob("runs/*/*/metrics.json")):
        experiment, folder = path.parent.parent.name, path.parent.name
        name = folder.rsplit("-", 1)[0]
        metrics = json.loads(path.read_text())
        found[f"{experiment}/{name}"] = {k: float(v) for k, v in sorted(metrics.items())
                                         if isinstance(v, (int, float)) and not isinstance(v, bool)
                                         and k.split("/")[0] in ("val", "dev", "val_matched", "val_mismatched")
                                         and not k.endswith("_best")}
    return {k: v for k, v in found.items() if v}


def pin(experiments: tuple[str, ...] = QUICK, checkpoints: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = checkpoints or Path(tmp)
        for name in experiments:
            started = time.perf_counter()
            run_experiment(name, folder)
            print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return scores(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    pinned = {"commit": commit, "experiments": list(QUICK), "args": list(ARGS), "runs": pin()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(pinned, indent=2) + "\n")
    print(f"wrote {args.out} ({len(pinned['runs'])} runs)")


if __name__ == "__main__":
    main()
