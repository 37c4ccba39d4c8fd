"""The QNLI study's results file, ``experiments/results/qnli_study.{md,json,png}``, generated from the runs.

The table is :mod:`tmkd.compare`'s (the same code as ``python -m tmkd.compare LABEL=RUN_FOLDER ... --baseline no_kd``,
whose exact command this script writes into the file): mean ± s.e. over seeds and, against the no-KD baseline, the
paired difference with a two-level bootstrap interval over seeds and dev examples. Around it: the teachers' dev
scores, each row's command and the commits its runs used, the held-out grid's choice, latency and parameters, and
the issue's expectations checked against the numbers. Rows whose runs have not finished are listed as such.

    python experiments/study/report.py --data-dir ../shared/data --teacher qnli_mpnet_s42=RUN_FOLDER \\
        --teacher qnli_minilm_s42=RUN_FOLDER [--latency]

``--latency`` measures CPU latency (one thread, batch 1 and 32, ``tmkd.deploy.latency``: the report's harness) of
the student and each teacher and stores it in ``qnli_study_latency.json``; without it the stored numbers are used.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "experiments" / "results" / "qnli_study"
LATENCY = OUT.with_name("qnli_study_latency.json")
GRID = OUT.with_name("qnli_study_grid.json")
TEACHERS = ("qnli_mpnet_s42", "qnli_minilm_s42")  # qnli_minilm_s7 was cut for CPU (PLAN.md)
METRIC = "val/accuracy"
BASELINE = "no_kd"


@dataclass
class Row:
    label: str
    experiment: str
    teachers: tuple[str, ...]
    what: str


ROWS = [
    Row(BASELINE, "qnli_study_baseline", (), "no KD (gold labels only)"),
    Row("one_to_one", "qnli_study_one_to_one", ("qnli_mpnet_s42",), "1-o-1 from the MPNet teacher"),
    Row("m_o_1_mean", "qnli_study_m_o_1", TEACHERS, "m-o-1, mean of the two teachers"),
    Row("m_o_1_agg", "qnli_study_m_o_1_agg", TEACHERS, "m-o-1, per-example aggregator chosen by the grid"),
    Row("m_o_m", "qnli_study_m_o_m", TEACHERS, "m-o-m (a head per teacher)"),
    Row("tmkd", "qnli_study_tmkd", TEACHERS, "TMKD two-stage: derived unlabelled pairs, then QNLI"),
    Row("mnli_qnli", "qnli_study_mnli_qnli", TEACHERS, "MNLI -> QNLI two-stage"),
    Row("control", "qnli_study_control", TEACHERS, "control: derived pairs with derived labels, then QNLI"),
]


def plan_row(row: Row, common: list[str], teachers: dict[str, str]) -> tuple[list[str], list[Any]]:
    """The row's command-line overrides and its final runs (one per seed)."""
    import tmkd

    overrides = [*common, *(f"teachers.{t}.name_or_path={teachers[t]}" for t in row.teachers if t in teachers)]
    plan = tmkd.plan(row.experiment, overrides)
    return overrides, [plan.runs[name] for name in plan.finals]


def finished(run: Any) -> bool:
    man = run.out_dir / "manifest.json"
    return (run.out_dir / "metrics.json").is_file() and man.is_file() and \
        json.loads(man.read_text()).get("status") == "done"


def commit_of(folder: Path) -> str:
    env = json.loads((folder / "manifest.json").read_text()).get("environment") or {}
    commit = (env.get("git_commit") or "?")[:7]
    return commit + (" (dirty)" if env.get("git_dirty") else "")


def teacher_rows(teachers: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for name, folder in teachers.items():
        f = Path(folder)
        metrics = json.loads((f / "metrics.json").read_text()) if (f / "metrics.json").is_file() else {}
        config = (f / "config.yaml").read_text() if (f / "config.yaml").is_file() else ""
        model = next((line.split(":", 1)[1].strip() for line in config.splitlines()
                      if line.strip().startswith("name_or_path:")), "?")
        attempts = (f / "attempts.jsonl").read_text().count('"event": "start"') if (f / "attempts.jsonl").is_file() \
            else None
        out.append({"name": name, "folder": folder, "model": model, "dev": (metrics.get("best") or {}).get(METRIC),
                    "epochs": metrics.get("epochs"), "params": metrics.get("params"),
                    "fit_seconds_total": metrics.get("fit_seconds_total"),  # all attempts (newer runs only)
                    "last_attempt_fit_seconds": metrics.get("fit_seconds"), "attempts": attempts,
                    "commit": commit_of(f) if (f / "manifest.json").is_file() else "?"})
    return out


def measure_latency(student: Path, teachers: dict[str, str], data_dir: str) -> dict[str, Any]:
    from tmkd.data.tasks import get_task
    from tmkd.deploy.latency import load_texts, model_latency

    task = get_task("qnli")
    texts = load_texts({"name": "qnli"}, data_dir, rows=64)
    out = {}
    for name, folder in {"student": str(student), **teachers}.items():
        out[name] = model_latency(Path(folder) / "hf", texts, batch_sizes=(1, 32), threads=1,
                                  max_length=task.max_length)
    return out


def fmt(x: float | None, scale: float = 100, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * scale:.{digits}f}"


# The pairwise expectations: (method, against, claim). Each gets its own paired interval (the same
# two-level bootstrap, with ``against`` as the baseline): two means with intervals against no-KD do not say
# whether the two methods differ.
PAIRS = (("m_o_1_mean", "one_to_one", ">="), ("tmkd", "m_o_1_mean", ">"), ("tmkd", "control", ">"))


def pairwise(inputs: list[str], replicates: int) -> dict[str, dict[str, Any]]:
    """``"a vs b"`` -> a's difference to b with its interval, for each pair of PAIRS whose rows both have runs."""
    from tmkd.analysis.compare import as_dict, run_comparison

    out = {}
    for a, b, _ in PAIRS:
        sub = [x for x in inputs if x.split("=", 1)[0] in (a, b)]
        if {x.split("=", 1)[0] for x in sub} == {a, b}:
            result = run_comparison(sub, b, replicates=replicates, allow_missing_seeds=True)
            out[f"{a} vs {b}"] = as_dict(result)["splits"]["validation"]["methods"][a]
    return out


def verdict(row: dict[str, Any]) -> str:
    """A claim "a > b" (or "a >= b") read off a's paired difference to b and its interval."""
    lo, hi = row["interval"]
    if lo > 0:  # ">=" too: a claim is shown only when the interval rules the other direction out
        return "holds (the interval excludes 0)"
    if hi < 0:
        return "does not hold (the interval excludes 0, against the claim)"
    if row["diff"] > 0:
        return "not resolved: the mean difference is in the claim's direction, but the interval contains 0"
    return "not resolved: the mean difference goes against the claim, and the interval contains 0"


def expectations(table: dict[str, Any], pairs: dict[str, dict[str, Any]], teachers: list[dict[str, Any]],
                 latency: dict[str, Any]) -> list[str]:
    """The issue's expectations, each checked against the numbers (or said to be not measurable yet)."""
    rows = table.get("methods", {})
    lines = []

    def diff(label: str, row: dict[str, Any] | None, against: str) -> str:
        if not row or row["interval"] is None:
            return f"{label}: not run yet"
        lo, hi = row["interval"]
        return (f"{label} - {against} = {row['diff'] * 100:+.2f} points, 95% interval "
                f"[{lo * 100:+.2f}, {hi * 100:+.2f}] ({row['covers']})")

    kd = [(x, rows.get(x)) for x in ("one_to_one", "m_o_1_mean", "tmkd")]
    lines.append("- KD vs no KD, the paired interval should exclude 0: " + "; ".join(
        diff(x, r, BASELINE) + (f": {verdict(r)}" if r and r["interval"] else "") for x, r in kd) + ".")
    for a, b, claim in PAIRS:
        row = pairs.get(f"{a} vs {b}")
        if row is None:
            lines.append(f"- {a} {claim} {b}: not measurable yet (a row has no finished run).")
        else:
            lines.append(f"- {a} {claim} {b}: {diff(a, row, b)}: {verdict(row)}.")
    best = max((t for t in teachers if t["dev"] is not None), key=lambda t: t["dev"], default=None)
    students = {k: v["mean"] for k, v in rows.items() if k != BASELINE}
    if best and students:
        top = max(students, key=students.get)
        ratio = students[top] / best["dev"]
        lines.append(f"- Student >= 95% of the best teacher ({best['name']}, {fmt(best['dev'])}): the best row, "
                     f"{top}, reaches {fmt(students[top])} = {ratio * 100:.1f}% "
                     f"({'holds' if ratio >= 0.95 else 'does not hold'}; the best row is picked on dev).")
    mp, st = latency.get("qnli_mpnet_s42"), latency.get("student")
    if mp and st:
        b1 = mp["batches"]["1"]["ms_per_batch"] / st["batches"]["1"]["ms_per_batch"]
        lines.append(f"- Batch-1 CPU latency at least 6x lower than the MPNet teacher's: {b1:.1f}x "
                     f"({'holds' if b1 >= 6 else 'does not hold'}).")
    else:
        lines.append("- Latency against the MPNet teacher: not measured yet (`--latency`).")
    return lines


def main(argv: list[str] | None = None) -> int:
    from tmkd.analysis.compare import as_dict, run_comparison, write_outputs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--teacher", action="append", default=[], metavar="NAME=FOLDER")
    ap.add_argument("--latency", action="store_true", help="measure latency now (an idle machine) and store it")
    ap.add_argument("--replicates", type=int, default=10_000)
    args = ap.parse_args(argv)
    teachers = dict(spec.split("=", 1) for spec in args.teacher)
    unknown = sorted(set(teachers) - set(TEACHERS))
    if unknown or not all(Path(f).is_dir() for f in teachers.values()):
        ap.error(f"--teacher NAME=FOLDER with NAME in {TEACHERS} and an existing folder; got {args.teacher}")
    common = [f"data.dir={args.data_dir}"]
    inputs: list[str] = []
    status = []
    for row in ROWS:
        overrides, runs = plan_row(row, common, teachers)
        done = [r for r in runs if finished(r)]
        inputs += [f"{row.label}={r.out_dir}" for r in done]
        status.append({"label": row.label, "experiment": row.experiment, "what": row.what,
                       "command": shlex.join(["python", "-m", "tmkd.run", f"experiment={row.experiment}", *overrides]),
                       "seeds": [r.config["seed"] for r in runs], "done": [r.config["seed"] for r in done],
                       "runs": {str(r.config["seed"]): {"folder": str(r.out_dir), "commit": commit_of(r.out_dir)}
                                for r in done}})
    compare_cmd = shlex.join(["python", "-m", "tmkd.compare", *inputs, "--baseline", BASELINE, "--out", str(OUT),
                              "--allow-missing-seeds"])
    if not any(s["label"] == BASELINE and s["done"] for s in status):
        print("no finished run of the baseline yet; rows:", json.dumps(status, indent=2))
        return 1
    result = run_comparison(inputs, BASELINE, replicates=args.replicates, allow_missing_seeds=True)
    paths = write_outputs(result, OUT)
    table = as_dict(result)["splits"].get("validation", {})
    teacher_info = teacher_rows(teachers)
    if args.latency:
        student = Path(next(s for s in status if s["label"] == "m_o_1_mean")["runs"]["1"]["folder"])
        LATENCY.write_text(json.dumps(measure_latency(student, teachers, args.data_dir), indent=2) + "\n")
    latency = json.loads(LATENCY.read_text()) if LATENCY.is_file() else {}
    grid = json.loads(GRID.read_text()) if GRID.is_file() else {}

    md = [paths["md"].read_text().replace("# Comparison:", "# QNLI study:", 1), "## Rows", "",
          "| row | what | seeds run / planned | commits |", "|---|---|---|---|"]
    for s in status:
        commits = sorted({r["commit"] for r in s["runs"].values()})
        md.append(f"| {s['label']} | {s['what']} | {s['done'] or '-'} / {s['seeds']} | {', '.join(commits) or '-'} |")
    md += ["", "Each row is one command (its experiment's defaults are the table's settings):", "", "```bash"]
    md += [s["command"] for s in status]
    md += ["```", "", "The table above is this command's output:", "", "```bash", compare_cmd, "```", "",
           "## Teachers", "",
           "| teacher | model | dev accuracy | epochs | params | attempts | fit, all attempts (s) "
           "| last attempt's fit (s) | commit |", "|---|---|---|---|---|---|---|---|---|"]
    for t in teacher_info:
        md.append(f"| {t['name']} | {t['model']} | {fmt(t['dev'])} | {t['epochs']} | {t['params']:,} | "
                  f"{t['attempts']} | {t['fit_seconds_total'] or 'not recorded'} | {t['last_attempt_fit_seconds']} | "
                  f"{t['commit']} |")
    md += ["", "'Fit, all attempts' is the training time behind the kept progress, summed over the resumes after "
           "session stops (metrics.json's `fit_seconds_total`); runs trained by a snapshot older than that field "
           "do not have it, and their attempts are listed instead."]
    md += ["", "## Settings chosen on held-out train rows", ""]
    md += ([f"- {k}: {v}" for k, v in (grid.get("choice") or {}).items()] or ["- the grid has not finished"])
    md += ["", "Grid, rule and every point: [qnli_study_grid.md](qnli_study_grid.md).", "", "## Latency", ""]
    if latency:
        md += ["| model | params | batch 1 (ms) | batch 32 (ms/batch) |", "|---|---|---|---|"]
        for name, entry in latency.items():
            params = (entry.get("model") or {}).get("params")
            md.append(f"| {name} | {f'{params:,}' if params else '?'} | {entry['batches']['1']['ms_per_batch']:.1f} | "
                      f"{entry['batches']['32']['ms_per_batch']:.1f} |")
    else:
        md.append("Not measured yet.")
    pairs = pairwise(inputs, args.replicates)
    md += ["", "## Expectations of the issue, checked", "",
           "Against no KD, the intervals are the table's; each method-against-method claim has its own paired "
           "interval (the same bootstrap with the second method as the baseline).", "",
           *expectations(table, pairs, teacher_info, latency), ""]
    paths["md"].write_text("\n".join(md))
    data = json.loads(paths["json"].read_text())
    data["study"] = {"rows": status, "teachers": teacher_info, "grid_choice": grid.get("choice"), "latency": latency,
                     "pairwise": pairs,
                     "compare_command": compare_cmd}
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
