"""W&B sweep files: load, check against the configs, sample a trial, build its command exactly as ``wandb agent``.

A sweep file (``experiments/sweeps/<name>.yaml``) names its parameters by their Hydra override keys
(``distill.temperature``, ``optim.lr``, ``aggregator``, ...) and runs ``python -m tmkd.run experiment=<name>
${args_no_hyphens}``, so ``wandb sweep <file>`` + ``wandb agent <id>`` need no wrapper script.

``python -m tmkd.search.sweeps <file> --check`` checks a file before ``wandb sweep``; without ``--check`` it runs
``--count`` trials locally, sampled from the file's space, with the command the agent would run (no W&B server;
runs log to W&B offline unless a key is set), and writes the table of trials (tmkd.search.trials).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SWEEP_DIR = REPO_ROOT / "experiments" / "sweeps"
MODULE = "tmkd.run"
METHODS = ("grid", "random", "bayes")
GOALS = ("maximize", "minimize")
REQUIRED = ("program", "method", "metric", "parameters", "command")
# W&B distributions this module can sample, with the keys each one needs (docs: sweep configuration options).
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "constant": ("value",), "categorical": ("values",), "int_uniform": ("min", "max"), "uniform": ("min", "max"),
    "q_uniform": ("min", "max"), "log_uniform": ("min", "max"), "log_uniform_values": ("min", "max"),
    "q_log_uniform": ("min", "max"), "q_log_uniform_values": ("min", "max"), "normal": (), "q_normal": (),
    "log_normal": (), "q_log_normal": (),
}
GRID_OK = ("constant", "categorical", "int_uniform", "q_uniform")


def load_sweep(path: str | Path) -> dict[str, Any]:
    """The sweep file as ``wandb sweep`` reads it (``yaml.safe_load``, as wandb's ``load_sweep_config``)."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sweep file is a mapping, got {type(data).__name__}")
    return data


def sweep_files(folder: Path = SWEEP_DIR) -> list[Path]:
    return sorted(folder.glob("*.yaml"))


def distribution(spec: Mapping[str, Any]) -> str:
    """The distribution of a parameter spec, inferred as W&B does when ``distribution`` is not given."""
    if "distribution" in spec:
        return str(spec["distribution"])
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
        return "int_uniform"
    return "uniform"


def sweep_problems(sweep: Mapping[str, Any]) -> list[str]:
    """What is wrong with a sweep file's structure (empty: nothing); see :func:`config_problems` for the keys."""
    problems = [f"missing key {k!r}" for k in REQUIRED if k not in sweep]
    if sweep.get("method", "random") not in METHODS:
        problems.append(f"method {sweep.get('method')!r} is not one of {METHODS}")
    metric = sweep.get("metric")
    if not isinstance(metric, dict) or not metric.get("name") or metric.get("goal") not in GOALS:
        problems.append(f"metric must be {{name: <logged name>, goal: maximize|minimize}}, got {metric!r}")
    params = sweep.get("parameters")
    if not isinstance(params, dict) or not params:
        problems.append("parameters must be a non-empty mapping of Hydra override keys to specs")
        params = {}
    for name, spec in params.items():
        problems += [f"parameter {name!r}: {p}" for p in _spec_problems(spec, sweep.get("method"))]
    command = sweep.get("command")
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        problems.append("command must be a list of strings")
    else:
        if "${args_no_hyphens}" not in command:
            problems.append("command must pass the parameters as Hydra overrides: ${args_no_hyphens}")
        if hydra_args(command) is None:
            problems.append(f"command must run the module: ..., -m, {MODULE}, experiment=<name>, ${{args_no_hyphens}}")
        elif not experiment_of(sweep):
            problems.append("command must pick the experiment: experiment=<name>")
    return problems


def _spec_problems(spec: Any, method: Any) -> list[str]:
    if not isinstance(spec, dict):
        return [f"spec must be a mapping, got {spec!r}"]
    if "parameters" in spec:
        return ["nested parameters are not Hydra override keys; write the dotted key (a.b.c) instead"]
    kind = distribution(spec)
    if kind not in DISTRIBUTIONS:
        return [f"distribution {kind!r} is not one of {sorted(DISTRIBUTIONS)}"]
    problems = [f"{kind} needs {k!r}" for k in DISTRIBUTIONS[kind] if k not in spec]
    if problems:
        return problems
    if kind == "categorical":
        values = spec["values"]
        if not isinstance(values, list) or not values:
            problems.append("values must be a non-empty list")
        elif any(v is None or isinstance(v, (dict, list)) for v in values):
            problems.append(f"values must be scalars (null would reach Hydra as the string 'None'): {values}")
        elif len(set(map(str, values))) != len(values):
            problems.append(f"values repeat: {values}")
        probs = spec.get("probabilities")
        if probs is not None and (len(probs) != len(values) or not math.isclose(sum(probs), 1.0)):
            problems.append("probabilities must match values and sum to 1")
    elif kind == "constant" and (spec["value"] is None or isinstance(spec["value"], (dict, list))):
        problems.append("value must be a scalar")
    elif "min" in DISTRIBUTIONS[kind]:
        lo, hi = spec["min"], spec["max"]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)) or not lo < hi:
            problems.append(f"needs numbers min < max, got min={lo!r} max={hi!r}")
        elif kind == "int_uniform" and not (isinstance(lo, int) and isinstance(hi, int)):
            problems.append("int_uniform needs integer min and max")
        elif kind in ("log_uniform_values", "q_log_uniform_values") and lo <= 0:
            problems.append(f"{kind} needs min > 0 (min and max are the values themselves)")
    if method == "grid" and kind not in GRID_OK:
        problems.append(f"method grid cannot enumerate a {kind} distribution")
    return problems


def sample_value(spec: Mapping[str, Any], rng: random.Random) -> Any:
    """One draw from a W&B parameter spec (the semantics of W&B's random search for each distribution)."""
    kind = distribution(spec)
    q = spec.get("q", 1)
    mu, sigma = spec.get("mu", 0.0), spec.get("sigma", 1.0)
    if kind == "constant":
        return spec["value"]
    if kind == "categorical":
        return rng.choices(list(spec["values"]), weights=spec.get("probabilities"))[0]
    if kind == "int_uniform":
        return rng.randint(int(spec["min"]), int(spec["max"]))
    draw = {
        "uniform": lambda: rng.uniform(spec["min"], spec["max"]),
        "q_uniform": lambda: rng.uniform(spec["min"], spec["max"]),
        "log_uniform": lambda: math.exp(rng.uniform(spec["min"], spec["max"])),  # min/max are exponents
        "q_log_uniform": lambda: math.exp(rng.uniform(spec["min"], spec["max"])),
        "log_uniform_values": lambda: math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"]))),
        "q_log_uniform_values": lambda: math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"]))),
        "normal": lambda: rng.gauss(mu, sigma), "q_normal": lambda: rng.gauss(mu, sigma),
        "log_normal": lambda: math.exp(rng.gauss(mu, sigma)), "q_log_normal": lambda: math.exp(rng.gauss(mu, sigma)),
    }
    if kind not in draw:
        raise ValueError(f"cannot sample distribution {kind!r}; valid: {sorted(DISTRIBUTIONS)}")
    value = draw[kind]()
    if kind.startswith("q_"):
        value = round(value / q) * q
        return int(value) if isinstance(q, int) and float(value).is_integer() else value
    return value


def sample_params(parameters: Mapping[str, Mapping[str, Any]], rng: random.Random) -> dict[str, Any]:
    """One trial's parameters: a draw from every parameter's spec."""
    return {name: sample_value(spec, rng) for name, spec in parameters.items()}


def space_points(spec: Mapping[str, Any]) -> list[Any]:
    """Values that cover a spec for checks: every categorical value, or both ends of a range."""
    kind = distribution(spec)
    if kind == "constant":
        return [spec["value"]]
    if kind == "categorical":
        return list(spec["values"])
    if kind in ("log_uniform", "q_log_uniform"):
        return [math.exp(spec["min"]), math.exp(spec["max"])]
    if "min" in DISTRIBUTIONS.get(kind, ()):
        return [spec["min"], spec["max"]]
    return [sample_value(spec, random.Random(0))]


def agent_command(sweep: Mapping[str, Any], params: Mapping[str, Any], *, sweep_id: str = "local",
                  run_id: str = "trial") -> list[str]:
    """The command line ``wandb agent`` runs for a trial with these parameter values.

    Mirrors ``wandb.wandb_agent.Agent._command_run`` (wandb 0.31): wandb's own ``create_sweep_command`` (fills
    ``${envvar:NAME}``) and ``create_sweep_command_args`` (formats ``${args}`` = ``--k=v``, ``${args_no_hyphens}``
    = ``k=v``, ...), then the agent's own substitution: ``${env}`` -> ``/usr/bin/env`` (not on Windows),
    ``${interpreter}`` -> ``python``, ``${program}`` -> the sweep's ``program``, each ``${macro}`` item replaced by
    its list (unknown macros vanish). tests/search/test_sweeps.py checks that this equals what the agent builds.
    """
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    template = [str(c) for c in (sweep.get("command") or sweep_utils.DEFAULT_SWEEP_COMMAND)]
    command = sweep_utils.create_sweep_command(template)  # edits its argument in place: a copy is passed
    sweep_vars: dict[str, Any] = sweep_utils.create_sweep_command_args(
        {"args": {k: {"value": v} for k, v in params.items()}})
    json_file = os.path.join(os.environ.get("WANDB_DIR", ""), "wandb", f"sweep-{sweep_id}", f"config-{run_id}.json")
    if "${args_json_file}" in command:
        Path(json_file).parent.mkdir(parents=True, exist_ok=True)
        Path(json_file).write_text(sweep_vars["args_json"][0])
    sweep_vars["interpreter"] = ["python"]
    sweep_vars["program"] = [sweep.get("program")]
    sweep_vars["args_json_file"] = [json_file]
    if platform.system() != "Windows":
        sweep_vars["env"] = ["/usr/bin/env"]
    out: list[str] = []
    for c in command:
        c = str(c)
        if c.startswith("${") and c.endswith("}"):
            out += sweep_vars.get(c[2:-1]) or []
        else:
            out.append(c)
    return out


def hydra_args(command: Sequence[str]) -> list[str] | None:
    """The arguments after ``-m tmkd.run`` in a command (template or expanded); None when it runs something else."""
    for i in range(len(command) - 1):
        if command[i] == "-m" and command[i + 1] == MODULE:
            return list(command[i + 2:])
    return None


def experiment_of(sweep: Mapping[str, Any]) -> str | None:
    args = hydra_args(sweep.get("command") or []) or []
    picks = [a.split("=", 1)[1] for a in args if a.startswith("experiment=")]
    return picks[-1] if picks else None


def trial_overrides(sweep: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """The Hydra overrides a trial passes to tmkd.run (fixed ones from the command, then the parameters)."""
    args = hydra_args(agent_command(sweep, params))
    if args is None:
        raise ValueError(f"command does not run -m {MODULE}: {sweep.get('command')}")
    return args


# --- checks against the configs ------------------------------------------------------------------------------------
def param_target(name: str) -> tuple[str | None, str]:
    """``stages.stage2.distill.alpha`` -> ``("stage2", "distill.alpha")``; a plain key -> ``(None, key)``:
    the final stage's (see tmkd.pipeline.plan for how overrides reach the runs of a plan)."""
    from tmkd.cli import ADDRESSED

    match = ADDRESSED.match(name)
    return (match[2], match[3]) if match else (None, name)


def config_problems(sweep: Mapping[str, Any]) -> list[str]:
    """Parameters that are no key (or config group) of the run they reach, values that do not compose, or that
    tmkd would reject (temperature, alpha, lr, aggregator names), for the sweep's experiment."""
    from hydra.errors import HydraException
    from omegaconf import DictConfig

    from tmkd.cli import config_groups, group_options
    from tmkd.pipeline.plan import PlanError

    experiment = experiment_of(sweep)
    if experiment is None:
        return ["no experiment=<name> in command"]
    if experiment not in group_options("experiment"):
        return [f"experiment {experiment!r} is not one of {group_options('experiment')}"]
    fixed = trial_overrides(sweep, {})
    groups = set(config_groups())
    problems: list[str] = []
    for name, spec in (sweep.get("parameters") or {}).items():
        run, key = param_target(name)
        try:
            base = _compose(fixed, run)
        except (HydraException, PlanError) as err:
            problems.append(f"{name}: {' '.join(fixed)} does not plan: {err}")
            continue
        if key in groups:
            bad = [v for v in space_points(spec) if str(v) not in group_options(key)]
            if bad:
                problems.append(f"{name}: {bad} not in configs/{key}/ ({', '.join(group_options(key))})")
                continue
        else:
            parent_key, _, leaf = key.rpartition(".")
            parent = _select(base, parent_key) if parent_key else base
            if not isinstance(parent, DictConfig) or leaf not in parent:
                valid = sorted(str(k) for k in parent) if isinstance(parent, DictConfig) else sorted(map(str, base))
                problems.append(f"{name}: no such key in the config of {experiment} run {run or 'final stage'} "
                                f"(keys under {parent_key or 'the top level'!r}: {', '.join(valid)})")
                continue
        for value in space_points(spec):
            problems += [f"{name}={value}: {p}" for p in _value_problems(sweep, name, value, groups)]
    return problems


def _value_problems(sweep: Mapping[str, Any], name: str, value: Any, groups: set[str]) -> list[str]:
    from hydra.errors import HydraException

    from tmkd.pipeline.plan import PlanError

    run, key = param_target(name)
    overrides = trial_overrides(sweep, {name: value})
    try:
        cfg = _compose(overrides, run)
    except (HydraException, PlanError) as err:
        return [f"does not compose: {err}"]
    if key in groups:
        return []
    got = _select(cfg, key)
    if got != value:
        return [f"composes to {got!r} ({type(got).__name__}), not {value!r}"]
    return _semantic_problems(cfg)


def _semantic_problems(cfg: Any) -> list[str]:
    """What tmkd itself would reject at the start of the run (the same validators, no model built)."""
    from tmkd.distill.aggregators import AGGREGATORS
    from tmkd.modules.base import OptimConfig
    from tmkd.pipeline.distill_factory import distill_config
    from tmkd.pipeline.factory import plain
    from tmkd.pipeline.stages import uses_teachers

    try:
        OptimConfig(**plain(cfg.optim))
        if uses_teachers(cfg):
            distill_config(plain(cfg.distill))
            if cfg.distill.aggregator.name not in AGGREGATORS:
                raise ValueError(f"aggregator {cfg.distill.aggregator.name!r} is not in {AGGREGATORS.names()}")
    except (TypeError, ValueError) as err:
        return [str(err)]
    return []


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _compose(overrides: list[str], run: str | None = None) -> Any:
    """The resolved config of one run (default: the final stage) of the plan these overrides make."""
    from omegaconf import OmegaConf

    from tmkd.cli import address_runs
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import PlanError, build_plan

    overrides = address_runs(list(overrides))
    plan = build_plan(compose_run(overrides), overrides)
    name = run or plan.final
    if name not in plan.runs:
        raise PlanError(f"{name!r} is not a run of {plan.experiment!r}; runs: {list(plan.runs)}")
    return OmegaConf.create(plan.runs[name].config)


# --- local trials (no W&B server) ----------------------------------------------------------------------------------
def run_local(sweep_path: Path, count: int, seed: int, out_dir: Path, extra: list[str], dry_run: bool) -> int:
    """Run ``count`` trials with the agent's command lines, one after the other, into ``out_dir/<i>``."""
    from tmkd.search.trials import write_search, write_tables

    sweep = load_sweep(sweep_path)
    problems = sweep_problems(sweep)
    if problems:
        print(f"{sweep_path}: " + "; ".join(problems), file=sys.stderr)
        return 2
    if not dry_run:
        write_search(out_dir, dict(sweep["parameters"]), sweep["metric"]["goal"])
    rng = random.Random(seed)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    failed = 0
    for i in range(count):
        params = sample_params(sweep["parameters"], rng)
        command = [*agent_command(sweep, params, run_id=f"trial{i}"), *extra,
                   f"hydra.run.dir={out_dir / str(i)}", f"paths.experiment_dir={out_dir / str(i)}",
                   f"run_name={out_dir.name}_{i}"]
        print(" ".join(command), flush=True)
        if not dry_run:
            failed += subprocess.run(command, env=env, check=False).returncode != 0
    if not dry_run:
        csv_path, md_path = write_tables(out_dir, param_names=list(sweep["parameters"]))
        print(md_path.read_text())
        print(f"tables: {csv_path} {md_path}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmkd.search.sweeps", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a sweep file, e.g. experiments/sweeps/m_o_1_quick.yaml")
    parser.add_argument("--check", action="store_true", help="only check the file against the configs")
    parser.add_argument("--count", type=int, default=4, help="trials to run locally (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parameter draws")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the trials (default checkpoints/sweeps/<name>_<time>)")
    parser.add_argument("--dry-run", action="store_true", help="print the trials' commands only")
    parser.epilog = "Extra Hydra overrides for every trial go after --, e.g. -- trainer.max_epochs=1"
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.check:
        sweep = load_sweep(args.sweep)
        problems = sweep_problems(sweep) or config_problems(sweep)
        for p in problems:
            print(f"{args.sweep}: {p}", file=sys.stderr)
        if not problems:
            print(f"{args.sweep}: ok ({experiment_of(sweep)}; {', '.join(sweep['parameters'])})")
        return 1 if problems else 0
    name = args.sweep.stem
    out = args.out or Path(os.environ.get("TMKD_CHECKPOINTS", "checkpoints")) / "sweeps" / \
        f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return run_local(args.sweep, args.count, args.seed, out.resolve(), extra, args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
