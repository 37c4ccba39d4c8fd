"""The plan of an experiment: every run it needs (teachers, stages), their configs, folders and status.

An experiment either declares ``stages`` (an ordered mapping ``name -> {experiment | fragment, overrides,
init_from}``; a fragment is a stage's base config under ``configs/fragment/``, not an experiment of its own) or is
itself one stage (``main``). Teachers that a stage distils from and that are declared with a ``run``
(``{experiment, overrides}``) become runs of the plan too, before the stage that needs them. Nothing here
trains anything: the planner composes configs, hashes them and reads manifests; the runner runs.

Overrides given on the command line reach runs as follows:

- experiment-wide keys (``seed``, ``data.*``, ``trainer.*``, ``logger``, ``paths.*``, ``checkpoint.*``) reach every
  run; a teacher keeps a key its own declaration sets (e.g. its ``seed``) unless addressed to it;
- ``stages.<stage>.<key>=<value>`` and ``teachers.<teacher>.<key>=<value>`` reach that one run (any key of
  its config, group choices too: ``teachers.qnli_s7.model=mpnet_base``; ``stages.stage2.init_from=PATH``);
- any other override reaches the final stage (the experiment's student), e.g. ``aggregator=confidence``.

A run's folder is ``<paths.checkpoints>/runs/<experiment>/<name>-<hash8>``: the hash covers its identity
(:mod:`tmkd.pipeline.identity`: the config that determines its result, the content of the data and models it reads
and the hashes of the runs it starts from), so a changed config gets its own folder (nothing is overwritten) and
whatever depends on it is run again. A finished run with the same identity is reused from any experiment's folder.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tmkd.environment import environment, version_changes
from tmkd.pipeline import integrity, locks, manifest
from tmkd.pipeline.compose import compose_run, dedupe, is_fragment, override_key, run_source, trainer_params
from tmkd.pipeline.identity import IdentityError, run_identity
from tmkd.pipeline.names import check_inside, check_name
from tmkd.pipeline.stages import uses_teachers

MAIN = "main"
GLOBAL_ROOTS = ("seed", "data", "trainer", "logger", "paths", "checkpoint")
CONTROL_KEYS = ("experiment", "fragment", "plan", "stage", "seeds", "node_overrides", "hparams_search")
META_KEYS = ("init_from",)  # node settings that are not keys of the run's config
ADDRESS_ROOTS = ("stages", "teachers")
log = logging.getLogger(__name__)


class PlanError(ValueError):
    """A plan that cannot be built; the message names the run and what is wrong."""


@dataclass
class Run:
    """One run of the plan: its config (resolved), identity hash, folder and status."""

    name: str
    role: str  # "teacher" | "stage": what the run is in the plan
    experiment: str
    overrides: list[str]
    config: dict[str, Any]
    hash: str
    out_dir: Path
    needs: list[str] = field(default_factory=list)
    status: str = "run"  # "done" | "resume" | "run"
    resume_from: Path | None = None
    init_note: str = ""
    identity: dict[str, Any] | None = None  # the hashed payload (tmkd.pipeline.identity), kept in the manifest

    @property
    def short_hash(self) -> str:
        return self.hash[:8]


@dataclass
class Plan:
    experiment: str
    runs: dict[str, Run]  # in execution order
    final: str  # the final stage's run (with seeds: the first seed's; its export is the experiment's student)
    experiment_dir: Path
    only: str | None = None
    seeds: list[int] | None = None  # seeds as an axis: every stage runs once per seed, as ``<stage>-s<seed>``

    def seeded(self, stage: str) -> list[str]:
        """The runs of one stage: itself, or one per seed."""
        return [stage] if not self.seeds else [seeded_name(stage, s) for s in self.seeds]

    @property
    def finals(self) -> list[str]:
        """The final stage's runs, one per seed."""
        return self.seeded(base_name(self.final) if self.seeds else self.final)

    def selected(self) -> list[Run]:
        """The runs to consider: all, or with ``stage=<name>`` that stage (every seed of it) and what it needs."""
        if self.only is None:
            return list(self.runs.values())
        keep: set[str] = set()

        def visit(name: str) -> None:
            if name not in keep:
                keep.add(name)
                for dep in self.runs[name].needs:
                    visit(dep)

        for name in self.seeded(self.only):
            visit(name)
        return [r for r in self.runs.values() if r.name in keep]

    def describe(self) -> str:
        """The plan as a table: each run, what it is, where it goes and whether it is done, to resume or to run."""
        rows = [("run", "role", "status", "needs", "folder")]
        current = environment() if any(r.status == "done" for r in self.selected()) else {}
        for r in self.selected():
            status = {"done": f"done (reused from {r.out_dir.parent.name}/)" if r.out_dir.parent.name != r.experiment
                      else "done (reused)", "resume": f"resume ({r.resume_from.name})" if r.resume_from else
                      "resume", "run": "to run"}[r.status]
            if r.status == "done":  # reuse follows the config hash; say when the software under it has changed
                changes = version_changes((manifest.read(r.out_dir) or {}).get("environment"), current)
                status += f" [made with other versions: {'; '.join(changes)}]" if changes else ""
            else:  # a `running` manifest: another process trains it now, or one that is gone left it
                status += locks.stale_note(r.out_dir)
            rows.append((r.name, f"{r.role}: {r.experiment}", status, ",".join(r.needs) or "-", str(r.out_dir)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [f"Plan for experiment {self.experiment!r}" + (f" (only {self.only!r} and what it needs)"
                                                                if self.only else "") + ":"]
        for row in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
        todo = sum(r.status != "done" for r in self.selected())
        lines.append(f"  {todo} of {len(self.selected())} runs to do; report: {self.experiment_dir / 'report.md'}")
        return "\n".join(lines)


def seeded_name(stage: str, seed: int) -> str:
    return f"{stage}-s{seed}"


def base_name(run: str) -> str:
    """``stage2-s7`` -> ``stage2`` (the stage a seeded run belongs to); other names unchanged."""
    head, _, tail = run.rpartition("-s")
    return head if head and tail.lstrip("-").isdigit() else run


def check_seeds(seeds: Any) -> list[int] | None:
    if seeds is None:
        return None
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple)) or not seeds or any(
            not isinstance(s, int) or isinstance(s, bool) for s in seeds):
        raise PlanError(f"seeds must be a non-empty list of integers, e.g. seeds=[1,2,3]; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise PlanError(f"seeds has repeats: {list(seeds)}")
    return [int(s) for s in seeds]


# --- overrides -------------------------------------------------------------------------------------------------
def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(experiment-wide overrides, overrides for the final stage); control keys and addressed ones dropped."""
    global_ovs, final_ovs = [], []
    for ov in overrides:
        key = override_key(ov)
        root = key.split(".", 1)[0].split("/", 1)[0]
        addressed = root in ADDRESS_ROOTS and "." in key  # `teachers=quick` is a group choice, not an address
        if root in CONTROL_KEYS or root == "stages" or addressed or key.startswith("hydra"):
            continue
        (global_ovs if root in GLOBAL_ROOTS else final_ovs).append(ov)
    return global_ovs, final_ovs


# `++node_overrides.<stages|teachers>.<run>.<key>=v` / `++node_overrides.final.<key>=v`: what tmkd.cli set aside
NODE_OVERRIDE = re.compile(r"^\+{0,2}node_overrides\.(?:(stages|teachers)\.([A-Za-z0-9_-]+)|(final))\.(.+)$")


def run_override(key: str, value: str) -> str:
    """One run's override as Hydra takes it: the key and the value text exactly as written on the command line
    (no round trip through a config node), with ``++`` for a Trainer argument the config does not name."""
    root, _, leaf = key.partition(".")
    return f"++{key}={value}" if root == "trainer" and leaf in trainer_params() else f"{key}={value}"


def node_overrides(overrides: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """``{"stages": {run: {key: override}}, "teachers": {...}, "final": {"": {key: override}}}`` from the overrides
    that tmkd.cli.address_runs (and check_overrides, for keys only the final stage has) stored under
    ``node_overrides``: read back from the override text, so each reaches its run as the user wrote it."""
    out: dict[str, dict[str, dict[str, str]]] = {root: {} for root in (*ADDRESS_ROOTS, "final")}
    for ov in overrides:
        key, _, value = ov.partition("=")
        match = NODE_OVERRIDE.match(key)
        if match:
            root, run, final, rest = match.groups()
            named = out[final or root].setdefault(run or "", {})
            named.pop(rest, None)  # a later override of the key wins, and goes last
            named[rest] = run_override(rest, value)
    return out


# --- planning ----------------------------------------------------------------------------------------------------
class Planner:
    """Builds the :class:`Plan` of a composed top-level config and the command line's overrides."""

    def __init__(self, top: dict[str, Any], overrides: list[str]) -> None:
        self.top = top
        self.experiment = check_name(top.get("experiment_name") or MAIN, "experiment_name")
        self.checkpoints = Path(top["paths"]["checkpoints"])
        self.global_ovs, self.final_ovs = split_overrides(overrides)
        addressed = node_overrides(overrides)
        # {"stages": {name: {key: override}}, "teachers": {...}}: what `stages.<name>.<key>=...` set on the command line
        self.addressed = {root: addressed[root] for root in ADDRESS_ROOTS}
        # keys of the final stage that the top-level config does not have (tmkd.cli holds them under node_overrides)
        self.final_extra: list[str] = list(addressed["final"].get("", {}).values())
        self.runs: dict[str, Run] = {}
        self.used_addresses: set[tuple[str, str]] = set()

    def build(self) -> Plan:
        source = "fragment" if is_fragment(self.experiment) else "experiment"  # `fragment=<name>` run by itself
        stages = self.top.get("stages") or {MAIN: {source: self.experiment, "overrides": []}}
        if not isinstance(stages, dict) or not stages:
            raise PlanError(f"experiment {self.experiment!r}: stages must be a mapping name -> "
                            "{experiment or fragment, overrides, init_from}")
        names = list(stages)
        seeds = check_seeds(self.top.get("seeds"))
        for i, (name, spec) in enumerate(stages.items()):
            check_name(name, "stage name")
            if not isinstance(spec, dict) or bool(spec.get("experiment")) == bool(spec.get("fragment")):
                raise PlanError(f"stage {name!r} of {self.experiment!r} needs its base config: an `experiment` or a "
                                f"`fragment` (configs/fragment/), one of them; got {spec!r}")
            key = "experiment" if spec.get("experiment") else "fragment"
            check_name(spec[key], f"stage {name!r}: {key}")
            unknown = sorted(set(spec) - {"experiment", "fragment", "overrides", "init_from"})
            if unknown:
                raise PlanError(f"stage {name!r}: unknown setting(s) {unknown}; "
                                "valid: experiment or fragment, overrides, init_from")
            final = i == len(names) - 1
            if seeds is None:
                self.plan_stage(name, spec, final, names[:i])
                continue
            for seed in seeds:  # one run per seed; a later stage starts from the same seed's earlier stage
                self.plan_stage(name, spec, final, names[:i], seed=seed)
        unknown = sorted(f"{root}.{name}" for root, named in self.addressed.items() for name in named
                         if (root, name) not in self.used_addresses)
        if unknown:
            teachers = [r.name for r in self.runs.values() if r.role == "teacher"]
            raise PlanError(f"overrides address unknown run(s) {unknown}; stages: {names}; teachers: {teachers or '-'}"
                            " (write stages.<stage>.<key>=... or teachers.<teacher>.<key>=...)")
        only = self.top.get("stage")
        if only is not None and only not in names:
            raise PlanError(f"stage={only!r} is not a stage of {self.experiment!r}; stages: {names}")
        exp_dir = Path(self.top["paths"].get("experiment_dir") or self.checkpoints / self.experiment)
        final = names[-1] if seeds is None else seeded_name(names[-1], seeds[0])
        return Plan(self.experiment, self.runs, final, exp_dir, only, seeds)

    def _addressed(self, name: str, role: str) -> dict[str, str]:
        """What the command line set for this run (``stages.<name>.*`` / ``teachers.<name>.*``)."""
        self.used_addresses.add((f"{role}s", name))
        return copy.deepcopy(self.addressed[f"{role}s"].get(name) or {})

    def _finished_teacher(self, name: str | None) -> str | None:
        """``teachers.<name>.name_or_path=FOLDER`` on the command line: distil from that finished model (an ``hf/``
        export, a run folder, a hub id) instead of planning the teacher's run, e.g. a teacher trained by an
        earlier version of tmkd whose run no longer matches by hash. Its other addressed keys would configure the
        run that is not made: refused."""
        given = self.addressed["teachers"].get(name or "") or {}
        if "name_or_path" not in given:
            return None
        self.used_addresses.add(("teachers", str(name)))
        others = sorted(k for k in given if k != "name_or_path")
        if others:
            raise PlanError(f"teacher {name!r}: name_or_path names a finished model, so {others} (settings of its "
                            "run) cannot apply; drop them or drop teachers.<name>.name_or_path")
        return given["name_or_path"].partition("=")[2]

    def plan_stage(self, name: str, spec: dict[str, Any], final: bool, earlier: list[str],
                   seed: int | None = None) -> None:
        addressed = self._addressed(name, "stage")
        init_from = spec.get("init_from")
        if "init_from" in addressed:  # `stages.<name>.init_from=PATH` (null: start afresh)
            given = addressed.pop("init_from").partition("=")[2]
            init_from = None if given == "null" else given
        if seed is not None:  # the seed of the axis wins over a `seed` the stage or the command line sets
            addressed.pop("seed", None)
            addressed["seed"] = f"seed={seed}"
            if init_from in earlier:
                init_from = seeded_name(str(init_from), seed)
            earlier = [seeded_name(e, seed) for e in earlier]
            name = seeded_name(name, seed)
        init_ovs: list[str] = []
        needs: list[str] = []
        upstream: dict[str, str] = {}
        note = ""
        if init_from:
            init_from = str(init_from)
            if init_from in self.runs and self.runs[init_from].role == "stage":
                source = self.runs[init_from]
                needs.append(init_from)
                upstream[str(source.out_dir)] = source.hash
                path = str(source.out_dir)
                note = f"initialised from stage {init_from!r}"
            elif init_from in earlier or init_from == name:
                raise PlanError(f"stage {name!r}: init_from={init_from!r} is not an earlier stage")
            else:
                path = init_from
                if not Path(path).expanduser().exists():
                    raise PlanError(f"stage {name!r}: init_from={path!r} is neither an earlier stage "
                                    f"({earlier or 'none'}) nor an existing run folder, HF folder or .ckpt file")
                note = f"initialised from {path}"
            init_ovs = [f"model.name_or_path={path}", "model.tiny=null", "model.num_layers=null",
                        "model.layers=null", "model.tokenizer=null"]
        base = run_source(spec.get("experiment"), spec.get("fragment"))
        overrides = dedupe([*base, *self.global_ovs, *(spec.get("overrides") or []),
                            *init_ovs, *(self.final_ovs + self.final_extra if final else []),
                            *addressed.values()])
        self.add_run(name, "stage", spec.get("experiment") or spec["fragment"], overrides, needs, upstream, note)

    def plan_teacher(self, spec: dict[str, Any]) -> Run:
        name = spec.get("name")
        run = spec["run"]
        if not name:
            raise PlanError(f"a teacher with a `run` needs a `name`: {spec}")
        check_name(name, "teacher name")
        if not isinstance(run, dict) or not run.get("experiment"):
            raise PlanError(f"teacher {name!r}: run must be {{experiment, overrides}}, got {run!r}")
        check_name(run["experiment"], f"teacher {name!r}: run.experiment")
        declared = run.get("overrides") or []
        declared_keys = {override_key(o) for o in declared}
        global_ovs = [o for o in self.global_ovs if override_key(o) not in declared_keys]
        overrides = dedupe([f"experiment={run['experiment']}", *global_ovs, *declared,
                            *self._addressed(name, "teacher").values()])
        existing = self.runs.get(name)
        new = self.make_run(name, "teacher", run["experiment"], overrides, [], {}, "")
        if existing is not None:
            if existing.hash != new.hash:
                raise PlanError(f"teacher {name!r} is declared twice with different configs; give them different names")
            return existing
        self.runs[name] = new
        return new

    def add_run(self, name: str, role: str, experiment: str, overrides: list[str], needs: list[str],
                upstream: dict[str, str], note: str) -> Run:
        if name in self.runs:
            raise PlanError(f"two runs of the plan are named {name!r} (stage and teacher names must differ)")
        run = self.make_run(name, role, experiment, overrides, needs, upstream, note)
        self.runs[name] = run
        return run

    def make_run(self, name: str, role: str, experiment: str, overrides: list[str], needs: list[str],
                 upstream: dict[str, str], note: str) -> Run:
        try:
            config = compose_run(overrides)
        except Exception as err:  # Hydra's errors name the key; say which run it was
            raise PlanError(f"{role} {name!r} ({' '.join(overrides)}): {err}") from err
        needs = list(needs)
        distills = uses_teachers(config)
        teachers = ((config.get("distill") or {}).get("teachers") or []) if distills else []
        selected = _select(teachers, (config.get("distill") or {}).get("use_teachers"), name)
        resolved_teachers = []
        for spec in selected:
            spec = dict(spec)
            if spec.get("run") and (folder := self._finished_teacher(spec.get("name"))) is not None:
                spec.pop("run")  # `teachers.<name>.name_or_path=FOLDER`: a finished model instead of the run
                spec["name_or_path"] = folder
            if spec.get("run"):
                teacher = self.plan_teacher(spec)
                check_teacher_labels(f"{role} {name!r}", config, teacher.name, teacher_config=teacher.config)
                needs.append(teacher.name)
                spec.pop("run")
                spec["name_or_path"] = str(teacher.out_dir)
                upstream[str(teacher.out_dir)] = teacher.hash
            elif spec.get("name_or_path"):
                check_teacher_labels(f"{role} {name!r}", config, str(spec.get("name")), folder=spec["name_or_path"])
            resolved_teachers.append(spec)
        if teachers:
            config["distill"]["teachers"] = resolved_teachers
            config["distill"]["use_teachers"] = None
        try:
            ident = run_identity(config, upstream, distills)
        except IdentityError as err:
            raise PlanError(f"{role} {name!r}: {err}") from err
        digest = manifest.config_hash(ident)
        runs_root = self.checkpoints / "runs"
        twin = next((r for r in self.runs.values() if r.hash == digest), None)
        # The same run under another name or experiment (a teacher that is also a stage, a baseline another
        # experiment calls differently): one folder, so it trains once.
        out_dir = twin.out_dir if twin is not None else (done_twin(runs_root, experiment, digest)
                                                         or runs_root / experiment / f"{name}-{digest[:8]}")
        check_inside(out_dir, self.checkpoints, f"the folder of {role} {name!r}")
        config["paths"]["output_dir"] = str(out_dir)
        config["run_name"] = name
        config["experiment_name"] = experiment
        if isinstance(config.get("logger"), dict) and "group" in config["logger"]:
            config["logger"]["group"] = self.experiment
            config["logger"]["job_type"] = f"{role}:{name}"
        run = Run(name, role, experiment, overrides, config, digest, out_dir, needs, init_note=note, identity=ident)
        run.status, run.resume_from = status_of(run)
        return run


def task_of(config: dict[str, Any]) -> Any:
    """The :class:`tmkd.data.tasks.TaskSpec` a resolved run config trains (as tmkd.pipeline.factory builds it)."""
    from tmkd.data.tasks import get_task

    node = dict(config["task"])
    return get_task(node.pop("name"), **node)


def check_teacher_labels(run: str, config: dict[str, Any], teacher: str, *, teacher_config: dict[str, Any] | None
                         = None, folder: str | None = None) -> None:
    """A teacher must predict the student's labels, in order: checked while planning, so a wrong teacher fails
    before any teacher trains (loading the teachers checks the same way: :func:`tmkd.models.build.check_labels`).

    A teacher run is judged by its task; a teacher folder by its ``config.json`` (``id2label``). Hub ids, adapter
    exports and folders without a trained classification head are left to the load.
    """
    from tmkd.models.build import check_label_space, check_labels

    student = task_of(config)
    try:
        if teacher_config is not None:
            own = task_of(teacher_config)
            if own.kind != student.kind:
                raise ValueError(f"teacher {teacher!r} trains task {own.name!r} (kind {own.kind}); the student's "
                                 f"task {student.name!r} is of kind {student.kind}")
            check_labels(own.label_names, student, f"teacher {teacher!r} (a run of task {own.name!r})")
        elif folder is not None and student.kind == "classification" and Path(folder).expanduser().is_dir():
            from transformers import AutoConfig

            from tmkd.models.adapter_teacher import find_adapter_export
            from tmkd.models.build import resolve_path

            if find_adapter_export(folder) is None:
                check_label_space(AutoConfig.from_pretrained(resolve_path(folder)), student,
                                  f"teacher {teacher!r} ({folder})")
    except OSError:
        return  # not a model folder (yet): loading it says what is wrong
    except ValueError as err:
        raise PlanError(f"{run}: {err}") from err


def _select(teachers: list[dict[str, Any]], names: list[str] | None, run: str) -> list[dict[str, Any]]:
    if names is None:
        return list(teachers)
    by_name = {t.get("name"): t for t in teachers}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise PlanError(f"{run}: distill.use_teachers names {missing}, not in distill.teachers {list(by_name)}")
    return [by_name[n] for n in names]


def finished(folder: Path, digest: str, found: dict[str, Any] | None = None) -> bool:
    """The run in ``folder`` is done under exactly this config hash and its outputs are there, unchanged since the
    manifest recorded them (a damaged output is named in a warning and the run is redone)."""
    found = manifest.read(folder) if found is None else found
    if not (bool(found) and found.get("status") == "done" and found.get("hash") == digest
            and (folder / "metrics.json").is_file()):
        return False
    problems = integrity.damaged(folder, found.get("files"))
    if problems:
        log.warning("run folder %s is marked done but its outputs are damaged: %s; running it again", folder,
                    "; ".join(problems))
        return False
    return True


def done_twin(runs_root: Path, experiment: str, digest: str) -> Path | None:
    """A finished run folder with exactly this identity hash, whatever its run name and experiment (the identity
    holds neither): this experiment's folders first, then the others' (``<checkpoints>/runs/*/*-<hash8>``)."""
    own = sorted((runs_root / experiment).glob(f"*-{digest[:8]}"))
    others = sorted(f for f in runs_root.glob(f"*/*-{digest[:8]}") if f.parent.name != experiment)
    return next((f for f in [*own, *others] if finished(f, digest)), None)


def status_of(run: Run) -> tuple[str, Path | None]:
    """done (manifest done under this hash, outputs intact), resume (a sound last checkpoint, or when that one is
    damaged the newest other sound one) or run."""
    found = manifest.read(run.out_dir)
    if finished(run.out_dir, run.hash, found):
        return "done", None
    ckpt_dir = run.out_dir / "checkpoints"
    if (ckpt_dir / "last.ckpt").is_file() and found and found.get("hash") == run.hash:
        trusted = bool((run.config.get("checkpoint") or {}).get("allow_pickle", False))
        point, problems = integrity.resume_point(ckpt_dir, trusted)
        if problems:
            log.warning("run %s: damaged checkpoint(s): %s; %s", run.name, "; ".join(problems),
                        f"resuming from {point.name} instead" if point else "starting afresh")
        if point is not None:
            return "resume", point
    return "run", None


def build_plan(top: dict[str, Any], overrides: list[str]) -> Plan:
    return Planner(top, overrides).build()
