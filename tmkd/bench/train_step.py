"""Training-step throughput: length-grouped vs shuffled batching, and Lightning's overhead over a plain loop.

    python -m tmkd.bench.train_step --quick                                    # tiny student, synthetic pairs
    python -m tmkd.bench.train_step --task rte --data-dir ../shared/data       # MiniLM-L6 cut to 3 layers
    python -m tmkd.bench.train_step --task rte --data-dir ../shared/data --model PATH --train-rows 1024 --out t.md
    python -m tmkd.bench.train_step --task rte --data-dir ../shared/data --parts c            # validation order only

(a) **Batching.** The same student (same initial weights), optimiser and schedule train ``--epochs`` epochs on
tmkd's training loader (:class:`tmkd.data.TaskDataModule`: dynamic padding to each batch's longest row) with
``group_by_length`` off (a seeded shuffle, :class:`tmkd.data.sampling.EpochSampler`) and on (HF's megabatch
length grouping from the same generator). Reported: the per-epoch padding fraction (pad tokens / all tokens of the
padded batches, mean over the epochs), training examples per second (forward, backward, optimiser step and batch
collation; not evaluation) and the dev metric after the training, to show grouping does not hurt it.

(b) **Lightning overhead.** ``--steps`` steps of tmkd's :class:`tmkd.modules.FineTuneModule` through a
``pl.Trainer`` (no logger, checkpointing, progress bar or validation) against a plain PyTorch loop over the very
same loader (same batches in the same order), the same module's ``training_loss`` and the optimiser and schedule
of the module's own ``configure_optimizers``. Both clocks run from the start of the first batch's fetch to the end
of the last step; ``fit()`` wall time (Trainer set-up included) is given too. The runs alternate ``--repeats``
times and the fastest of each is kept (a shared CPU only ever slows a run down). The final weights of the two are
compared, to show they did the same work.

(c) **Validation order.** The first eval split through the data module's validation loader (rows sorted by length,
longest first) against the same rows in dataset order (:meth:`TaskDataModule.split_loader`, each batch padded to
its longest row, how validation batched before): padding fraction, examples per second of the evaluation (forward
passes, collation, metric) and the metric, which must be the same.

Every time is taken twice: wall clock and this process's CPU time (``time.process_time``). On a machine shared with
other jobs the wall clock counts the time the scheduler gave to them; the CPU time does not, so with one torch thread
(the default) it is the steadier measure of the work itself, and the one to compare across loops.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from tmkd.bench import peers
from tmkd.bench.teacher_pass import cpu_name
from tmkd.data import STUDENT, TaskDataModule
from tmkd.data.tokenize import view_lengths
from tmkd.modules import FineTuneModule, OptimConfig

BATCHING = {"shuffled": False, "length-grouped": True}  # row label -> TaskDataModule(group_by_length=...)


@dataclass
class Span:
    """Seconds of wall clock and of this process's CPU time."""

    wall: float
    cpu: float

    @staticmethod
    def now() -> Span:
        return Span(time.perf_counter(), time.process_time())

    def since(self) -> Span:
        end = Span.now()
        return Span(end.wall - self.wall, end.cpu - self.cpu)

    @staticmethod
    def fastest(spans: Sequence[Span]) -> Span:
        """Each clock's minimum over repeats (they may come from different repeats)."""
        return Span(min(s.wall for s in spans), min(s.cpu for s in spans))


@dataclass
class Setting:
    """What both sides of each comparison share."""

    task: str = peers.QUICK_TASK
    data_dir: str | None = None
    model: str | None = None  # hub id / folder; None: MiniLM-L6 cut to ``layers`` (tiny student with quick)
    layers: int = 3
    quick: bool = True
    train_rows: int | None = 1000
    eval_rows: int | None = None
    batch_size: int = 32
    epochs: int = 3
    steps: int = 60
    lr: float = 3e-3
    threads: int = 1
    repeats: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        bad = {k: getattr(self, k) for k in ("batch_size", "epochs", "steps", "threads", "repeats", "layers")
               if getattr(self, k) <= 0}
        if bad:
            raise ValueError(f"must be positive: {bad}")


def build(setting: Setting) -> tuple[Any, Any, Any]:
    """(task, student with its initial weights, tokenizer), seeded."""
    from tmkd.models import ModelSpec, build_classifier

    task = peers.resolve_task(setting.task)
    if setting.model:
        spec = ModelSpec(name_or_path=setting.model)
    elif setting.quick:
        spec = ModelSpec(tiny=peers.TINY_STUDENT, tokenizer="synthetic")
    else:
        spec = ModelSpec(name_or_path=peers.MINILM, num_layers=setting.layers)
    torch.manual_seed(setting.seed)
    model, tok = build_classifier(spec, task)
    return task, model, tok


def datamodule(setting: Setting, task: Any, tok: Any, grouped: bool, capped: bool = True) -> TaskDataModule:
    dm = TaskDataModule(task, {STUDENT: tok}, data_dir=setting.data_dir, batch_size=setting.batch_size,
                        max_train_samples=setting.train_rows if capped else None,
                        max_eval_samples=setting.eval_rows, group_by_length=grouped, seed=setting.seed)
    dm.setup("fit")
    return dm


def padding_fraction(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """Pad tokens / all tokens when ``order`` is cut into batches padded to their longest row."""
    pad = total = 0
    for a in range(0, len(order), batch_size):
        rows = [lengths[i] for i in order[a:a + batch_size]]
        width = max(rows) * len(rows)
        pad += width - sum(rows)
        total += width
    return pad / total if total else 0.0


def epoch_padding(loader: DataLoader, lengths: Sequence[int], epochs: int) -> float:
    """Mean per-epoch padding fraction of a training loader (its sampler's order for epochs 0..epochs-1)."""
    fractions = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        fractions.append(padding_fraction(lengths, list(loader.sampler), loader.batch_size))
    loader.sampler.set_epoch(0)
    return sum(fractions) / len(fractions)


@contextmanager
def stub_trainer(module: pl.LightningModule, total_steps: int) -> Iterator[None]:
    """Lets ``module.configure_optimizers`` run outside a Trainer (it reads only ``estimated_stepping_batches``),
    so the plain loop uses the module's own optimiser and schedule rather than a copy of that code."""
    module._trainer = SimpleNamespace(estimated_stepping_batches=total_steps)  # type: ignore[assignment]
    try:
        yield
    finally:
        module._trainer = None


def plain_fit(module: FineTuneModule, loader: DataLoader, steps: int) -> tuple[Span, float]:
    """``steps`` optimiser steps over ``loader`` (epochs as Lightning numbers them): (time, last loss)."""
    with stub_trainer(module, steps):
        conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    module.train()
    done, epoch, loss = 0, 0, torch.zeros(())
    start = Span.now()
    while done < steps:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            loss, _ = module.training_loss(batch)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
        epoch += 1
    return start.since(), loss.item()


class _Clock(pl.Callback):
    """Train-loop time inside ``fit``: from before the first batch's fetch to after the last step."""

    def __init__(self) -> None:
        self.start: Span | None = None
        self.took = Span(0.0, 0.0)

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.start is None:
            self.start = Span.now()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        assert self.start is not None
        self.took = self.start.since()


def lightning_fit(module: FineTuneModule, dm: TaskDataModule, steps: int) -> tuple[Span, Span]:
    """``steps`` steps through a Trainer: (train-loop time, whole ``fit()`` time)."""
    clock = _Clock()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[clock])
    start = Span.now()
    trainer.fit(module, datamodule=dm)
    return clock.took, start.since()


@torch.no_grad()
def evaluate(module: FineTuneModule, dm: TaskDataModule, loader: DataLoader | None = None) -> float:
    """The task's main metric on its first eval split, through the module's own evaluator (and by default the data
    module's validation loader)."""
    module.eval()
    split = module.task.eval_splits[0]
    evaluator = module.kind.evaluator(module.task)
    for batch in loader if loader is not None else dm.val_dataloader()[0]:
        evaluator.update(module.predict_logits(batch["inputs"][module.view]), batch)
    return float(evaluator.compute(dm, split)[module.task.main_metric])


def validation_rows(setting: Setting, task: Any, student: Any, tok: Any) -> list[dict[str, Any]]:
    """Part (c): the first eval split in row order (each batch padded to its longest row, as before) vs the data
    module's validation loader (rows sorted by length): padding fraction, ex/s (fastest of ``repeats``), metric."""
    dm = datamodule(setting, task, tok, grouped=True)
    split = task.eval_splits[0]
    module = FineTuneModule(copy.deepcopy(student), task)
    out = []
    loaders = {"dataset order": lambda: dm.split_loader(split), "sorted by length": lambda: dm.val_dataloader()[0]}
    for name, make in loaders.items():
        pad = total = 0
        for batch in make():
            mask = batch["inputs"][STUDENT]["attention_mask"]
            pad += int((mask == 0).sum())
            total += mask.numel()
        took = []
        for _ in range(setting.repeats):
            start = Span.now()
            metric = evaluate(module, dm, make())
            took.append(start.since())
        out.append({"order": name, "padding": pad / total, "took": Span.fastest(took), "rows": len(dm.encoded[split]),
                    "batch": dm.eval_batch_size, "metric": metric})
    return out


def batching_rows(setting: Setting, task: Any, student: Any, tok: Any) -> list[dict[str, Any]]:
    """Part (a): per batching, padding fraction, training ex/s and the dev metric after ``epochs`` epochs."""
    out = []
    for name, grouped in BATCHING.items():
        dm = datamodule(setting, task, tok, grouped)
        loader = dm.train_dataloader()
        lengths = view_lengths(dm.encoded[task.train_split], STUDENT)
        module = FineTuneModule(copy.deepcopy(student), task, OptimConfig(lr=setting.lr))
        torch.manual_seed(setting.seed)  # dropout
        steps = setting.epochs * len(loader)
        took, loss = plain_fit(module, loader, steps)
        out.append({"batching": name, "padding": epoch_padding(loader, lengths, setting.epochs), "took": took,
                    "examples": len(lengths) * setting.epochs, "steps": steps, "loss": loss,
                    "metric": evaluate(module, dm)})
    return out


def full_split_padding(setting: Setting, task: Any, tok: Any) -> tuple[int, dict[str, float]]:
    """Per-epoch padding fraction of each batching over the whole train split (no training: a row cap shrinks
    HF's megabatches, so capped rows understate what grouping saves on a full epoch)."""
    out = {}
    for name, grouped in BATCHING.items():
        dm = datamodule(setting, task, tok, grouped, capped=False)
        lengths = view_lengths(dm.encoded[task.train_split], STUDENT)
        out[name] = epoch_padding(dm.train_dataloader(), lengths, setting.epochs)
    return len(lengths), out


def overhead_rows(setting: Setting, task: Any, student: Any, tok: Any) -> dict[str, Any]:
    """Part (b): the plain loop and Lightning, alternated ``repeats`` times on the same batches; fastest kept."""
    dm = datamodule(setting, task, tok, grouped=True)
    examples = sum(len(b) for b in _first_batches(dm.train_dataloader(), setting.steps))
    plain: list[Span] = []
    lightning: list[Span] = []
    fit: list[Span] = []
    weights: dict[str, Any] = {}
    for _ in range(setting.repeats):
        for side in ("plain", "lightning"):
            module = FineTuneModule(copy.deepcopy(student), task, OptimConfig(lr=setting.lr))
            torch.manual_seed(setting.seed)  # dropout: the same masks on both sides
            if side == "plain":
                plain.append(plain_fit(module, dm.train_dataloader(), setting.steps)[0])
            else:
                loop, whole = lightning_fit(module, dm, setting.steps)
                lightning.append(loop)
                fit.append(whole)
            weights[side] = module.model.state_dict()
    diff = max(float((weights["plain"][k].float() - v.float()).abs().max()) for k, v in weights["lightning"].items())
    return {"steps": setting.steps, "examples": examples, "plain": Span.fastest(plain),
            "lightning": Span.fastest(lightning), "fit": Span.fastest(fit), "max_weight_diff": diff}


def _first_batches(loader: DataLoader, steps: int) -> Iterator[list[int]]:
    """The index batches of the first ``steps`` steps (epochs numbered as the loops number them)."""
    done, epoch = 0, 0
    while done < steps:
        loader.sampler.set_epoch(epoch)
        order = list(loader.sampler)
        for a in range(0, len(order), loader.batch_size):
            yield order[a:a + loader.batch_size]
            done += 1
            if done == steps:
                return
        epoch += 1


def tables(setting: Setting, task: Any, a: list[dict[str, Any]] | None, b: dict[str, Any] | None,
           full: tuple[int, dict[str, float]] | None, c: list[dict[str, Any]] | None) -> list[str]:
    metric = task.main_metric
    lines: list[str] = []
    if a:
        lines += table_a(setting, metric, a, full)
    if b:
        lines += table_b(setting, b)
    if c:
        lines += table_c(task, setting, metric, c)
    return lines


def table_a(setting: Setting, metric: str, a: list[dict[str, Any]], full: tuple[int, dict[str, float]] | None
            ) -> list[str]:
    lines = ["(a) batching: dynamic padding, shuffled vs length-grouped "
             f"({setting.epochs} epoch(s), {a[0]['steps']} steps each)", "",
             "| batching | padding fraction (per epoch) | train ex/s (wall) | train ex/s (CPU time) | "
             f"train time wall / CPU (s) | last loss | dev {metric} |", "|---|---|---|---|---|---|---|"]
    for r in a:
        t, n = r["took"], r["examples"]
        lines.append(f"| {r['batching']} | {r['padding']:.3f} | {n / t.wall:.1f} | {n / t.cpu:.1f} | "
                     f"{t.wall:.1f} / {t.cpu:.1f} | {r['loss']:.3f} | {r['metric']:.3f} |")
    (s0, s1) = (r["took"] for r in a)
    lines += ["", f"length-grouped / shuffled: {s0.wall / s1.wall:.2f}x examples/s (wall), "
              f"{s0.cpu / s1.cpu:.2f}x (CPU time)"]
    if full:
        lines += ["", f"padding fraction per epoch over the whole train split ({full[0]} rows, not trained on): "
                  + ", ".join(f"{name} {value:.3f}" for name, value in full[1].items())]
    return [*lines, ""]


def table_b(setting: Setting, b: dict[str, Any]) -> list[str]:
    n = b["examples"]
    p, lt, f = b["plain"], b["lightning"], b["fit"]
    return [f"(b) Lightning overhead: {b['steps']} steps ({n} examples, length-grouped batches), fastest of "
            f"{setting.repeats}", "",
            "| loop | train-loop time wall / CPU (s) | ex/s (wall) | ex/s (CPU time) | fit() incl. set-up, wall (s) |",
            "|---|---|---|---|---|",
            f"| plain PyTorch | {p.wall:.2f} / {p.cpu:.2f} | {n / p.wall:.1f} | {n / p.cpu:.1f} | - |",
            f"| Lightning (FineTuneModule) | {lt.wall:.2f} / {lt.cpu:.2f} | {n / lt.wall:.1f} | {n / lt.cpu:.1f} | "
            f"{f.wall:.2f} |", "",
            f"Lightning overhead: {100 * (lt.cpu / p.cpu - 1):+.1f}% CPU time, {100 * (lt.wall / p.wall - 1):+.1f}% "
            f"wall ({100 * (f.wall / p.wall - 1):+.1f}% with fit() set-up); target within 10%; "
            f"max |weight difference| after the runs: {b['max_weight_diff']:.1e}", ""]


def table_c(task: Any, setting: Setting, metric: str, c: list[dict[str, Any]]) -> list[str]:
    lines = [f"(c) validation: {c[0]['rows']} {task.eval_splits[0]} rows, batch {c[0]['batch']}, the initial "
             f"student, fastest of {setting.repeats}", "",
             f"| validation order | padding fraction | ex/s (wall) | ex/s (CPU time) | {metric} |",
             "|---|---|---|---|---|"]
    for r in c:
        t, n = r["took"], r["rows"]
        lines.append(f"| {r['order']} | {r['padding']:.3f} | {n / t.wall:.1f} | {n / t.cpu:.1f} | {r['metric']:.4f} |")
    in_order, by_length = c[0]["took"], c[1]["took"]
    lines += ["", f"sorted / dataset order: {in_order.wall / by_length.wall:.2f}x examples/s (wall), "
              f"{in_order.cpu / by_length.cpu:.2f}x (CPU time); same {metric}: {c[0]['metric'] == c[1]['metric']}"]
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"tiny student on {peers.QUICK_TASK} (seconds)")
    ap.add_argument("--task", default=None, help=f"rte (default), any registered task; {peers.QUICK_TASK} with "
                                                 "--quick")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", default=None, help="student: hub id or folder (default: MiniLM-L6 cut to --layers)")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--train-rows", type=int, default=None)
    ap.add_argument("--eval-rows", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=None, help="(a) training epochs per batching")
    ap.add_argument("--steps", type=int, default=None, help="(b) steps per loop")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="(b) alternated runs per loop; the fastest is kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"],
                    help="a: batching, b: Lightning overhead, c: validation order (default: all)")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    args = ap.parse_args(argv)
    quick = args.quick
    task_name = args.task or (peers.QUICK_TASK if quick else "rte")
    data_dir = peers.quick_data_dir() if task_name == peers.QUICK_TASK and args.data_dir is None else args.data_dir
    setting = Setting(task=task_name, data_dir=data_dir, model=args.model, layers=args.layers, quick=quick,
                      train_rows=args.train_rows or (1000 if quick else None), eval_rows=args.eval_rows,
                      batch_size=args.batch_size, epochs=args.epochs or (3 if quick else 1),
                      steps=args.steps or (60 if quick else 40), lr=args.lr or (3e-3 if quick else 5e-5),
                      threads=args.threads, repeats=args.repeats, seed=args.seed)
    torch.set_num_threads(setting.threads)
    head = (f"tmkd.bench.train_step: task={setting.task} student="
            f"{setting.model or ('tiny' if quick else f'{peers.MINILM} (layers 0..{setting.layers - 1})')} "
            f"rows={setting.train_rows or 'all'} batch={setting.batch_size} lr={setting.lr} seed={setting.seed} "
            f"device=cpu ({cpu_name()}, {setting.threads} thread(s)) torch {torch.__version__}")
    print(head, flush=True)
    with peers.quiet_loggers("pytorch_lightning", "lightning.pytorch", "tmkd"):
        task, student, tok = build(setting)
        a = batching_rows(setting, task, student, tok) if "a" in args.parts else None
        full = full_split_padding(setting, task, tok) if a and setting.train_rows is not None else None
        b = overhead_rows(setting, task, student, tok) if "b" in args.parts else None
        c = validation_rows(setting, task, student, tok) if "c" in args.parts else None
    lines = [head, "", *tables(setting, task, a, b, full, c)]
    print("\n".join(lines[1:]))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
