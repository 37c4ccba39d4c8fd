"""Compare methods across seeds on paired dev predictions: collect runs, check them, bootstrap, write md/json/png."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tmkd.analysis.bootstrap import Comparison, MethodRuns, compare
from tmkd.analysis.runs import (
    CompareError,
    RunInfo,
    check_reported,
    discover,
    group_runs,
    label_runs,
    load_predictions,
    load_run,
    split_labelled,
)
from tmkd.atomic import atomic_file


@dataclass
class Result:
    baseline: str
    methods: dict[str, list[RunInfo]]
    splits: dict[str, Comparison]  # split -> comparison
    prefixes: dict[str, str]
    examples: dict[str, int]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def resolve_baseline(name: str, labels: list[str]) -> str:
    if name in labels:
        return name
    close = [label for label in labels if name in label]
    if len(close) == 1:
        return close[0]
    which = f"several methods {close}" if close else "no method"
    raise CompareError(f"baseline {name!r} matches {which}; methods: {labels}")


def missing_seeds(methods: dict[str, list[RunInfo]], baseline: str) -> list[str]:
    """One line per method that lacks some of the baseline's seeds."""
    want = {r.seed for r in methods[baseline]}
    problems = []
    for label, runs in methods.items():
        missing = sorted(want - {r.seed for r in runs})
        if missing:
            problems.append(f"method {label!r} lacks seed(s) {missing} that the baseline {baseline!r} has "
                            f"(it has {sorted(r.seed for r in runs)})")
    return problems


def check_seeds(methods: dict[str, list[RunInfo]], baseline: str) -> None:
    if problems := missing_seeds(methods, baseline):
        raise CompareError("; ".join(problems) + ": run the missing seeds, or pass --allow-missing-seeds to compare "
                           "what there is")


def paired_tables(methods: dict[str, list[RunInfo]], baseline: str, only: list[str] | None
                  ) -> tuple[dict[str, dict[str, MethodRuns]], dict[str, str], list[str]]:
    """Per split: each method's predictions ``[seeds, examples]``, after checking every file covers the same rows."""
    loaded = {r.folder: load_predictions(r) for runs in methods.values() for r in runs}
    every = [set(p) for p in loaded.values()]
    common = sorted(set.intersection(*every))
    notes = []
    if only:
        absent = [s for s in only if s not in common]
        if absent:
            raise CompareError(f"split(s) {absent} are not in every run's predictions; common splits: {common}")
        common = list(only)
    if not common:
        raise CompareError(f"the runs share no evaluated split: {[sorted(s) for s in every]}")
    if any(s != set(common) for s in every) and not only:
        notes.append(f"compared the splits every run has: {common}")
    reference = methods[baseline][0]
    out: dict[str, dict[str, MethodRuns]] = {}
    prefixes: dict[str, str] = {}
    for split in common:
        tables = {folder: p[split]["table"] for folder, p in loaded.items()}
        prefixes[split] = loaded[reference.folder][split]["prefix"]
        key = "idx" if all("idx" in t for t in tables.values()) else "row"
        ref = tables[reference.folder]
        bad = []
        for runs in methods.values():
            for r in runs:
                t = tables[r.folder]
                check_reported(r, split, loaded[r.folder][split]["prefix"], t)
                if not np.array_equal(t[key], ref[key]):
                    bad.append(f"{r.folder} ({len(t[key])} rows, {key} {_span(t[key])})")
                elif not np.array_equal(t["label"], ref["label"]):
                    bad.append(f"{r.folder} (same {key}s, other gold labels)")
        if bad:
            raise CompareError(f"{split}: prediction files do not cover the same dev examples as {reference.folder} "
                               f"({len(ref[key])} rows, {key} {_span(ref[key])}): " + "; ".join(bad)
                               + ". Runs can only be paired on the same dev set (same data and data.max_eval_samples)")
        out[split] = {label: MethodRuns([r.seed for r in runs], np.stack([tables[r.folder]["pred"] for r in runs]),
                                        ref["label"]) for label, runs in methods.items()}
    return out, prefixes, notes


def _span(ids: np.ndarray) -> str:
    return f"{ids[0]}..{ids[-1]}" if len(ids) else "none"


def run_comparison(paths: list[str | Path], baseline: str, metric: str = "accuracy", group: str = "config",
                   splits: list[str] | None = None, replicates: int = 10_000, confidence: float = 0.95,
                   seed: int = 0, allow_missing_seeds: bool = False) -> Result:
    plain, labelled = split_labelled(paths)
    folders, notes = discover(plain) if plain else ([], [])
    named: dict[str, list[RunInfo]] = {}
    for label, path in labelled:
        found, skipped = discover([path])
        notes += skipped
        named.setdefault(label, []).extend(load_run(f) for f in found)
    if not folders and not any(named.values()):
        raise CompareError(f"no finished run under {[str(p) for p in paths]}")
    empty = sorted(label for label, runs in named.items() if not runs)
    if empty:
        raise CompareError(f"no finished run for label(s) {empty}")
    grouped = label_runs(named, group_runs([load_run(f) for f in folders], group))
    baseline = resolve_baseline(baseline, sorted(grouped))
    methods = {baseline: grouped[baseline], **{m: grouped[m] for m in sorted(grouped) if m != baseline}}
    if allow_missing_seeds:
        notes += [f"{line} (compared anyway: --allow-missing-seeds)" for line in missing_seeds(methods, baseline)]
    else:
        check_seeds(methods, baseline)
    tables, prefixes, more = paired_tables(methods, baseline, splits)
    result = Result(baseline, methods, {}, prefixes, {}, {
        "metric": metric, "group": group, "replicates": replicates, "confidence": confidence, "seed": seed},
        notes + more)
    for split, runs in tables.items():
        result.splits[split] = compare(runs, baseline, metric, replicates, confidence, seed)
        result.examples[split] = len(runs[baseline].labels)
    return result


# --- outputs ------------------------------------------------------------------------------------------------


def covers(result: Result, label: str) -> str:
    """What the interval of ``label`` vs the baseline accounts for (explicit when a side has one seed)."""
    single = [m for m in (label, result.baseline) if len(result.methods[m]) < 2]
    if not single:
        return "examples + seeds"
    if len(single) == 2 or label == result.baseline:
        return "examples only (1 seed each)" if label != result.baseline else "examples only (1 seed)"
    other = result.baseline if single[0] == label else label
    return f"examples + seeds of {other} only ({single[0]} has 1 seed)"


def as_dict(result: Result) -> dict[str, Any]:
    out: dict[str, Any] = {**result.settings, "baseline": result.baseline, "notes": result.notes, "splits": {}}
    for split, comp in result.splits.items():
        rows = {}
        for label, runs in result.methods.items():
            scores = comp.scores[label]
            rows[label] = {
                "seeds": [r.seed for r in runs], "runs": [str(r.folder) for r in runs], "scores": scores.tolist(),
                "n": len(scores), "mean": float(scores.mean()),
                "se": float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else None,
                "diff": None if label == result.baseline else comp.diff[label],
                "interval": None if label == result.baseline else list(comp.interval[label]),
                "covers": None if label == result.baseline else covers(result, label),
            }
        out["splits"][split] = {"prefix": result.prefixes[split], "examples": result.examples[split], "methods": rows}
    return out


def _pts(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(result: Result) -> str:
    data = as_dict(result)
    conf = round(100 * result.settings["confidence"])
    lines = [f"# Comparison: {result.settings['metric']} against {result.baseline}", "",
             f"Scores in points (x100). Mean ± standard error over seeds; Δ = method mean - baseline mean, with a "
             f"{conf}% two-level bootstrap interval ({result.settings['replicates']:,} replicates): seeds resampled "
             "within each method, dev examples resampled once per replicate and shared by both methods (paired). "
             "An interval that excludes 0 is a difference larger than seed and dev-set noise explain.", ""]
    for split, block in data["splits"].items():
        lines += [f"## {split} ({block['prefix']}, {block['examples']:,} examples)", "",
                  f"| method | seeds | mean ± s.e. | Δ vs baseline | {conf}% interval | interval covers |",
                  "|---|---|---|---|---|---|"]
        for label, row in block["methods"].items():
            mean = _pts(row["mean"]) + (f" ± {_pts(row['se'])}" if row["se"] is not None else " (1 seed: no s.e.)")
            seeds = f"{row['n']} ({', '.join(map(str, row['seeds']))})"
            if row["diff"] is None:
                lines.append(f"| **{label}** (baseline) | {seeds} | {mean} | | | |")
            else:
                lo, hi = row["interval"]
                lines.append(f"| {label} | {seeds} | {mean} | {row['diff'] * 100:+.2f} | [{lo * 100:+.2f}, "
                             f"{hi * 100:+.2f}] | {row['covers']} |")
        lines.append("")
    lines += [f"- {note}" for note in result.notes]
    lines += ["", "Method: nested (hierarchical) bootstrap, Davison & Hinkley (1997) ch. 3.8; seeds resampled as in "
              "Bouthillier et al. (2021), \"Accounting for Variance in Machine Learning Benchmarks\"."]
    return "\n".join(lines).rstrip() + "\n"


def plot(result: Result, path: Path) -> Path | None:
    """Dot-and-whisker plot of each method's difference to the baseline (points), one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [m for m in result.methods if m != result.baseline]
    if not others:
        return None
    fig, axes = plt.subplots(1, len(result.splits), figsize=(5.5 * len(result.splits), 0.6 * len(others) + 1.8),
                             dpi=120, squeeze=False)
    for ax, (split, comp) in zip(axes[0], result.splits.items(), strict=True):
        y = np.arange(len(others))[::-1]
        diffs = np.array([comp.diff[m] for m in others]) * 100
        lo = np.array([comp.interval[m][0] for m in others]) * 100
        hi = np.array([comp.interval[m][1] for m in others]) * 100
        ax.errorbar(diffs, y, xerr=[diffs - lo, hi - diffs], fmt="o", capsize=4, color="tab:blue")
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(y, [f"{m} (n={len(result.methods[m])})" if len(result.methods[m]) > 1
                          else f"{m} (n=1: seeds not resampled)" for m in others])
        ax.set_xlabel(f"Δ {result.settings['metric']} vs {result.baseline} (points)")
        ax.set_title(f"{split}: {round(100 * result.settings['confidence'])}% two-level bootstrap")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(result: Result, prefix: str | Path) -> dict[str, Path]:
    """``<prefix>.md``, ``<prefix>.json`` and ``<prefix>.png`` (no plot when there is only the baseline)."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = {"md": prefix.with_name(prefix.name + ".md"), "json": prefix.with_name(prefix.name + ".json")}
    with atomic_file(paths["md"]) as handle:
        handle.write(markdown(result).encode())
    with atomic_file(paths["json"]) as handle:
        handle.write((json.dumps(as_dict(result), indent=2) + "\n").encode())
    png = plot(result, prefix.with_name(prefix.name + ".png"))
    if png is not None:
        paths["png"] = png
    return paths
