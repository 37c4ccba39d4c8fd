"""tmkd side by side with TextBrewer on the same multi-teacher distillation, one run and a K-run study.

    python -m tmkd.bench.peers --quick                                   # tiny synthetic version (the tests' path)
    python -m tmkd.bench.peers --task rte --data-dir ../shared/data      # 3 MiniLM-L6 teachers, MiniLM-L3 student

Systems: ``tmkd (cache on)``, ``tmkd (cache off)``, ``textbrewer (online)`` (``MultiTeacherDistiller``, every
teacher on every step) and ``textbrewer (cached)`` (``DistillationConfig(is_caching_logits=True)``: one teacher
pass per run, kept in memory). All get the same rows (``tmkd.data.load_splits``, same caps and seed), the same 3
teachers and initial student weights, batch size, AdamW (decay groups as tmkd's), linear warm-up/decay schedule,
temperature, alpha, epochs and threads. Loss scales match: TextBrewer's ``kd_loss_type="ce"`` has no ``T**2``, so its
KD weight is ``alpha * T**2``, and CE-vs-KL differ by the teacher entropy, a constant. What still differs, by design
of each framework: TextBrewer averages teachers' *logits*, tmkd's ``mean`` aggregator their *probabilities*; the
shuffling differs (TextBrewer's cached mode keeps its first epoch's batches and only reorders them); tmkd also
scores each teacher on the dev split (a teacher pass TextBrewer does not make). So accuracies agree within noise,
not exactly; tmkd cache on and off train on the same order and agree closely.

Each system runs in its own process (``--worker``), so peak memory (``ru_maxrss``) is its own, and its first run
starts cold (empty ``datasets`` and soft-target caches). A run's wall time counts everything from raw rows to the
trained student: tokenisation, teacher passes, training; not loading the models (the same for all) nor the final
dev evaluation (one shared function). The study runs the same distillation K times over the same teachers: K=1
and K=``--k`` are measured, K=16 is extrapolated as run 1 + 15 x the mean of runs 2..K (said so in the table).
The last line's ratios are single-run (K=1) wall times, textbrewer / tmkd (cache on): >1 means tmkd is faster.

TextBrewer 0.2.1.post1 imports and trains unchanged with torch 2.13 and transformers 5 (no shims are needed); all
teachers read one batch in TextBrewer, so the teachers here share the student's tokenizer.

``--quick`` (tiny BERTs, all systems in one process) measures the frameworks' costs and checks that they do the
same work. Its task, ``synth_pair_sum`` (:func:`quick_task`), is ``synth_pair``'s words labelled by the polarity of
the whole pair, without label noise: ``synth_pair``'s own rule (first segment minus second, 10% noise) needs more
layers and steps than a quick run has, so a tiny student there sat at chance or not depending on the data order
alone, and the systems' accuracies could not be compared. Its 3 teachers are trained briefly on the same rows
(:func:`train_teachers`, once, shared by every system), so the KD half of the loss carries signal. The real setting
uses MiniLM-L6 teachers (pass fine-tuned ones with ``--teachers``; the default heads are fresh) and a MiniLM-L3
student.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

SYSTEMS = ("tmkd (cache on)", "tmkd (cache off)", "textbrewer (online)", "textbrewer (cached)")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TINY_TEACHER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
                "max_position_embeddings": 64}
TINY_STUDENT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                "max_position_embeddings": 64}
ACCURACY_TOLERANCE = 0.05  # |acc - mean| per system, quick setting (500 dev rows: ~2.2 sd of one accuracy's noise)
QUICK_TASK = "synth_pair_sum"
TEACHER_EPOCHS = 2  # quick teachers' brief training (gold labels, the systems' lr and batch size)


@dataclass
class Setup:
    """Everything that must be the same for every system."""

    task: str = QUICK_TASK
    data_dir: str | None = None
    quick: bool = True
    train_rows: int | None = 512
    eval_rows: int | None = None
    teachers: list[str] = field(default_factory=list)  # model folders / hub ids; empty: 3 built-in teachers
    batch_size: int = 32
    epochs: int = 2
    lr: float = 1e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    temperature: float = 2.0
    alpha: float = 0.5
    threads: int = 1
    k: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        bad = {k: v for k, v in (("batch_size", self.batch_size), ("epochs", self.epochs), ("threads", self.threads),
                                 ("k", self.k)) if v <= 0}
        if bad:
            raise ValueError(f"must be positive: {bad}")
        if self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise ValueError(f"need temperature > 0 and 0 <= alpha <= 1, got {self.temperature}, {self.alpha}")


def quick_task() -> Any:
    """The quick setting's task (not registered: a benchmark detail); its files are under :func:`quick_data_dir`."""
    from tmkd.data import TaskSpec

    return TaskSpec(QUICK_TASK, ("sentence1", "sentence2"), ("positive", "negative"), local_path=QUICK_TASK,
                    max_length=48)


def quick_data_dir(n_train: int = 2000, n_eval: int = 500) -> str:
    """A ``data_dir`` holding :func:`quick_task`'s splits, written once: ``synth_pair``'s generator (same words,
    lengths and hidden polarities, no noise) relabelled by ``sum(first) + sum(second)`` (> 0: 0, < 0: 1, ties
    dropped). A polarity total over the whole pair is what one attention layer's average can read, so a tiny
    student learns it in a few hundred steps whatever the data order."""
    import pandas as pd

    from tmkd.data import synthetic

    root = synthetic.cache_root() / "bench"
    folder = root / QUICK_TASK
    splits = {"train": (n_train, 0), "validation": (n_eval, 1)}
    stamp = folder / f"rows-{n_train}-{n_eval}"
    if stamp.exists():
        return str(root)
    folder.mkdir(parents=True, exist_ok=True)
    pol = synthetic.polarities()
    for split, (n, seed) in splits.items():
        rows: list[dict[str, Any]] = []
        while len(rows) < n:  # ties are dropped, so draw until there are n rows
            for r in synthetic.generate(2, n, seed + 1000 * len(rows), noise=0.0):
                first, second = str(r["first"]), str(r["second"])
                total = sum(pol[w] for w in first.split()) + sum(pol[w] for w in second.split())
                if total != 0 and len(rows) < n:
                    rows.append({"sentence1": first, "sentence2": second, "label": int(total < 0)})
        tmp = folder / f".{split}.parquet.tmp"
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        os.replace(tmp, folder / f"{split}.parquet")
    stamp.touch()
    return str(root)


def resolve_task(name: str) -> Any:
    from tmkd.data import get_task

    return quick_task() if name == QUICK_TASK else get_task(name)


def textbrewer_missing() -> str | None:
    """Why TextBrewer cannot run here (None when it can)."""
    try:
        import textbrewer  # noqa: F401
    except Exception as exc:  # an ImportError, or a failure inside its imports (e.g. a removed transformers name)
        return f"textbrewer not importable ({type(exc).__name__}: {exc}); pip install textbrewer==0.2.1.post1"
    return None


# --- shared pieces ---------------------------------------------------------------------------------------------------
def build_models(setup: Setup) -> tuple[Any, list[Any], Any, Any]:
    """(task, teacher models, student with its initial weights, tokenizer), identical in every worker (seeded;
    quick teachers are trained here, before any system's clock starts)."""
    from tmkd.models import ModelSpec, build_classifier

    task = resolve_task(setup.task)
    if setup.teachers:
        specs = [ModelSpec(name_or_path=p) for p in setup.teachers]
    elif setup.quick:
        specs = [ModelSpec(tiny=TINY_TEACHER, tokenizer="synthetic") for _ in range(3)]
    else:
        specs = [ModelSpec(name_or_path=MINILM) for _ in range(3)]
    teachers = []
    for i, spec in enumerate(specs):
        torch.manual_seed(setup.seed + 100 + i)
        model, tok = build_classifier(spec, task)
        teachers.append(model.eval().requires_grad_(False))
    student_spec = ModelSpec(tiny=TINY_STUDENT, tokenizer="synthetic") if setup.quick \
        else ModelSpec(name_or_path=MINILM, num_layers=3)
    torch.manual_seed(setup.seed)
    student, tok = build_classifier(student_spec, task)
    if setup.quick and not setup.teachers:
        train_teachers(teachers, tok, task, setup)
    return task, teachers, student, tok


def train_loader(setup: Setup, task: Any, tok: Any, seed: int) -> Any:
    """The train rows (same caps and seed as tmkd's), tokenised, shuffled by ``seed``, padded per batch."""
    from torch.utils.data import DataLoader

    from tmkd.data import load_splits

    train = load_splits(task, setup.data_dir, setup.train_rows, setup.eval_rows, setup.seed)[task.train_split]
    enc = train.map(lambda b: tok(*(b[c] for c in task.text_columns), truncation=True, max_length=task.max_length),
                    batched=True, remove_columns=train.column_names)
    rows = [{**r, "labels": y} for r, y in zip(enc, train[task.label_column], strict=True)]
    return DataLoader(rows, batch_size=setup.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
                      collate_fn=lambda f: dict(tok.pad(f, return_tensors="pt")))


def train_teachers(teachers: list[Any], tok: Any, task: Any, setup: Setup) -> None:
    """Fine-tune the quick teachers on gold labels for :data:`TEACHER_EPOCHS` (each its own data order), so that
    the KD half of every system's loss is a real signal rather than random teachers' noise."""
    from transformers import get_linear_schedule_with_warmup

    torch.set_num_threads(setup.threads)
    for i, model in enumerate(teachers):
        loader = train_loader(setup, task, tok, setup.seed + 100 + i)
        model.train().requires_grad_(True)
        optimizer = optimizer_for(model, setup)
        total = len(loader) * TEACHER_EPOCHS
        schedule = get_linear_schedule_with_warmup(optimizer, int(setup.warmup_ratio * total), total)
        for _ in range(TEACHER_EPOCHS):
            for batch in loader:
                model(**batch).loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
        model.eval().requires_grad_(False)


def optimizer_for(model: torch.nn.Module, setup: Setup) -> torch.optim.Optimizer:
    """tmkd's AdamW parameter groups (no decay on biases and LayerNorm)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": setup.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=setup.lr, eps=1e-8)


@torch.no_grad()
def dev_accuracy(model: torch.nn.Module, tok: Any, ds: Any, task: Any, batch_size: int = 128) -> float:
    model.eval()
    correct = 0
    for a in range(0, len(ds), batch_size):
        chunk = ds[a:a + batch_size]
        enc = tok(*(chunk[c] for c in task.text_columns), truncation=True, max_length=task.max_length, padding=True,
                  return_tensors="pt")
        correct += int((model(**enc).logits.argmax(-1) == torch.tensor(chunk[task.label_column])).sum())
    return correct / len(ds)


# --- one run per system ----------------------------------------------------------------------------------------------
def run_tmkd(setup: Setup, task: Any, teachers: list[Any], student: Any, tok: Any, cache_dir: str | None) -> Any:
    import pytorch_lightning as pl

    from tmkd.data import STUDENT, TaskDataModule
    from tmkd.distill.aggregators import build_aggregator
    from tmkd.distill.ensemble import Teacher, TeacherEnsemble
    from tmkd.modules import OptimConfig
    from tmkd.modules.distill import DistillConfig, distillation_module

    ensemble = TeacherEnsemble([Teacher(f"t{i}", m, tok) for i, m in enumerate(teachers)], task)
    extra = ensemble.assign_views(STUDENT, tok)
    dm = TaskDataModule(task, {STUDENT: tok, **extra}, data_dir=setup.data_dir, batch_size=setup.batch_size,
                        max_train_samples=setup.train_rows, max_eval_samples=setup.eval_rows, seed=setup.seed)
    module = distillation_module(student, task, OptimConfig(lr=setup.lr, weight_decay=setup.weight_decay,
                                                            warmup_ratio=setup.warmup_ratio), ensemble,
                                 DistillConfig(temperature=setup.temperature, alpha=setup.alpha,
                                               cache=cache_dir is not None, cache_dir=cache_dir),
                                 build_aggregator("mean"))
    pl.seed_everything(setup.seed, verbose=False)
    trainer = pl.Trainer(max_epochs=setup.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    return module.model


def run_textbrewer(setup: Setup, task: Any, teachers: list[Any], student: Any, tok: Any, cached: bool,
                   workdir: str) -> Any:
    from textbrewer import DistillationConfig, MultiTeacherDistiller, TrainingConfig
    from transformers import get_linear_schedule_with_warmup

    loader = train_loader(setup, task, tok, setup.seed)
    random.seed(setup.seed)  # the cached mode reshuffles its batches with `random`
    t_config = TrainingConfig(device="cpu", output_dir=workdir, log_dir=None, ckpt_frequency=1)
    d_config = DistillationConfig(temperature=setup.temperature, kd_loss_type="ce",
                                  kd_loss_weight=setup.alpha * setup.temperature ** 2,
                                  hard_label_weight=1 - setup.alpha, is_caching_logits=cached)
    student.train()
    distiller = MultiTeacherDistiller(t_config, d_config, model_T=teachers, model_S=student,
                                      adaptor_T=lambda batch, out: {"logits": out.logits},
                                      adaptor_S=lambda batch, out: {"logits": out.logits, "losses": out.loss})
    total = len(loader) * setup.epochs
    distiller.train(optimizer_for(student, setup), loader, num_epochs=setup.epochs,
                    scheduler_class=get_linear_schedule_with_warmup,
                    scheduler_args={"num_warmup_steps": int(setup.warmup_ratio * total), "num_training_steps": total})
    return student


def worker(system: str, setup: Setup, models: tuple[Any, list[Any], Any, Any] | None = None) -> dict[str, Any]:
    """K runs of one system; per-run wall time and dev accuracy, and the process's peak RSS."""
    with quiet_loggers("pytorch_lightning", "lightning.pytorch", "Distillation", "tmkd"):
        return _worker(system, setup, models)


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Errors only from these loggers while the block runs; their levels come back after (``--quick`` runs the
    workers in the caller's process, whose logging must stay as it was)."""
    loggers = [logging.getLogger(name) for name in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)


def _worker(system: str, setup: Setup, models: tuple[Any, list[Any], Any, Any] | None) -> dict[str, Any]:
    from tmkd.data import load_splits

    torch.set_num_threads(setup.threads)
    task, teachers, student, tok = models or build_models(setup)
    dev = load_splits(task, setup.data_dir, 1, setup.eval_rows, setup.seed)[task.eval_splits[0]]
    n_train = len(load_splits(task, setup.data_dir, setup.train_rows, 1, setup.seed)[task.train_split])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(setup.k):
            model = copy.deepcopy(student)  # every run starts from the same weights (a sweep trial, a re-run)
            start = time.perf_counter()
            if system.startswith("tmkd"):
                model = run_tmkd(setup, task, teachers, model, tok, tmp if "cache on" in system else None)
            else:
                model = run_textbrewer(setup, task, teachers, model, tok, "cached" in system, tmp)
            wall = time.perf_counter() - start
            runs.append({"wall_s": wall, "train_ex_per_s": n_train * setup.epochs / wall,
                         "dev_accuracy": dev_accuracy(model, tok, dev, task)})
    return {"system": system, "runs": runs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "train_rows": n_train, "dev_rows": len(dev)}


def spawn(system: str, setup: Setup) -> dict[str, Any]:
    """One system in a fresh process: its own peak memory, cold ``datasets`` cache, same threads."""
    with tempfile.TemporaryDirectory() as hf_cache:
        env = {**os.environ, "HF_DATASETS_CACHE": hf_cache, "OMP_NUM_THREADS": str(setup.threads)}
        proc = subprocess.run([sys.executable, "-m", "tmkd.bench.peers", "--worker", system, "--setup",
                               json.dumps(asdict(setup))], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{system} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- table -----------------------------------------------------------------------------------------------------------
def study(result: dict[str, Any], k: int) -> dict[int, float]:
    """Total wall time of K runs: measured for 1 and ``k``; 16 = run 1 + 15 x mean(runs 2..k)."""
    walls = [r["wall_s"] for r in result["runs"]]
    later = sum(walls[1:]) / len(walls[1:]) if len(walls) > 1 else walls[0]
    return {1: walls[0], k: sum(walls[:k]), 16: walls[0] + 15 * later}


def table(results: dict[str, dict[str, Any]], skipped: dict[str, str], setup: Setup) -> list[str]:
    k = setup.k
    head = ["system", "wall time, 1 run (s)", "train ex/s", "peak RSS (MB)", "dev accuracy",
            "study K=1 (s)", f"K={k} (s)", "K=16 (s, extrapolated)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in SYSTEMS:
        if name in skipped:
            lines.append(f"| {name} | skipped: {skipped[name]} |" + " |" * (len(head) - 2))
            continue
        r = results[name]
        s = study(r, k)
        first = r["runs"][0]
        accs = "/".join(f"{x['dev_accuracy']:.3f}" for x in r["runs"][:1])
        lines.append(f"| {name} | {first['wall_s']:.1f} | {first['train_ex_per_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{accs} | {s[1]:.1f} | {s[k]:.1f} | {s[16]:.1f} |")
    return lines


def ratio_line(results: dict[str, dict[str, Any]]) -> str:
    def ratio(peer: str) -> str:
        if peer not in results:
            return "n/a"
        return f"{results[peer]['runs'][0]['wall_s'] / results['tmkd (cache on)']['runs'][0]['wall_s']:.2f}x"

    return f"tmkd vs textbrewer (cached): {ratio('textbrewer (cached)')}; vs textbrewer (online): " \
           f"{ratio('textbrewer (online)')}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"tiny teachers and student on {QUICK_TASK} (seconds)")
    ap.add_argument("--task", default=None, help=f"rte (default) or qnli; with --quick {QUICK_TASK} (default) or a "
                                                 "synthetic task (synth_pair)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--teachers", nargs="*", default=[], help="3 fine-tuned teacher folders (default: built-in)")
    ap.add_argument("--train-rows", type=int, default=None)
    ap.add_argument("--eval-rows", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="models' initial weights, train cap and data order")
    ap.add_argument("--k", type=int, default=4, help="runs measured for the study (>= 2 to extrapolate K=16)")
    ap.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=None,
                    help="all systems in this process (default with --quick: no interpreter start-ups; peak RSS is "
                         "then the process's so far, not per system)")
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--setup", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, Setup(**json.loads(args.setup)))))
        return
    if args.k < 2:
        ap.error("--k must be >= 2 (runs 2..K give the per-run cost of later runs for the K=16 extrapolation)")
    if "tmkd (cache on)" not in args.systems:
        ap.error("the ratios are against 'tmkd (cache on)': keep it in --systems")
    quick = args.quick
    args.in_process = quick if args.in_process is None else args.in_process
    task_name = args.task or (QUICK_TASK if quick else "rte")
    data_dir = quick_data_dir() if task_name == QUICK_TASK and args.data_dir is None else args.data_dir
    setup = Setup(task=task_name, data_dir=data_dir, quick=quick,
                  train_rows=args.train_rows or (1000 if quick else None), eval_rows=args.eval_rows,
                  teachers=args.teachers, batch_size=args.batch_size, epochs=args.epochs or (4 if quick else 3),
                  lr=args.lr or (3e-3 if quick else 5e-5), threads=args.threads, k=args.k, seed=args.seed)
    missing = textbrewer_missing()
    skipped = {s: missing for s in SYSTEMS if s.startswith("textbrewer") and missing}
    skipped.update({s: "not selected (--systems)" for s in SYSTEMS if s not in args.systems})
    print(f"tmkd.bench.peers: task={setup.task} quick={quick} rows={setup.train_rows or 'all'} "
          f"epochs={setup.epochs} batch={setup.batch_size} T={setup.temperature} alpha={setup.alpha} "
          f"threads={setup.threads} K={setup.k} seed={setup.seed} "
          f"{'in one process' if args.in_process else 'one process per system'}",
          flush=True)
    results = {}
    models = build_models(setup) if args.in_process else None
    for system in SYSTEMS:
        if system not in skipped:
            results[system] = worker(system, setup, models) if models else spawn(system, setup)
            print(f"  {system}: done ({results[system]['runs'][0]['wall_s']:.1f}s first run)", flush=True)
    lines = table(results, skipped, setup)
    accs = {s: r["runs"][0]["dev_accuracy"] for s, r in results.items()}
    mean = sum(accs.values()) / len(accs)
    spread = max(abs(a - mean) for a in accs.values())
    notes = [f"dev accuracy spread: max |acc - mean| = {spread:.3f} over {len(accs)} systems "
             f"(tolerance {ACCURACY_TOLERANCE} in --quick); K=16 is extrapolated: run 1 + 15 x mean(runs 2..{setup.k})",
             "study ratios (K=16, textbrewer / tmkd cache on): " + "; ".join(
                 f"{s}: {study(results[s], setup.k)[16] / study(results['tmkd (cache on)'], setup.k)[16]:.2f}x"
                 for s in results if s != "tmkd (cache on)")]
    if models and setup.quick and not setup.teachers:
        from tmkd.data import load_splits

        task, teachers, _, tok = models
        dev = load_splits(task, setup.data_dir, 1, setup.eval_rows, setup.seed)[task.eval_splits[0]]
        notes.append(f"quick teachers (trained {TEACHER_EPOCHS} epochs on the train rows, shared): dev accuracy "
                     + "/".join(f"{dev_accuracy(t, tok, dev, task):.3f}" for t in teachers))
    last = ratio_line(results)
    print("\n".join([*lines, "", *notes, last]))
    if args.out:
        Path(args.out).write_text("\n".join([*lines, "", *notes, "", last]) + "\n")


if __name__ == "__main__":
    main()
