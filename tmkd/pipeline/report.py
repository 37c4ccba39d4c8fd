"""The experiment report: every run's dev metrics, the student's size and speed against its teachers.

Writes ``<experiment_dir>/report.md`` (with an accuracy-vs-latency PNG), ``report.json``, the final student
as a ``save_pretrained`` export with a model card (``student/README.md``), and the same table to W&B.
Latency comes from one harness (:mod:`tmkd.deploy.latency`) with the same texts and threads for every model.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from tmkd.environment import summary as env_summary
from tmkd.models.build import HF_EXPORT
from tmkd.pipeline import manifest
from tmkd.pipeline.export import write_json
from tmkd.pipeline.plan import Plan, Run
from tmkd.pipeline.seeds import format_stat, summarise

log = logging.getLogger(__name__)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def main_metric(metrics: dict[str, Any]) -> tuple[str, float | None]:
    """The run's main metric (its task's, e.g. ``val/binary_f1`` on MRPC) and best value; runs from before
    metrics.json named it fall back to the first of accuracy, f1, exact."""
    best = metrics.get("best") or {}
    for key in (metrics.get("main_metric"), "val/accuracy", "val/f1", "val/exact"):
        if key in best:
            return key, float(best[key])
    key = next((k for k in sorted(best) if k.startswith("val/")), "")
    return key, (float(best[key]) if key else None)


def base_model(plan: Plan, run: Run) -> str:
    """The pretrained model a run's weights started from, following init_from back through earlier stages."""
    model = run.config.get("model") or {}
    source = model.get("name_or_path")
    by_dir = {str(r.out_dir): r for r in plan.runs.values()}
    if source in by_dir:
        return base_model(plan, by_dir[source])
    return str(source) if source else f"tiny random BERT {model.get('tiny')}"


def collect_rows(plan: Plan, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for run in plan.selected():
        metrics = results.get(run.name) or {}
        key, value = main_metric(metrics)
        export = run.out_dir / HF_EXPORT
        rows.append({
            "name": run.name, "role": run.role, "experiment": run.experiment, "task": metrics.get("task"),
            "method": metrics.get("method"), "metric": key, "value": value, "best": metrics.get("best", {}),
            "params": metrics.get("params"), "size_mb": round(folder_bytes(export) / 2**20, 2) if export.is_dir()
            else None, "folder": str(run.out_dir), "final": run.name == plan.final, "data": metrics.get("data"),
            "teachers": sorted(metrics.get("teachers") or {}),
            "environment": (manifest.read(run.out_dir) or {}).get("environment"),
        })
    return rows


def measure_latencies(rows: list[dict[str, Any]], plan: Plan, options: dict[str, Any]) -> dict[str, Any]:
    """Latency at each batch size for the student and the final stage's teachers, on the final task's dev texts
    (held-out texts of train with ``data.holdout``: the dev set stays unread)."""
    from tmkd.data.holdout import Holdout
    from tmkd.data.tasks import get_task
    from tmkd.deploy.latency import load_texts, model_latency

    final = plan.runs[plan.final]
    task_cfg = final.config["task"]
    holdout = Holdout.from_config(final.config["data"].get("holdout"))
    texts = load_texts(task_cfg, final.config["data"].get("dir"), rows=int(options.get("rows", 64)), holdout=holdout)
    task = get_task(task_cfg["name"], **{k: v for k, v in task_cfg.items() if k != "name"})
    max_length = int(final.config["data"].get("max_length") or task.max_length)
    measured = {}
    targets = [r for r in rows if r["final"] or (r["role"] == "teacher" and r["task"] == rows_task(rows))]
    for row in targets:
        export = Path(row["folder"]) / HF_EXPORT
        if (export / "config.json").is_file():  # a transformers model (an adapter's export is a tmkd predictor)
            measured[row["name"]] = model_latency(export, texts, batch_sizes=tuple(options.get("batch_sizes", (1, 32))),
                                                  threads=options.get("threads"), max_length=max_length)
    return measured


def rows_task(rows: list[dict[str, Any]]) -> str | None:
    return next((r["task"] for r in rows if r["final"]), None)


def plot(rows: list[dict[str, Any]], latency: dict[str, Any], batch: int, path: Path) -> Path | None:
    """Dev metric against latency at ``batch``: one point per model of the final task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r, latency[r["name"]]["batches"][str(batch)]["ms_per_batch"]) for r in rows
              if r["name"] in latency and r["value"] is not None and str(batch) in latency[r["name"]]["batches"]]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for row, ms in points:
        ax.scatter(ms, row["value"], marker="*" if row["final"] else "o", s=140 if row["final"] else 60,
                   color="tab:red" if row["final"] else "tab:blue")
        ax.annotate(row["name"], (ms, row["value"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"CPU latency, batch {batch} (ms per batch)")
    ax.set_ylabel(points[0][0]["metric"] + " (dev)")
    ax.set_title(f"{rows_task(rows)}: student (star) and teachers")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(plan: Plan, rows: list[dict[str, Any]], latency: dict[str, Any], png: Path | None,
             batch_sizes: list[int]) -> str:
    final = next(r for r in rows if r["final"])
    head = ["run", "role", "task", "method", "dev metric", "params (M)", "size (MB)"]
    head += [f"ms/batch @{b}" for b in batch_sizes] + [f"speed-up @{b}" for b in batch_sizes]
    lines = [f"# Report: {plan.experiment}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    student_ms = {b: _ms(latency, final["name"], b) for b in batch_sizes}
    for r in rows:
        ms = {b: _ms(latency, r["name"], b) for b in batch_sizes}
        cells = [r["name"] + (" (student)" if r["final"] else ""), r["role"], str(r["task"]), str(r["method"]),
                 f"{r['metric']} = {r['value']:.4f}" if r["value"] is not None else "-",
                 f"{r['params'] / 1e6:.2f}" if r["params"] else "-", str(r["size_mb"] or "-")]
        cells += [f"{ms[b]:.1f}" if ms[b] else "-" for b in batch_sizes]
        cells += [f"{ms[b] / student_ms[b]:.2f}x" if ms[b] and student_ms[b] else "-" for b in batch_sizes]
        lines.append("| " + " | ".join(cells) + " |")
    if latency:
        env = next(iter(latency.values())).get("env", {})
        texts = "held-out train" if (final.get("data") or {}).get("eval") == "holdout" else "dev"
        lines += ["", f"Latency: {env.get('rows', '?')} {texts} texts of {rows_task(rows)}, dynamic padding, "
                      f"{env.get('threads', '?')} thread(s), torch {env.get('torch', '?')}, {env.get('cpu', '?')}; "
                      "speed-up = that model's latency / the student's (same harness, same threads)."]
    data = final.get("data") or {}
    lines += ["", f"Student data: {data.get('source', '?')}, rows {data.get('rows', '?')}, caps: train "
                  f"{data.get('max_train_samples')}, eval {data.get('max_eval_samples')}; metrics on the "
                  f"{scored_on(data)}."]
    lines += ["", *environment_lines(rows)]
    if png is not None:
        lines += ["", f"![dev metric against latency]({png.name})"]
    lines += ["", "Runs: " + ", ".join(f"`{r['name']}` -> {r['folder']}" for r in rows), ""]
    return "\n".join(lines)


def scored_on(data: dict[str, Any]) -> str:
    """What a run's metrics were measured on: the dev set, or the held-out part of train (``data.holdout``)."""
    held = data.get("holdout") if data.get("eval") == "holdout" else None
    if not held:
        return "dev set"
    return (f"held-out part of train ({held['fraction'] * 100:g}%, seed {held['seed']}, {held['rows']} rows), "
            "not the dev set")


def environment_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Which software and device made each run: one line when all agree, else one per environment."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(env_summary(r.get("environment")), []).append(r["name"])
    if len(groups) == 1:
        return [f"Environment of every run: {next(iter(groups))}."]
    return ["Environments:", *(f"- {', '.join(names)}: {line}" for line, names in groups.items())]


def seeds_markdown(over_seeds: dict[str, dict[str, Any]]) -> str:
    """Each seeded stage's dev metrics as mean ± sample std over seeds (n); empty without a seeds axis."""
    if not over_seeds:
        return ""
    lines = ["## Over seeds", "", "| stage | seeds | metric | mean ± std (n) | per seed |", "|---|---|---|---|---|"]
    for stage, entry in over_seeds.items():
        for key, m in entry["metrics"].items():
            if not key.startswith(("val", "best/")):
                continue
            per_seed = ", ".join(f"{s}: {v:.4f}" for s, v in m["values"].items())
            lines.append(f"| {stage} | {entry['seeds']} | {key} | {format_stat(m)} | {per_seed} |")
    lines += ["", "Intervals that account for seeds and dev examples: `python -m tmkd.compare` (see README).", ""]
    return "\n".join(lines)


def _ms(latency: dict[str, Any], name: str, batch: int) -> float | None:
    entry = (latency.get(name) or {}).get("batches", {}).get(str(batch))
    return float(entry["ms_per_batch"]) if entry else None


def model_card(plan: Plan, rows: list[dict[str, Any]], latency: dict[str, Any]) -> str:
    final_run = plan.runs[plan.final]
    final = next(r for r in rows if r["final"])
    base = base_model(plan, final_run)
    teachers = [r for r in rows if r["role"] == "teacher"]
    stages = [r for r in rows if r["role"] == "stage"]
    task_cfg = final_run.config["task"]
    spans = _is_qa(task_cfg)
    front = ["---", "library_name: transformers",
             f"pipeline_tag: {'question-answering' if spans else 'text-classification'}",
             "tags: [tmkd, knowledge-distillation, multi-teacher]"]
    if not base.startswith("tiny"):
        front.append(f"base_model: {base}")
    front.append("---")
    body = [f"# {plan.experiment}: distilled student", "",
            f"A {final['params'] / 1e6:.1f}M-parameter student trained by tmkd in {len(stages)} stage(s) from "
            f"`{base}`.", "", "## Stages"]
    for r in stages:
        data = r.get("data") or {}
        body.append(f"- **{r['name']}**: `{r['experiment']}` ({r['method']}) on {r['task']}; dev {r['metric']} = "
                    f"{r['value']:.4f}; teachers: {', '.join(r['teachers']) or 'none'}; data {data.get('source')}, "
                    f"rows {data.get('rows')}, train cap {data.get('max_train_samples')}, "
                    f"eval cap {data.get('max_eval_samples')}; scored on the {scored_on(data)}")
    body += ["", "## Teachers"]
    body += [f"- {r['name']}: `{r['experiment']}` on {r['task']}, dev {r['metric']} = {r['value']:.4f}, "
             f"{(r['params'] or 0) / 1e6:.1f}M params" for r in teachers if r["value"] is not None] or ["- none"]
    where = scored_on(final.get("data") or {})
    body += ["", f"## Metrics of this model ({where})", "", "```json",
             json.dumps(final["best"], indent=2, sort_keys=True), "```", "",
             "Task: " + str(task_cfg.get("name")) + ". Train splits marked as capped or subsets above "
             "are partial: compare with other runs on the same data, not with full-data results.", "",
             "## Environment", "", *environment_lines(rows), "",
             "```python", *(["# transformers 5 has no question-answering pipeline; tmkd's answerer decodes spans",
                             "from tmkd.models.qa_answer import QuestionAnswerer",
                             "qa = QuestionAnswerer('PATH')"] if spans else
                            ["from transformers import pipeline",
                             "clf = pipeline('text-classification', model='PATH')"]), "```", ""]
    return "\n".join(front + body)


def _is_qa(task_cfg: dict[str, Any]) -> bool:
    from tmkd.data.tasks import get_task

    return get_task(task_cfg["name"]).kind == "qa"


def export_student(plan: Plan, rows: list[dict[str, Any]], latency: dict[str, Any]) -> Path | None:
    source = plan.runs[plan.final].out_dir / HF_EXPORT
    if not source.is_dir():
        return None
    target = plan.experiment_dir / "student"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    (target / "README.md").write_text(model_card(plan, rows, latency))
    return target


def log_wandb(plan: Plan, rows: list[dict[str, Any]], png: Path | None, logger_cfg: dict[str, Any]) -> None:
    if (logger_cfg or {}).get("backend") != "wandb":  # only a run configured for W&B opens a W&B run
        return
    import wandb

    from tmkd.pipeline.loggers import wandb_offline

    run = wandb.init(project=logger_cfg.get("project", "tmkd"), entity=logger_cfg.get("entity"),
                     group=plan.experiment, job_type="report", name=f"{plan.experiment}-report",
                     dir=str(plan.experiment_dir), mode="offline" if wandb_offline(logger_cfg.get("offline")) else
                     "online", reinit="finish_previous")
    columns = ["run", "role", "task", "method", "metric", "value", "params", "size_mb"]
    table = wandb.Table(columns=columns, data=[[r["name"], r["role"], r["task"], r["method"], r["metric"], r["value"],
                                                r["params"], r["size_mb"]] for r in rows])
    payload: dict[str, Any] = {"report/runs": table}
    if png is not None:
        payload["report/accuracy_vs_latency"] = wandb.Image(str(png))
    run.log(payload)
    run.finish()


def write_report(plan: Plan, results: dict[str, dict[str, Any]], latency: bool = True, rows: int = 64,
                 batch_sizes: tuple[int, ...] | list[int] = (1, 32), threads: int | None = None,
                 logger: dict[str, Any] | None = None) -> Path:
    """Write report.md/.json (+ PNG) and the student export into ``plan.experiment_dir``; returns report.json."""
    out = plan.experiment_dir
    out.mkdir(parents=True, exist_ok=True)
    table = collect_rows(plan, results)
    batch_sizes = [int(b) for b in batch_sizes]
    measured = measure_latencies(table, plan, {"rows": rows, "batch_sizes": batch_sizes, "threads": threads}
                                 ) if latency else {}
    png = plot(table, measured, batch_sizes[-1], out / "report.png") if measured else None
    over_seeds = summarise(plan, results)
    (out / "report.md").write_text(markdown(plan, table, measured, png, batch_sizes) + seeds_markdown(over_seeds))
    student = export_student(plan, table, measured)
    write_json(out / "report.json", {"experiment": plan.experiment, "runs": table, "latency": measured,
                                     "student_export": str(student) if student else None,
                                     "plot": str(png) if png else None, "seeds": over_seeds})
    try:
        log_wandb(plan, table, png, logger or {})
    except Exception as err:  # the report on disk is the record; a W&B hiccup must not fail the experiment
        log.warning("could not log the report to W&B: %s", err)
    return out / "report.json"
