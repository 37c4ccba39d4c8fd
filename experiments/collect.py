"""Collect run folders' metrics.json into one markdown table (student and teacher scores, time).

Classification runs show dev accuracy; QA runs the official SQuAD keys (EM, F1, HasAns / NoAns, best thresholds).

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
    main = "val/f1" if "val/f1" in m["best"] else "val/accuracy"  # QA runs: SQuAD F1; classification: accuracy
    scores = {f"dev {k[4:]}": f"{m['best'][k]:.4f}" if k == "val/accuracy" else f"{m['best'][k]:.2f}"
              for k in (QA_COLUMNS if main == "val/f1" else ("val/accuracy",)) if k in m["best"]}
    return {
        "run": run.name, "method": method, "model": f"{model.split('/')[-1]} (layers: {depth})",
        "seed": str(cfg["seed"]), **scores,
        f"teachers (dev {main[4:]})": ", ".join(f"{k} {v.get(main, float('nan')):.4f}"
                                                for k, v in teachers.items()) or "-",
        "train rows (QA: windows)": str(m["train_examples"]), "epochs": str(m["epochs"]),
        "fit s": f"{m['fit_seconds']:.0f}",
        "params": f"{m['params'] / 1e6:.1f}M",
    }


# the official SQuAD keys, in the official script's order (v1.1 runs have only the first two)
QA_COLUMNS = ("val/exact", "val/f1", "val/HasAns_exact", "val/HasAns_f1", "val/NoAns_exact", "val/NoAns_f1",
              "val/best_exact", "val/best_exact_thresh", "val/best_f1", "val/best_f1_thresh")


def main() -> None:
    rows = [row(r) for r in runs(sys.argv[1:])]
    if not rows:
        sys.exit("no run folders with metrics.json found")
    cols = list(dict.fromkeys(c for r in rows for c in r))  # QA and classification runs may share a table
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(r.get(c, "-") for c in cols) + " |")


if __name__ == "__main__":
    main()
