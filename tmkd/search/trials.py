"""The table of a search: every trial's parameters and optimised metric, best first (``trials.csv``, ``trials.md``).

Hooked into the hparams_search configs as a Hydra callback (``hydra.callbacks.trials_table``): when the multirun
starts it records the searched params and the direction (``search.yaml``); when it ends, it reads each trial folder
of the sweep dir (``<hydra.sweep.dir>/<job num>/``: ``.hydra/overrides.yaml``, ``.hydra/config.yaml``,
``metrics.json``) and writes both tables into the sweep dir. To rebuild them (e.g. while a search is still running,
or after one was interrupted)::

    python -m tmkd.search.trials <sweep dir>
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

import tmkd.pipeline.compose  # noqa: F401  (registers the resolvers the saved trial configs use)

log = logging.getLogger(__name__)

DEFAULT_METRIC = "val/accuracy"
SEARCH_FILE = "search.yaml"  # the search's params and direction, for rebuilding the table
FACTS = ("epochs", "fit_seconds", "teacher_forward_batches", "cache_hits", "cache_misses")


def _order(name: str) -> tuple[bool, int, str]:
    return not name.isdigit(), int(name) if name.isdigit() else 0, name


def trial_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep dir's trial folders (those with Hydra's ``.hydra/overrides.yaml``), by job number."""
    found = [p.parent.parent for p in Path(sweep_dir).glob("*/.hydra/overrides.yaml")]
    return sorted(found, key=lambda p: _order(p.name))


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def trial_metric(config_file: Path) -> str | None:
    """The trial's ``optimized_metric``, resolved (by default it interpolates the task's main metric through the
    ``tmkd.main_metric`` resolver); the rest of the saved config is left unresolved (it holds ``${hydra:...}``)."""
    if not config_file.is_file():
        return None
    value = OmegaConf.select(OmegaConf.load(config_file), "optimized_metric", default=None)
    return None if value is None else str(value)


def read_overrides(trial: Path) -> dict[str, str]:
    """A trial's command-line overrides (``key=value``, sweep choices included) as key -> value string."""
    out: dict[str, str] = {}
    for item in _yaml(trial / ".hydra" / "overrides.yaml") or []:
        key, eq, value = str(item).partition("=")
        if eq:
            out[key.lstrip("+~")] = value
    return out


def _sweeper(sweep_dir: Path) -> dict[str, Any]:
    """The sweeper settings: ``search.yaml`` (written by :class:`TrialsTable` when a search starts), else
    Hydra's ``multirun.yaml`` (the basic sweeper writes one; the Optuna sweeper does not)."""
    search = _yaml(Path(sweep_dir) / SEARCH_FILE)
    if isinstance(search, dict):
        return search
    return ((_yaml(Path(sweep_dir) / "multirun.yaml") or {}).get("hydra", {}).get("sweeper")) or {}


def write_search(sweep_dir: Path, params: dict[str, Any] | None, direction: str | list[str]) -> Path:
    """Record the searched params and the direction in ``<sweep dir>/search.yaml`` (read back to rebuild tables)."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / SEARCH_FILE
    path.write_text(yaml.safe_dump({"params": params, "direction": direction}, sort_keys=False))
    return path


def searched_params(sweep_dir: Path) -> list[str] | None:
    """The searched keys (the sweeper's ``params``), if recorded."""
    params = _sweeper(sweep_dir).get("params")
    return list(params) if isinstance(params, dict) and params else None


def search_direction(sweep_dir: Path) -> str:
    direction = _sweeper(sweep_dir).get("direction", "maximize")
    if isinstance(direction, list):  # multi-objective: the table ranks by the first
        direction = direction[0] if direction else "maximize"
    return "minimize" if str(direction).lower() == "minimize" else "maximize"


def _param_value(trial: Path, key: str, overrides: dict[str, str]) -> str:
    """The trial's value of ``key``: its override, else the group's choice, else the composed config's value."""
    if key in overrides:
        return overrides[key]
    choices = ((_yaml(trial / ".hydra" / "hydra.yaml") or {}).get("hydra", {}).get("runtime") or {}).get("choices")
    if isinstance(choices, dict) and key in choices:
        return str(choices[key])
    config = trial / ".hydra" / "config.yaml"
    if config.is_file():
        value = OmegaConf.select(OmegaConf.load(config), key, default=None, throw_on_resolution_failure=False)
        return "" if value is None else str(value)
    return ""


def collect_trials(sweep_dir: Path, param_names: Sequence[str] | None = None
                   ) -> tuple[list[dict[str, Any]], str, list[str], str]:
    """(rows best first, metric name, parameter names, direction) for the trials under ``sweep_dir``.

    Trials without ``metrics.json`` (failed, or still running) come last with status ``incomplete``.
    """
    sweep_dir = Path(sweep_dir)
    dirs = trial_dirs(sweep_dir)
    overrides = {d: read_overrides(d) for d in dirs}
    if param_names is None:
        param_names = searched_params(sweep_dir)
    if param_names is None:  # no sweeper params recorded: the overrides that differ between trials (or all)
        keys = sorted({k for o in overrides.values() for k in o})
        param_names = [k for k in keys if len({o.get(k) for o in overrides.values()}) > 1] or keys
    direction = search_direction(sweep_dir)
    metric = DEFAULT_METRIC
    rows = []
    for d in dirs:
        metric = trial_metric(d / ".hydra" / "config.yaml") or metric
        facts = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else None
        value = (facts or {}).get("best", {}).get(metric)
        cache = (facts or {}).get("soft_target_cache") or {}
        rows.append({
            "trial": d.name, "status": "ok" if value is not None else "incomplete",
            "value": None if value is None else float(value),
            **{f"param:{k}": _param_value(d, k, overrides[d]) for k in param_names},
            "epochs": (facts or {}).get("epochs"), "fit_seconds": (facts or {}).get("fit_seconds"),
            "teacher_forward_batches": (facts or {}).get("teacher_forward_batches"),
            "cache_hits": cache.get("hits"), "cache_misses": cache.get("misses"), "dir": str(d),
        })
    sign = -1.0 if direction == "maximize" else 1.0
    rows.sort(key=lambda r: (r["value"] is None or math.isnan(r["value"]),
                             sign * r["value"] if r["value"] is not None else 0.0, _order(r["trial"])))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank if row["status"] == "ok" else None
    return rows, metric, list(param_names), direction


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    try:  # parameter values arrive as override strings: shorten long floats only
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}" if "." in str(value) or "e" in str(value).lower() else str(value)


def write_tables(sweep_dir: Path, param_names: Sequence[str] | None = None, stem: str = "trials"
                 ) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` (full precision) and ``<stem>.md`` (rounded) into ``sweep_dir``; return their paths."""
    sweep_dir = Path(sweep_dir)
    rows, metric, params, direction = collect_trials(sweep_dir, param_names)
    header = ["rank", "trial", metric, *params, *FACTS, "status", "dir"]

    def cells(row: dict[str, Any], fmt: Any) -> list[Any]:
        return [row["rank"], row["trial"], fmt(row["value"]), *(fmt(row[f"param:{k}"]) for k in params),
                *(row[k] for k in FACTS), row["status"], row["dir"]]

    csv_path = sweep_dir / f"{stem}.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if c is None else c for c in cells(row, lambda v: v)])
    finished = [r for r in rows if r["status"] == "ok"]
    lines = [f"# Trials: {sweep_dir.name}", "",
             f"{len(rows)} trials, {len(finished)} finished; optimised: `{metric}` ({direction}), best first."]
    if finished:
        lines.append(f"Best: trial {finished[0]['trial']} ({metric} = {finished[0]['value']:.4f}).")
    lines += ["", "| " + " | ".join(header[:-1]) + " |", "|" + "---|" * (len(header) - 1)]
    for row in rows:
        shown = ["" if c is None else str(c) for c in cells(row, _fmt)[:-1]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in shown) + " |")
    md_path = sweep_dir / f"{stem}.md"
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


class TrialsTable(Callback):
    """Hydra callback: the table of trials, written into the sweep dir when a multirun ends."""

    def __init__(self, stem: str = "trials") -> None:
        self.stem = stem

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            sweeper = config.hydra.sweeper
            params = sweeper.get("params")
            direction = sweeper.get("direction", "maximize")
            directions = list(direction) if OmegaConf.is_list(direction) else [direction]
            write_search(sweep_dir, {str(k): str(v) for k, v in params.items()} if params else None,
                         [str(d).rsplit(".", 1)[-1] for d in directions] if len(directions) > 1
                         else str(directions[0]).rsplit(".", 1)[-1])  # Direction.maximize -> maximize
        except Exception as err:  # the table is a convenience: never stop a search over it
            log.warning("could not record the search settings: %s", err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
            names = list(params) if isinstance(params, DictConfig) and len(params) else None
            _, md_path = write_tables(sweep_dir, names, self.stem)
        except Exception as err:  # a finished search must not fail over its summary table
            log.warning("could not write the table of trials: %s", err)
            return
        log.info("table of trials (best first): %s", md_path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmkd.search.trials",
                                     description="Rebuild trials.csv / trials.md of a search folder.")
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder (hydra.sweep.dir) of a search")
    parser.add_argument("--params", default=None, help="comma-separated keys to tabulate (default: the searched)")
    args = parser.parse_args(argv)
    if not trial_dirs(args.sweep_dir):
        print(f"no trials under {args.sweep_dir} (expected <job num>/.hydra/overrides.yaml)")
        return 1
    names = [p for p in args.params.split(",") if p] if args.params else None
    csv_path, md_path = write_tables(args.sweep_dir, names)
    print(md_path.read_text(), end="")
    print(f"written: {csv_path}, {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
