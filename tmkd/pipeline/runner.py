"""Run a plan: each run in order (skipping done ones, resuming interrupted ones), manifests, then the report.

Runs execute in this process, which is fast and keeps Ctrl-C simple; a run whose trainer spreads over
several processes (``trainer.devices>1``, ``num_nodes>1``, a DDP strategy) runs as a child process
(``python -m tmkd.pipeline.node RUN_DIR``), because Lightning's DDP launcher re-executes the command line of
the process that calls ``fit`` and that must be one run, not the whole plan. SIGINT (Ctrl-C) and SIGTERM
stop the current run, stop every child process, and leave the run's manifest ``interrupted`` with its last
checkpoint, from which the next invocation resumes; the command exits 130 or 143.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

from omegaconf import OmegaConf

from tmkd.atomic import clean_tmp
from tmkd.environment import environment
from tmkd.pipeline import integrity, locks, manifest
from tmkd.pipeline.export import write_json
from tmkd.pipeline.integrity import remove_checkpoints
from tmkd.pipeline.names import check_inside, check_name
from tmkd.pipeline.plan import Plan, Run, base_name, status_of
from tmkd.pipeline.seeds import mean_metrics, summarise

log = logging.getLogger(__name__)
_CHILDREN: set[subprocess.Popen] = set()


class Interrupted(Exception):
    """SIGTERM or SIGINT (Ctrl-C) arrived: raised in the main thread so every layer unwinds (and records) cleanly.

    Not a KeyboardInterrupt: Lightning turns that into ``exit(1)`` mid-fit, so Ctrl-C would look like a failure.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"received {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process stopped by a signal: 128 + its number (130 Ctrl-C, 143 SIGTERM)."""
        return 128 + self.signum


def _kill_children(signum: int) -> None:
    for child in list(_CHILDREN):
        if child.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(child.pid, signum)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT -> :class:`Interrupted` (a signal the caller ignores stays ignored); children are
    stopped either way."""
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopping:  # a second Ctrl-C must not cut short the unwinding that records the run as interrupted
            return
        stopping.append(signum)
        _kill_children(signal.SIGTERM)
        raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        if previous[sig] != signal.SIG_IGN:  # e.g. SIGINT of a command started with `&` by a script
            signal.signal(sig, on_signal)
    try:
        yield
    except BaseException:
        _kill_children(signal.SIGTERM)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def multi_process(config: dict[str, Any]) -> bool:
    trainer = config.get("trainer") or {}
    devices = trainer.get("devices", 1)
    many = (isinstance(devices, int) and devices > 1) or (isinstance(devices, (list, tuple)) and len(devices) > 1)
    return bool(many or (trainer.get("num_nodes") or 1) > 1 or "ddp" in str(trainer.get("strategy") or ""))


def run_child(run: Run) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tmkd.pipeline.node", str(run.out_dir)]
    if run.resume_from is not None:
        cmd += ["--resume", str(run.resume_from)]
    # own process group: killed as a whole on a signal; it dies with this process (SIGKILL included), see node.py
    child = subprocess.Popen(cmd, start_new_session=True, env={**os.environ, locks.PARENT_ENV: str(os.getpid())})
    _CHILDREN.add(child)
    try:
        code = child.wait()
    finally:
        _CHILDREN.discard(child)
    if code != 0:
        raise RuntimeError(f"run {run.name!r} failed in its child process (exit {code}); see {run.out_dir}")
    from tmkd.pipeline.train import read_metrics

    return read_metrics(run.out_dir)


def execute(run: Run) -> dict[str, Any]:
    """Train one run into its folder, keeping its manifest current; returns its metrics."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    clean_tmp(run.out_dir)  # leftovers of atomic writes a crash interrupted
    ckpt_dir = run.out_dir / "checkpoints"
    if run.resume_from is None:
        remove_checkpoints(ckpt_dir, None, "stale: the run starts afresh")
    elif Path(run.resume_from).name != "last.ckpt":
        remove_checkpoints(ckpt_dir, Path(run.resume_from), f"damaged or stale: resuming from {run.resume_from}")
    OmegaConf.save(OmegaConf.create(run.config), run.out_dir / "config.yaml")
    env = environment(run.config.get("threads"), (run.config.get("trainer") or {}).get("accelerator"))
    previous = (manifest.read(run.out_dir) or {}) if run.resume_from else {}
    # a resumed run keeps the environments of its earlier parts: its epochs may come from other versions
    earlier = [*previous.get("earlier_environments", []), *([previous["environment"]] if previous.get("environment")
                                                           and previous["environment"] != env else [])]
    owner = locks.Owner()  # the caller holds the run's lock; the manifest names this process until it is done
    locks.claim_manifest(run.out_dir, owner, {
        "name": run.name, "role": run.role, "experiment": run.experiment, "hash": run.hash, "status": "running",
        "started_at": manifest.now(), "resumed_from": str(run.resume_from) if run.resume_from else None,
        "needs": run.needs, "overrides": run.overrides, "identity": run.identity or manifest.identity(run.config),
        "environment": env, **({"earlier_environments": earlier} if earlier else {}),
    })
    log.info("run %s (%s) -> %s%s", run.name, run.role, run.out_dir,
             f", resuming from {run.resume_from}" if run.resume_from else "")
    try:
        if multi_process(run.config):
            metrics = run_child(run)
        else:
            from tmkd.pipeline.train import run as train_run

            metrics = train_run(OmegaConf.create(run.config), ckpt_path=run.resume_from)
    except BaseException as err:
        stopped = isinstance(err, (KeyboardInterrupt, Interrupted, SystemExit))
        status = "interrupted" if stopped else "failed"
        try:
            locks.update_owned(run.out_dir, owner, status=status, finished_at=manifest.now(),
                               error=f"{type(err).__name__}: {err}")
        except OSError as write_err:  # e.g. the disk is full: the run's own error matters more, so it goes on
            log.error("run %s %s (%s: %s), and recording that in %s failed too (%s: %s); its manifest still says "
                      "'running'", run.name, status, type(err).__name__, err, run.out_dir / manifest.MANIFEST,
                      type(write_err).__name__, write_err)
        raise
    # the outputs later runs read are on disk (written atomically, fsynced); their checksums go into the manifest,
    # and planning redoes the run if they no longer match (tmkd.pipeline.integrity)
    if not locks.update_owned(run.out_dir, owner, status="done", finished_at=manifest.now(),
                              metrics=metrics.get("best", {}), best_checkpoint=metrics.get("best_checkpoint"),
                              export=metrics.get("export"), files=integrity.record(run.out_dir)):
        raise RuntimeError(f"run {run.name!r}: another process took over {run.out_dir} while this one trained it")
    run.status = "done"
    return metrics


def run_plan(plan: Plan, report: bool = True, report_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute the selected runs in order; then the report (when the final stage is part of the selection)."""
    results: dict[str, dict[str, Any]] = {}
    with stop_on_signals(), closing(locks.claim_runs(plan.selected())) as claims:
        for run, _lock in claims:  # the run's lock is held until the next one is asked for
            if run.status != "done":  # another process, or a twin run sharing its folder, may have finished it
                locks.take_over(run.out_dir, run.name)
                run.status, run.resume_from = status_of(run)
            if run.status == "done":
                log.info("run %s: done, reusing %s", run.name, run.out_dir)
                from tmkd.pipeline.train import read_metrics

                results[run.name] = read_metrics(run.out_dir)
                continue
            results[run.name] = execute(run)
    results = {r.name: results[r.name] for r in plan.selected()}  # plan order, whichever order they ran in
    plan.experiment_dir.mkdir(parents=True, exist_ok=True)
    outcome = experiment_result(plan, results)
    if outcome is not None:  # the experiment's result, where search tables (tmkd.search.trials) look for it
        write_json(plan.experiment_dir / "metrics.json", outcome)
    write_json(plan.experiment_dir / "plan.json", {
        "experiment": plan.experiment, "final": plan.final,
        "runs": [{"name": r.name, "role": r.role, "experiment": r.experiment, "hash": r.hash,
                  "folder": str(r.out_dir), "needs": r.needs} for r in plan.selected()],
    })
    if report and plan.final in results:
        from tmkd.pipeline.report import write_report

        path = write_report(plan, results, **(report_options or {}))
        print(Path(path).with_suffix(".md").read_text())
        print(f"report: {path}")
    print(f"experiment folder: {plan.experiment_dir}", flush=True)
    return results


def experiment_result(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The last selected stage's metrics; with seeds, ``best`` is the mean over seeds and ``seeds`` the summary."""
    names = plan.seeded(plan.only) if plan.only else plan.finals
    if not all(n in results for n in names):
        return None
    first = {**results[names[0]], "run_folder": str(plan.runs[names[0]].out_dir)}
    if not plan.seeds:
        return first
    summary = summarise(plan, results)[base_name(names[0])]
    return {**first, "best": mean_metrics(summary), "seeds": summary,
            "run_folders": [str(plan.runs[n].out_dir) for n in names]}


def experiment_dir(top: dict[str, Any], create: bool = True) -> str | None:
    """Where the report goes: the experiment's folder; a trial of a search gets its own (made here unless not
    ``create``: ``plan=true`` only shows where it would go)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return HydraConfig.get().runtime.output_dir
    if os.environ.get("WANDB_SWEEP_ID"):
        checkpoints = Path(top["paths"]["checkpoints"])
        sweep_id = check_name(os.environ["WANDB_SWEEP_ID"], "WANDB_SWEEP_ID")
        sweep = checkpoints / check_name(top["experiment_name"], "experiment_name") / f"sweep-{sweep_id}"
        run_id = os.environ.get("WANDB_RUN_ID")
        folder = trial_dir(sweep, check_name(top["run_name"], "run_name"),
                           check_name(run_id, "WANDB_RUN_ID") if run_id else None, create)
        return str(check_inside(folder, checkpoints, "the sweep trial's folder"))
    return None


def trial_dir(sweep: Path, run_name: str, run_id: str | None, create: bool = True) -> Path:
    """A sweep trial's own folder, even for trials started in the same second (``run_name`` is a timestamp).

    With the W&B run id (the sweep agent sets ``WANDB_RUN_ID``) the folder is ``<run_name>-<run id>``: unique; a
    preempted trial that W&B resumes under the same id (and a later timestamp) finds its folder again. Without one,
    the first of ``<run_name>``, ``<run_name>-2``, ... that this process creates: ``mkdir`` either creates a folder or
    fails, atomically, so two trials never share one.
    """
    if run_id:
        earlier = sorted(p for p in sweep.glob(f"*-{run_id}") if p.is_dir()) if sweep.is_dir() else []
        folder = earlier[0] if earlier else sweep / f"{run_name}-{run_id}"
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return folder
    if not create:
        return sweep / run_name
    sweep.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        folder = sweep / (run_name if n == 1 else f"{run_name}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1


def report_settings(report: dict[str, Any], plan: Plan) -> tuple[bool, dict[str, Any]]:
    """(whether to write the report, its options) from a ``report`` config node (the command line's and the Python
    API's :func:`run_plan` calls read it the same way)."""
    return bool(report.get("enabled", True)), {
        "latency": report.get("latency", True), "rows": report.get("latency_rows", 64),
        "batch_sizes": report.get("batch_sizes", [1, 32]), "threads": report.get("threads"),
        "logger": plan.runs[plan.final].config.get("logger")}


def run_experiment(cfg: Any, overrides: list[str]) -> float | None:
    """Plan, print the plan, run it (unless ``plan=true``), report; returns the final run's optimized metric."""
    from tmkd.pipeline.factory import plain
    from tmkd.pipeline.plan import build_plan
    from tmkd.pipeline.train import optimized

    top = plain(cfg)
    check_name(top["run_name"], "run_name")  # the invocation's log folder (hydra.run.dir) is named after it
    own_dir = experiment_dir(top, create=not top.get("plan"))
    if own_dir:
        top["paths"]["experiment_dir"] = own_dir
    plan = build_plan(top, list(overrides))
    if os.environ.get("WANDB_SWEEP_ID"):
        # Under a W&B sweep agent the trial's W&B run is the final stage's; the runs it needs first log to CSV.
        for r in plan.runs.values():
            if r.name not in plan.finals and (r.config.get("logger") or {}).get("backend") == "wandb":
                r.config["logger"] = {"backend": "csv"}
    print(plan.describe(), flush=True)
    if top.get("plan"):
        return None
    enabled, options = report_settings(top.get("report") or {}, plan)
    results = run_plan(plan, report=enabled, report_options=options)
    outcome = experiment_result(plan, results)
    final = plan.seeded(plan.only)[0] if plan.only else plan.final
    return optimized(outcome or results[final], plan.runs[final].config["optimized_metric"])
