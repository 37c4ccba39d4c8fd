"""tmkd from Python: distil teachers into a student on in-memory data, and build and run plans of stages.

The same objects and checks as the command line: a stage's config is composed by Hydra from the same config groups
and checked by the same code (:func:`tmkd.cli.check_overrides`: unknown group options and keys fail with the list of
valid ones), then built by the same builders (:func:`tmkd.pipeline.train.build`: teachers, objective, module,
data) and trained by the same loop (:func:`tmkd.pipeline.train.fit`). Plans are the planner's
(:func:`tmkd.pipeline.plan.build_plan`) and run by the runner, so a plan built here is the one ``python -m tmkd.run``
builds for the same experiment and overrides (same runs, folders and hashes).

Builders build, runners run: :class:`Distiller` builds everything in its constructor (so bad settings, data or
teachers fail there) and trains in :meth:`Distiller.fit`; :func:`distil` does both.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tmkd.cli import group_options, prepare_argv
from tmkd.data.tasks import TASKS, TaskSpec, get_task, register_task
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.names import check_name
from tmkd.pipeline.plan import Plan, PlanError, build_plan
from tmkd.pipeline.runner import report_settings
from tmkd.pipeline.runner import run_plan as run_runs
from tmkd.pipeline.train import Built, build, fit

__all__ = ["Distiller", "Result", "distil", "plan", "run_plan", "stage_config"]

# a model given as objects: (PreTrainedModel, tokenizer); saved to the run's folder, then loaded like any folder
ModelPair = tuple[Any, Any]


@dataclass
class Result:
    """What a trained stage gives back: its best dev ``metrics`` (logged names, e.g. ``val/accuracy``), the trained
    ``model`` and its ``tokenizer`` (best checkpoint), the run's folder and all of metrics.json (``details``)."""

    metrics: dict[str, float]
    model: Any
    tokenizer: Any
    output_dir: Path
    details: dict[str, Any] = field(default_factory=dict, repr=False)

    def export(self, path: str | Path) -> Path:
        """``save_pretrained`` of model and tokenizer into ``path`` (loads with ``transformers`` alone, or as a
        teacher or student of another tmkd run)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path


class Distiller:
    """One stage (``method``: finetune, one_to_one, many_to_one, many_to_many) built from Python arguments.

    - ``student``: a model config name (``"tiny"``, ``"minilm_l6"``: ``configs/model``), a hub id, HF folder or
      tmkd run folder, a dict of model options (:class:`tmkd.models.build.ModelSpec`), or a
      ``(PreTrainedModel, tokenizer)`` pair; ``None`` keeps the base experiment's.
    - ``teachers``: a list of hub ids / folders / tmkd run folders, dicts (``{name, name_or_path, weight}``) or
      ``(model, tokenizer)`` pairs. Teachers trained by a plan (``run:`` specs) need :func:`plan`.
    - ``task``: a task name or a :class:`TaskSpec` (a new one is registered under its name).
    - ``train`` / ``eval``: in-memory splits (``datasets.Dataset``, pandas ``DataFrame`` or dict of lists),
      checked as files are; ``eval`` may map eval split names to splits (e.g. MNLI's two). ``None``: the task's own
      data (generator, ``data.dir`` or hub, as on the command line).
    - ``aggregator``, ``temperature``, ``alpha``, ``loss``, ``max_epochs``, ``seed``, ``logger``: the knobs of the
      same names (``aggregator=...``, ``distill.*``, ``trainer.max_epochs``, ...); ``overrides``: any other
      command-line override (``"data.batch_size=16"``, ``"+prune=default"``), applied after them.
    - ``experiment``: a base experiment to start from (its settings, then the arguments here); none by default.
    - ``output_dir``: the run's folder (default: a new folder under ``<paths.checkpoints>/api/``).
    """

    def __init__(self, student: str | Mapping[str, Any] | ModelPair | None = None,
                 teachers: Sequence[str | Mapping[str, Any] | ModelPair] = (), task: str | TaskSpec | None = None,
                 train: Any = None, eval: Any = None, *, method: str = "many_to_one",
                 aggregator: str | None = None, temperature: float | None = None, alpha: float | None = None,
                 loss: str | None = None, max_epochs: int | None = None, seed: int | None = None,
                 logger: str = "csv", experiment: str | None = None, overrides: Sequence[str] = (),
                 output_dir: str | Path | None = None) -> None:
        self.config = stage_config(student, teachers, task, method=method, aggregator=aggregator,
                                   temperature=temperature, alpha=alpha, loss=loss, max_epochs=max_epochs, seed=seed,
                                   logger=logger, experiment=experiment, overrides=overrides, output_dir=output_dir)
        self.cfg = OmegaConf.create(self.config)
        self.built: Built = build(self.cfg, _splits(self.config["task"], train, eval))
        self.built.datamodule.setup("fit")  # the data is read and checked now, not when fit() starts

    @property
    def output_dir(self) -> Path:
        return Path(self.config["paths"]["output_dir"])

    def fit(self) -> Result:
        """Train; the best checkpoint (by the task's main metric on the eval split) is reloaded and returned."""
        details = fit(self.cfg, self.built)
        module = self.built.module
        return Result(dict(details["best"]), module.export_model(), self.built.tokenizers[module.view],
                      self.output_dir, details)


def stage_config(student: str | Mapping[str, Any] | ModelPair | None = None,
                 teachers: Sequence[str | Mapping[str, Any] | ModelPair] = (), task: str | TaskSpec | None = None, *,
                 method: str = "many_to_one", aggregator: str | None = None, temperature: float | None = None,
                 alpha: float | None = None, loss: str | None = None, max_epochs: int | None = None,
                 seed: int | None = None, logger: str = "csv", experiment: str | None = None,
                 overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> dict[str, Any]:
    """The resolved config of one stage (what :class:`Distiller` builds from; arguments as there): composed from
    the config groups and checked as the command line composes and checks it, then the objects given in Python
    (teachers, student, task) written into it. In-memory models are saved under ``<output_dir>/inputs/``."""
    spec = task if isinstance(task, TaskSpec) else None
    knobs = {"method": method, "aggregator": aggregator, "distill.temperature": temperature,
             "distill.alpha": alpha, "distill.loss": loss, "trainer.max_epochs": max_epochs, "seed": seed,
             "logger": logger}
    args = [f"experiment={experiment}" if experiment else "~experiment"]
    if task is not None:
        name = spec.name if spec is not None else str(task)
        if name in group_options("task"):
            args.append(f"task={name}")
    if isinstance(student, str) and student in group_options("model"):
        args.append(f"model={student}")
    args += [f"{k}={v}" for k, v in knobs.items() if v is not None]
    argv = prepare_argv([*args, *overrides])  # the command line's checks and messages
    config = compose_run(argv)
    out = Path(output_dir) if output_dir is not None else _new_folder(Path(config["paths"]["checkpoints"]))
    out.mkdir(parents=True, exist_ok=True)
    config["paths"]["output_dir"] = str(out)
    config["experiment_name"] = config.get("experiment_name") or "api"
    if task is not None:
        config["task"] = _task_node(spec or get_task(str(task)), config["task"])
        if not any(o.split("=", 1)[0].lstrip("+") == "optimized_metric" for o in overrides):
            config["optimized_metric"] = f"val/{get_task(config['task']['name']).main_metric}"
    if student is not None and not (isinstance(student, str) and student in group_options("model")):
        config["model"] = _student_node(student, config["model"], out / "inputs" / "student")
    if teachers:
        config["distill"]["teachers"] = [_teacher_spec(t, i, out / "inputs" / "teachers")
                                          for i, t in enumerate(teachers)]
        config["distill"]["use_teachers"] = None
    return config


def distil(student: str | Mapping[str, Any] | ModelPair | None = None,
           teachers: Sequence[str | Mapping[str, Any] | ModelPair] = (), task: str | TaskSpec | None = None,
           train: Any = None, eval: Any = None, **options: Any) -> Result:
    """Build a :class:`Distiller` and fit it: ``tmkd.distil(student="tiny", teachers=[...], task="synth_pair",
    train=df, eval=df, method="many_to_one", aggregator="mean", alpha=0.5, max_epochs=2)``."""
    return Distiller(student, teachers, task, train, eval, **options).fit()


def plan(experiment: str | None = None, overrides: Sequence[str] = (), *,
         stages: Mapping[str, Mapping[str, Any]] | None = None, name: str | None = None) -> Plan:
    """The plan of runs of ``experiment`` with command-line ``overrides`` (exactly what ``python -m tmkd.run
    experiment=<name> <overrides> plan=true`` shows), or of ``stages`` given here (``{stage: {experiment or
    fragment, overrides, init_from}}``, in order) under the experiment ``name``. Nothing trains: print
    ``plan.describe()``, run it with :func:`run_plan`."""
    if (experiment is None) == (stages is None):
        raise PlanError("tmkd.plan takes an experiment name or stages, one of them")
    if stages is not None and not name:
        raise PlanError("a plan of stages given in Python needs a name (its folder): tmkd.plan(stages=..., name=...)")
    argv = prepare_argv([f"experiment={experiment}" if experiment else "~experiment", *overrides])
    top = compose_run(argv)
    if stages is not None:
        top["stages"] = {k: dict(v) for k, v in stages.items()}
        top["experiment_name"] = name
        top["paths"]["experiment_dir"] = str(Path(top["paths"]["checkpoints"]) / check_name(name, "name"))
    check_name(top["run_name"], "run_name")
    return build_plan(top, argv)


def run_plan(plan: Plan, report: bool | None = None) -> dict[str, dict[str, Any]]:
    """Run the plan's runs in order (finished ones are reused, interrupted ones resumed), then its report (as the
    final stage's ``report`` node says, unless ``report`` is given); returns each run's metrics.json by name."""
    enabled, options = report_settings(plan.runs[plan.final].config.get("report") or {}, plan)
    return run_runs(plan, report=enabled if report is None else report, report_options=options)


# --- helpers -----------------------------------------------------------------------------------------------------
def _new_folder(checkpoints: Path) -> Path:
    root = checkpoints / "api"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=root))


def _task_node(spec: TaskSpec, node: Mapping[str, Any]) -> dict[str, Any]:
    """The config's ``task`` node for ``spec``: its name plus the fields that differ from the registered task (a
    new task is registered under its name, so every builder finds it by name as usual)."""
    if spec.name not in TASKS:
        register_task(spec)
    registered = get_task(spec.name)
    if registered == spec:
        return {k: v for k, v in node.items()} if node.get("name") == spec.name else {"name": spec.name}
    out: dict[str, Any] = {"name": spec.name}
    for f in fields(TaskSpec):
        value = getattr(spec, f.name)
        if f.name != "name" and value != getattr(registered, f.name):
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _save(pair: ModelPair, folder: Path, what: str) -> str:
    """An in-memory (model, tokenizer) pair as a folder: from there it loads, and is checked, like any other."""
    if not (isinstance(pair, tuple) and len(pair) == 2 and hasattr(pair[0], "save_pretrained")
            and hasattr(pair[1], "save_pretrained")):
        raise TypeError(f"{what} must be a name, a path, a dict of model options or a (PreTrainedModel, tokenizer) "
                        f"pair; got {type(pair).__name__}")
    folder.mkdir(parents=True, exist_ok=True)
    pair[0].save_pretrained(folder)
    pair[1].save_pretrained(folder)
    return str(folder)


def _student_node(student: Any, node: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    blank = {k: None for k in node}
    if isinstance(student, (str, Path)):
        return {**blank, "name_or_path": str(student)}
    if isinstance(student, Mapping):
        return {**blank, **dict(student)}
    return {**blank, "name_or_path": _save(student, folder, "student")}


def _teacher_spec(teacher: Any, i: int, root: Path) -> dict[str, Any]:
    if isinstance(teacher, (str, Path)):
        return {"name": f"t{i}", "name_or_path": str(teacher)}
    if isinstance(teacher, Mapping):
        return {"name": f"t{i}", **dict(teacher)}
    return {"name": f"t{i}", "name_or_path": _save(teacher, root / f"t{i}", f"teacher {i}")}


def _splits(task_node: Mapping[str, Any], train: Any, eval_: Any) -> dict[str, Any] | None:
    """``{split name: rows}`` for the task, or None (the task's own data) when neither split is given."""
    if train is None and eval_ is None:
        return None
    if train is None or eval_ is None:
        raise ValueError("give both train and eval in memory, or neither (the task's own data)")
    node = dict(task_node)
    spec = get_task(node.pop("name"), **node)
    evals = dict(eval_) if isinstance(eval_, Mapping) and spec.eval_splits[0] in eval_ else {spec.eval_splits[0]: eval_}
    return {spec.train_split: train, **evals}
