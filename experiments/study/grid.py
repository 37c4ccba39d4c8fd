"""The QNLI study's settings grid (experiments/study/PLAN.md, step 1), on the held-out 10% of the train subset.

Pre-declared and sequential, each step keeping the earlier steps' winners (student seed 1, m-o-1 from all the
study's teachers unless said):
  1. (temperature, alpha) in (2, .5), (8, .5), (2, .9), (8, .9) at the default epochs, `mean` aggregator;
  2. epochs 2 and 4 for the winner of 1, and for the no-KD baseline;
  3. the aggregator: mean (from 1-2), confidence, best; the per-example one (confidence or best) is the table's.
Rule: the highest held-out accuracy wins; a difference under 0.5 points is a tie, which goes to the earlier point.

Every point is a plan run (reused when finished, resumed when interrupted), so re-running the script after a stop
goes on where it stopped. The tables, ``experiments/results/qnli_study_grid.{md,json}``, are written from the runs'
``metrics.json`` and manifests, never typed; the dev set is not read (``data.holdout``).

    python experiments/study/grid.py --data-dir ../shared/data \\
        --teacher qnli_mpnet_s42=RUN_FOLDER --teacher qnli_minilm_s42=RUN_FOLDER
    python experiments/study/grid.py ... --dry-run     # the points and their commands, nothing trains
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "experiments" / "results" / "qnli_study_grid"
HOLDOUT = ["data.holdout.fraction=0.1", "data.holdout.seed=0"]
SEED = 1
METRIC = "val/accuracy"  # with data.holdout the held-out rows are what val/ scores
TIE = 0.005  # PLAN.md: under 0.5 points is a tie, about half a standard error on ~1,050 held-out rows
STEP1 = [(2.0, 0.5), (8.0, 0.5), (2.0, 0.9), (8.0, 0.9)]
EPOCHS = [2, 4]
AGGREGATORS = ["mean", "confidence", "best"]
PER_EXAMPLE = ["confidence", "best"]


@dataclass
class Point:
    step: str
    label: str
    experiment: str
    settings: dict[str, Any]
    overrides: list[str]
    result: dict[str, Any] = field(default_factory=dict)

    def command(self, common: list[str]) -> str:
        return " ".join(["python -m tmkd.run", f"experiment={self.experiment}", *self.overrides, *common])


def winner(points: list[Point]) -> Point:
    """PLAN.md's rule: the first point (declared order) within TIE of the best held-out accuracy."""
    best = max(p.result["accuracy"] for p in points)
    return next(p for p in points if p.result["accuracy"] >= best - TIE)


def kd_point(step: str, t: float, a: float, epochs: int | None = None, aggregator: str = "mean") -> Point:
    settings: dict[str, Any] = {"temperature": t, "alpha": a, "epochs": epochs or "default (2)",
                                "aggregator": aggregator}
    ovs = [f"distill.temperature={t}", f"distill.alpha={a}", f"aggregator={aggregator}"]
    if epochs is not None:
        ovs.append(f"trainer.max_epochs={epochs}")
    label = f"m-o-1 T={t:g} alpha={a:g}" + (f" {epochs} ep" if epochs else "") + (
        f" {aggregator}" if aggregator != "mean" else "")
    return Point(step, label, "qnli_study_m_o_1", settings, ovs)


def run_point(point: Point, common: list[str], dry_run: bool) -> None:
    import tmkd

    plan = tmkd.plan(point.experiment, [*point.overrides, *common])
    run = plan.runs[plan.final]
    print(f"[{point.step}] {point.label}: {run.out_dir}", flush=True)
    if dry_run:
        print("    " + point.command(common), flush=True)
        return
    tmkd.run_plan(plan, report=False)
    metrics = json.loads((run.out_dir / "metrics.json").read_text())
    manifest = json.loads((run.out_dir / "manifest.json").read_text())
    env = manifest.get("environment") or {}
    data = metrics.get("data") or {}
    if data.get("eval") != "holdout":
        raise SystemExit(f"{run.out_dir}: scored on {data.get('eval')!r}, not the held-out rows")
    point.result = {"accuracy": metrics["best"][METRIC], "run": str(run.out_dir), "hash": run.hash,
                    "commit": env.get("git_commit"), "dirty": env.get("git_dirty"),
                    "held_out_rows": (data.get("holdout") or {}).get("rows"), "epochs": metrics.get("epochs")}
    print(f"    held-out accuracy {point.result['accuracy']:.4f}", flush=True)


def write(points: list[Point], choice: dict[str, Any], common: list[str]) -> None:
    done = [p for p in points if p.result]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(
        {"rule": f"highest held-out {METRIC}; under {TIE * 100:.1f} points is a tie, won by the earlier point",
         "holdout": HOLDOUT, "seed": SEED, "choice": choice,
         "points": [{"step": p.step, "label": p.label, "experiment": p.experiment, "settings": p.settings,
                     "overrides": p.overrides, **p.result} for p in done]}, indent=2) + "\n")
    rows = ["| step | point | held-out accuracy | rows | commit | run |", "|---|---|---|---|---|---|"]
    for p in done:
        r = p.result
        commit = (r["commit"] or "?")[:7] + (" (dirty)" if r["dirty"] else "")
        rows.append(f"| {p.step} | {p.label} | {r['accuracy']:.4f} | {r['held_out_rows']} | {commit} | "
                    f"`{Path(r['run']).parent.name}/{Path(r['run']).name}` |")
    chosen = "\n".join(f"- {k}: {v}" for k, v in choice.items()) or "- (not finished)"
    OUT.with_suffix(".md").write_text(
        "# QNLI study: the settings grid on held-out train rows\n\n"
        "Generated by `experiments/study/grid.py` from the runs' `metrics.json` (do not edit). The grid and its rule "
        "were fixed in `experiments/study/PLAN.md` before any student ran. Every point trains the 3-layer MiniLM "
        f"(seed {SEED}) on 90% of the 10,475-row QNLI train subset and scores the other 10% "
        f"(`{' '.join(HOLDOUT)}`); the QNLI dev set is not read. The teachers saw the held-out rows (PLAN.md), so "
        "held-out accuracies are comparable with each other, not with dev numbers.\n\n"
        f"Rule: the highest held-out accuracy wins; a difference under {TIE * 100:.1f} points is a tie, which goes "
        "to the earlier (simpler, default) point.\n\n" + "\n".join(rows) + "\n\n## Choice\n\n" + chosen + "\n\n"
        "Common overrides of every point: `" + " ".join(common) + "`\n")
    print(f"wrote {OUT.with_suffix('.md')} and .json", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--teacher", action="append", default=[], metavar="NAME=FOLDER",
                    help="a finished teacher used by name_or_path instead of planning its run")
    ap.add_argument("--step", type=int, choices=(1, 2, 3), default=3, help="run the grid up to this step")
    ap.add_argument("--dry-run", action="store_true", help="print the points and commands; train nothing")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    teachers = []
    for spec in args.teacher:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not Path(folder).is_dir():
            ap.error(f"--teacher {spec!r}: expected NAME=FOLDER with an existing folder")
        teachers.append(f"teachers.{name}.name_or_path={folder}")
    common = [*HOLDOUT, f"seeds=[{SEED}]", f"data.dir={args.data_dir}", "logger=csv",
              "trainer.enable_progress_bar=false", "report.enabled=false",
              *([f"threads={args.threads}"] if args.threads else [])]
    kd_common = [*common, *teachers]
    points: list[Point] = []
    choice: dict[str, Any] = {}

    def go(batch: list[Point], extra: list[str]) -> list[Point]:
        for p in batch:
            points.append(p)
            run_point(p, extra, args.dry_run)
            if not args.dry_run:
                write(points, choice, common)  # after every point: a stopped grid still shows what it has
        return batch

    step1 = go([kd_point("1", t, a) for t, a in STEP1], kd_common)
    t, a = (step1[0].settings["temperature"], step1[0].settings["alpha"]) if args.dry_run else (
        winner(step1).settings["temperature"], winner(step1).settings["alpha"])
    if not args.dry_run:
        choice.update(temperature=t, alpha=a)
    if args.step >= 2:
        kd = go([kd_point("2", t, a, e) for e in EPOCHS], kd_common)
        base = go([Point("2", f"no KD {e} ep", "qnli_study_baseline", {"epochs": e}, [f"trainer.max_epochs={e}"])
                   for e in EPOCHS], common)
        if not args.dry_run:
            choice.update(kd_epochs=winner(kd).settings["epochs"], baseline_epochs=winner(base).settings["epochs"])
    if args.step >= 3:
        epochs = choice.get("kd_epochs", EPOCHS[0])
        aggs = go([kd_point("3", t, a, epochs, g) for g in AGGREGATORS], kd_common)
        if not args.dry_run:
            choice.update(aggregator_overall=winner(aggs).settings["aggregator"],
                          per_example_aggregator=winner([p for p in aggs if p.settings["aggregator"] in PER_EXAMPLE]
                                                        ).settings["aggregator"])
    if not args.dry_run:
        write(points, choice, common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
