"""Collect run folders' metrics.json into one markdown table (student and teacher scores, time).

    python experiments/collect.py checkpoints/m_o_1_rte checkpoints/finetune_rte ... > experiments/results/x.md
Each argument is a run folder or a folder of run folders.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def runs(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        found += [p] if (p / "metrics.json").is_file() else sorted(q.parent for q in p.glob("*/metrics.json"))
    return found


def row(run: Path) -> dict[str, str]:
    m = json.loads((run / "metrics.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    kind = m.get("method") or m.get("stage")  # runs before the plan runner called it "stage"
    method = kind if kind != "many_to_one" else f"many_to_one ({cfg['distill']['aggregator']['name']})"
    model = str(cfg["model"]["name_or_path"] or "tiny").rstrip("/")
    depth = cfg["model"]["num_layers"] or (len(cfg["model"]["layers"]) if cfg["model"]["layers"] else "all")
    teachers = m.get("teachers", {})
    return {
        "run": run.name, "method": method, "model": f"{model.split('/')[-1]} (layers: {depth})",
        "seed": str(cfg["seed"]), "dev accuracy": f"{m['best'].get('val/accuracy', float('nan')):.4f}",
        "teachers (dev accuracy)": ", ".join(f"{k} {v.get('val/accuracy', float('nan')):.4f}"
                                             for k, v in teachers.items()) or "-",
        "epochs": str(m["epochs"]), "fit s": f"{m['fit_seconds']:.0f}", "params": f"{m['params'] / 1e6:.1f}M",
    }


def main() -> None:
    rows = [row(r) for r in runs(sys.argv[1:])]
    if not rows:
        sys.exit("no run folders with metrics.json found")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(r[c] for c in cols) + " |")


if __name__ == "__main__":
    main()
