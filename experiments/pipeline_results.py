"""One table from several experiments' report.json (written by the plan runner), for experiments/results/.

    python experiments/pipeline_results.py checkpoints/m_o_1_rte_qnli checkpoints/baseline_qnli ... > table.md
Rows: every run of every experiment (teachers once each), with its task, dev metric, size, and CPU latency
at batch 1 and 32 where the report measured it; speed-ups against each experiment's student.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(folder: str) -> dict[str, Any]:
    path = Path(folder) / "report.json" if Path(folder).is_dir() else Path(folder)
    return json.loads(path.read_text())


def ms(report: dict[str, Any], name: str, batch: int) -> float | None:
    entry = (report.get("latency", {}).get(name) or {}).get("batches", {}).get(str(batch))
    return float(entry["ms_per_batch"]) if entry else None


def main(folders: list[str]) -> str:
    lines = ["| experiment | run | kind | task | method | dev metric | train rows | params (M) | ms @1 | ms @32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    seen: set[str] = set()
    envs = []
    for folder in folders:
        report = load(folder)
        for run in report["runs"]:
            key = run["folder"]
            if key in seen:  # a teacher shared by several experiments: once
                continue
            seen.add(key)
            rows = (run.get("data") or {}).get("rows", {})
            train = next((v for k, v in rows.items() if k == "train"), "?")
            cells = [report["experiment"], run["name"] + (" (student)" if run["final"] else ""), run["role"],
                     str(run["task"]), str(run["method"]), f"{run['value']:.4f}" if run["value"] is not None else "-",
                     str(train), f"{run['params'] / 1e6:.1f}" if run["params"] else "-"]
            cells += [f"{v:.1f}" if (v := ms(report, run["name"], b)) else "-" for b in (1, 32)]
            lines.append("| " + " | ".join(cells) + " |")
        if report.get("latency"):
            envs.append(next(iter(report["latency"].values()))["env"])
    if envs:
        env = envs[0]
        lines += ["", f"Latency: {env.get('rows')} dev texts, {env.get('threads')} thread(s), "
                      f"torch {env.get('torch')}, "
                      f"{env.get('cpu')} ({env.get('cpus')} usable CPUs), dynamic padding, median ms per batch."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(sys.argv[1:]), end="")
