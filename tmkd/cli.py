"""Command-line front: Hydra overrides, Lightning-CLI style flags, and errors that list valid names.

``--trainer.max_epochs=2`` and ``--trainer.max_epochs 2`` become Hydra's ``trainer.max_epochs=2``; a flag
without a value (``--trainer.fast_dev_run`` alone) is an error, not a boolean switch (write ``=true``);
Hydra's own flags (``-m``, ``--cfg job``, ...) pass through untouched. Before Hydra runs, the
overrides are composed once so that a typo fails with the list of valid names at that level.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from hydra import compose
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from tmkd.pipeline.compose import (
    CONFIG_DIR,
    CONFIG_NAME,
    EXPERIMENT_GROUP,
    FRAGMENT_GROUP,
    fragment_users,
    hydra_context,
    is_fragment,
    trainer_params,
)
from tmkd.pipeline.names import BadName, check_name

# Hydra's own flags: name -> whether it takes a value.
HYDRA_FLAGS = {
    "--help": False, "-h": False, "--hydra-help": False, "--version": False, "--resolve": False,
    "--multirun": False, "-m": False, "--run": False, "-r": False,
    "--cfg": True, "-c": True, "--package": True, "-p": True, "--info": False, "-i": False,
    "--config-path": True, "-cp": True, "--config-name": True, "-cn": True, "--config-dir": True, "-cd": True,
    "--experimental-rerun": True, "--shell-completion": False, "-sc": False,
}


# a Hydra override: `key=value`, `+key=value`, `++key=value`, `~key=value` or `~key`
OVERRIDE = re.compile(r"[+~]{0,2}[A-Za-z_][\w.@/-]*=|~[A-Za-z_][\w.]*$")


class UsageError(ValueError):
    """A command line that cannot run; the message says what is wrong and what is valid."""


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Rewrite Lightning-CLI style ``--a.b=c`` / ``--a.b c`` to Hydra's ``a.b=c``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag = arg.split("=", 1)[0]
        if flag in HYDRA_FLAGS or not arg.startswith("--"):
            out.append(arg)
            if HYDRA_FLAGS.get(flag) and "=" not in arg and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
            i += 1
            continue
        key, eq, value = arg[2:].partition("=")
        if not key:
            raise UsageError(f"cannot parse argument {arg!r}")
        if not eq:
            if i + 1 < len(argv) and not _is_option(argv[i + 1]):
                value = argv[i + 1]
                i += 1
            else:  # a bare flag is an error, not a switch: `--trainer.max_epochs` that lost its value must not run
                raise UsageError(f"{arg} has no value (it ends the command line or is followed by another flag or "
                                 f"override); write {arg}=VALUE or {arg} VALUE, e.g. {arg}=true for a switch")
        out.append(f"{key}={value}")
        i += 1
    return out


def _is_option(arg: str) -> bool:
    """Whether ``arg`` is a flag or a ``key=value`` override rather than the value of the flag before it."""
    return arg.startswith("--") or arg.split("=", 1)[0] in HYDRA_FLAGS or OVERRIDE.match(arg) is not None


def config_groups() -> list[str]:
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _compose(overrides: list[str]) -> DictConfig:
    with hydra_context():
        return compose(CONFIG_NAME, overrides=overrides)


def check_overrides(overrides: list[str]) -> list[str]:
    """Compose once; return the overrides (Trainer args missing from the config get Hydra's ``+``).

    Raises UsageError naming the bad key or option and listing the valid ones.
    """
    groups = set(config_groups())
    picks, values = [], []
    for ov in overrides:
        key = ov.split("=", 1)[0].lstrip("+~")
        (picks if key in groups else values).append(ov)
    for ov in picks:
        key, _, value = ov.lstrip("+~").partition("=")
        if key == EXPERIMENT_GROUP and is_fragment(value):
            users = fragment_users(value)
            raise UsageError(
                f"{value!r} is a stage fragment (configs/{FRAGMENT_GROUP}/{value}.yaml), not an experiment: it is the "
                f"base config of one stage of {', '.join(users) or 'a plan'}, which supplies what it needs (e.g. "
                f"init_from). Run {'experiment=' + users[0] if users else 'that experiment'}, or the fragment by "
                f"itself with {FRAGMENT_GROUP}={value} (and what it needs, e.g. adapter.encoder=...)")
        if value not in ("null", "") and value not in group_options(key):
            raise UsageError(f"unknown {key} {value!r}; valid {key} names: {', '.join(group_options(key))}")
    keys = {ov.lstrip("+~").partition("=")[0] for ov in picks}
    if FRAGMENT_GROUP in keys and EXPERIMENT_GROUP not in keys:
        picks.insert(0, f"~{EXPERIMENT_GROUP}")  # a fragment run by itself takes the experiment's place
    try:
        base = _compose(picks)
    except (HydraException, ValueError) as err:  # ValueError: e.g. `group=null`
        raise UsageError(str(err)) from err
    fixed = list(picks)
    # An experiment with stages: its final stage's keys (e.g. `prune.*`) need not exist in the top-level config;
    # the planner checks each override against the run it reaches.
    staged = base.get("stages") is not None
    for ov in values:
        if ov.startswith(("+", "~", "hydra.", "hydra/")) or "=" not in ov:  # hydra/...: Hydra's own groups
            fixed.append(ov)
            continue
        key = ov.split("=", 1)[0]
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(base, parent_key) if parent_key else base
        if isinstance(parent, DictConfig) and leaf in parent:
            fixed.append(ov)
        elif staged and not isinstance(parent, DictConfig):
            # a section only the final stage has (e.g. `prune`): the planner applies it there and checks it
            fixed.append(f"++node_overrides.final.{ov}")
        elif parent_key == "trainer" and leaf in trainer_params():
            fixed.append("+" + ov)  # any Lightning Trainer argument, as Lightning's CLI allows
        elif isinstance(parent, DictConfig):
            raise UsageError(f"unknown key {key!r}; valid keys under {parent_key or 'the top level'!r}: "
                             f"{', '.join(sorted(str(k) for k in parent))}"
                             + ("" if parent_key != "trainer" else " (or any pytorch_lightning.Trainer argument)")
                             + f". To add a new key on purpose, write +{ov}")
        else:
            raise UsageError(f"unknown key {key!r}: {parent_key!r} is not a config section; top-level keys: "
                             f"{', '.join(sorted(str(k) for k in base))}")
    try:
        final = _compose(fixed)
    except (HydraException, ValueError) as err:  # ValueError: e.g. `group=null`
        raise UsageError(str(err)) from err
    check_folder_names(final)
    return fixed


def check_folder_names(cfg: DictConfig) -> None:
    """``run_name`` and ``experiment_name`` name the invocation's log folder (``hydra.run.dir``), which Hydra
    creates before tmkd runs: check them here (the planner checks them again, with stage and teacher names)."""
    for key in ("run_name", "experiment_name"):
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)  # None: Hydra's choice, checked above
        if value is not None:
            try:
                check_name(value, key)
            except BadName as err:
                raise UsageError(str(err)) from None


# `stages.<name>.<key>=v` / `teachers.<name>.<key>=v`: an override for one run of the plan (tmkd.pipeline.plan)
ADDRESSED = re.compile(r"^[+]{0,2}(stages|teachers)\.([A-Za-z0-9_-]+)\.(.+)$")


def address_runs(args: list[str]) -> list[str]:
    """Overrides addressed to one run are stored under ``node_overrides`` for the planner, not applied here."""
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        match = ADDRESSED.match(key) if eq and not arg.startswith("-") else None
        out.append(f"++node_overrides.{match[1]}.{match[2]}.{match[3]}={value}" if match else arg)
    return out


def prepare_argv(argv: Sequence[str]) -> list[str]:
    """Normalised and checked argv for Hydra (checked only for single runs; sweeps expand later)."""
    args = address_runs(normalize_argv(argv))
    flags = [a for a in args if a.startswith("-")]
    if any(f.split("=")[0] in ("-m", "--multirun", "--help", "-h", "--hydra-help", "--info", "-i",
                                "--shell-completion", "-sc", "--version") for f in flags):
        return args
    plain_overrides = [a for a in args if not a.startswith("-") and not _is_flag_value(args, a)]
    # sweep syntax (`a=1,2`, `interval(..)`: hparams_search configs set hydra.mode=MULTIRUN, no -m) is left to Hydra
    sweeps = [a for a in plain_overrides if _is_sweep(a)]
    checked = check_overrides([a for a in plain_overrides if a not in sweeps])
    rest = [a for a in args if a not in plain_overrides]
    return rest + checked + sweeps


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).is_sweep_override()
    except HydraException:
        return False  # not an override Hydra can parse: check_overrides reports it


def _is_flag_value(args: list[str], arg: str) -> bool:
    i = args.index(arg)
    return i > 0 and HYDRA_FLAGS.get(args[i - 1], False)


def main_entry(app: object, argv: Sequence[str] | None = None) -> None:
    """Run the Hydra ``app`` with a normalised command line; usage errors exit 2 with their message."""
    try:
        args = prepare_argv(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        print(f"tmkd: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.argv = [sys.argv[0], *args]
    app()  # type: ignore[operator]
