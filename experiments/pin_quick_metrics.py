"""Record the dev metrics of the quick experiments, so a refactor can prove it reproduces them (issue 18).

Runs each experiment of ``QUICK`` as the command line does (``python -m tmkd.run``, seed 42, CPU, tiny models and
synthetic data) into one fresh checkpoint folder, then writes every run's validation scores (per experiment: the
students of every stage and the teachers they trained) to ``tests/pinned/quick_metrics.json`` with the commit that
made them.
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


def plan_scores(name: str, checkpoints: Path) -> dict[str, dict[str, float]]:
    """``{run name: {metric: value}}`` for every run of ``name``'s plan (teachers and stages), read from the run
    folders the plan points at (their hashes are not part of the key: a refactor may change them). Only scores:
    validation metrics, not timings, not the ``_best`` copies."""
    from tmkd.cli import prepare_argv
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import build_plan

    previous = os.environ.get("TMKD_CHECKPOINTS")
    os.environ["TMKD_CHECKPOINTS"] = str(checkpoints)
    try:
        overrides = prepare_argv([f"experiment={name}", *ARGS])
        plan = build_plan(compose_run(overrides), overrides)
    finally:
        if previous is None:
            os.environ.pop("TMKD_CHECKPOINTS")
        else:
            os.environ["TMKD_CHECKPOINTS"] = previous
    return {run.name: scores_of(json.loads((run.out_dir / "metrics.json").read_text())) for run in plan.selected()}


def scores_of(metrics: dict[str, Any]) -> dict[str, float]:
    """What a run scored, flat: the best checkpoint's metrics (``best``), its teachers' and (adapters) the ensemble's
    dev scores, and the parameter count. Timings, paths and cache counters are left out: they may change."""
    flat: dict[str, float] = {"params": float(metrics["params"])} if "params" in metrics else {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}/", value)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            flat[prefix.rstrip("/")] = float(node)

    for section in ("best", "teachers", "ensemble"):
        walk(f"{section}:", metrics.get(section, {}))
    return {k: v for k, v in sorted(flat.items()) if not k.endswith("/weight")}


def pin(folder: Path, experiments: tuple[str, ...] = QUICK, run: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    found = {}
    for name in experiments:
        started = time.perf_counter()
        if run:
            run_experiment(name, folder)
        found[name] = plan_scores(name, folder)
        print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--checkpoints", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    parser.add_argument("--read-only", action="store_true", help="read --checkpoints' finished runs, run nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.checkpoints or Path(tmp)
        runs = pin(folder, run=not args.read_only)
        made_by = json.loads(next(folder.glob("runs/*/*/manifest.json")).read_text())["environment"]
    pinned = {"commit": made_by["git_commit"][:7], "environment": made_by, "args": list(ARGS), "experiments": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(pinned, indent=2) + "\n")
    print(f"wrote {args.out} ({sum(map(len, pinned['experiments'].values()))} runs)")


if __name__ == "__main__":
    main()
