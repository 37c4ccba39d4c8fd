"""Seeds as an axis of a plan: every stage's metrics summarised over its seeds (mean, sample std, n).

The per-seed runs are ordinary runs of the plan (``<stage>-s<seed>``); this module only reads their results. Paired
comparisons with intervals over seeds *and* dev examples are :mod:`tmkd.compare`'s job.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from tmkd.pipeline.plan import Plan, base_name


def summarise(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{stage: {"seeds": [...], "runs": [...], "metrics": {key: {"mean", "std", "n", "values"}}}}`` for the
    seeded stages that have results (empty without a seeds axis)."""
    if not plan.seeds:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for run in plan.selected():
        if run.role != "stage" or run.name not in results:
            continue
        seed = int(run.config["seed"])
        entry = out.setdefault(base_name(run.name), {"seeds": [], "runs": [], "values": {}})
        entry["seeds"].append(seed)
        entry["runs"].append(run.name)
        for key, value in (results[run.name].get("best") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                entry["values"].setdefault(key, {})[seed] = float(value)
    for entry in out.values():
        values = entry.pop("values")
        entry["metrics"] = {key: stats(by_seed) for key, by_seed in sorted(values.items())}
    return out


def stats(by_seed: dict[int, float]) -> dict[str, Any]:
    """Mean and sample standard deviation (n-1; None for one seed) over seeds."""
    values = list(by_seed.values())
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": {str(k): v for k, v in by_seed.items()}}


def mean_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """``{key: mean}`` of one stage's summary: what a seeded experiment returns to searches."""
    return {key: m["mean"] for key, m in summary["metrics"].items()}


def format_stat(m: dict[str, Any]) -> str:
    return f"{m['mean']:.4f} ± {m['std']:.4f} (n={m['n']})" if m["std"] is not None else \
        f"{m['mean']:.4f} (n=1)"
