"""Training-step throughput with N teachers, soft-target cache on vs off.

    python -m tmkd.bench.cache                      # 3 tiny teachers, synthetic task (seconds)
    python -m tmkd.bench.cache --real --data-dir ../shared/data   # 3 MiniLM-L6 teachers, RTE, MiniLM-L3 student

"off" runs every teacher on every batch; "on" reads targets built once before training (the one-off
build time is printed separately: it is paid once across epochs, stages and sweep trials).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import pytorch_lightning as pl
import torch

from tmkd.data import STUDENT, TaskDataModule, get_task
from tmkd.distill.aggregators import build_aggregator
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.models import ModelSpec, build_classifier
from tmkd.modules import OptimConfig
from tmkd.modules.distill import DistillConfig, distillation_module

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
        "max_position_embeddings": 64}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


class StepTimer(pl.Callback):
    """Wall time of training batches only (no setup, no target building, no validation)."""

    def __init__(self, warmup: int = 2) -> None:
        self.warmup, self.seconds, self.examples, self._t = warmup, 0.0, 0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, idx: int) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, out: Any, batch: Any, idx: int) -> None:
        if idx >= self.warmup:
            self.seconds += time.perf_counter() - self._t
            self.examples += batch["labels"].shape[0]


def measure(args: argparse.Namespace, cache: bool) -> dict[str, float]:
    task = get_task(args.task)
    if args.real:
        teacher_specs = [ModelSpec(name_or_path=MINILM) for _ in range(args.teachers)]
        student_spec = ModelSpec(name_or_path=MINILM, num_layers=3)
    else:
        teacher_specs = [ModelSpec(tiny=TINY, tokenizer=f"synthetic:{i}") for i in range(args.teachers)]
        student_spec = ModelSpec(tiny={**TINY, "hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64})
    pl.seed_everything(0)
    members = []
    for i, spec in enumerate(teacher_specs):
        model, tok = build_classifier(spec, task)
        members.append(Teacher(f"t{i}", model, tok))
    ensemble = TeacherEnsemble(members, task)
    student, tok = build_classifier(student_spec, task)
    extra = ensemble.assign_views(STUDENT, tok)
    with tempfile.TemporaryDirectory() as cache_dir:
        module = distillation_module(student, task, OptimConfig(), ensemble,
                                     DistillConfig(cache=cache, cache_dir=cache_dir), build_aggregator("mean"))
        dm = TaskDataModule(task, {STUDENT: tok, **({} if cache else extra)}, data_dir=args.data_dir,
                            batch_size=args.batch_size, max_train_samples=args.batch_size * (args.steps + 2),
                            max_eval_samples=args.batch_size)
        timer = StepTimer()
        trainer = pl.Trainer(max_epochs=1, accelerator="auto", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             num_sanity_val_steps=0, callbacks=[timer])
        started = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        total = time.perf_counter() - started
    return {"examples_per_s": timer.examples / timer.seconds, "step_seconds": timer.seconds,
            "fit_seconds": total, "teacher_batches": ensemble.forward_batches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", action="store_true", help="MiniLM-L6 teachers and MiniLM-L3 student (HF cache)")
    ap.add_argument("--task", default=None, help="default: synth_pair, or rte with --real")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--teachers", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    args.task = args.task or ("rte" if args.real else "synth_pair")
    torch.set_num_threads(torch.get_num_threads())
    off = measure(args, cache=False)
    on = measure(args, cache=True)
    print(f"tmkd.bench.cache: task={args.task} teachers={args.teachers} steps={args.steps} "
          f"batch={args.batch_size} device={'cuda' if torch.cuda.is_available() else 'cpu'} real={args.real}")
    for name, r in (("cache off", off), ("cache on", on)):
        print(f"  {name:9s}: {r['examples_per_s']:8.1f} examples/s in training steps "
              f"(fit incl. setup {r['fit_seconds']:.1f}s, teacher batches run {r['teacher_batches']})")
    print(f"  speed-up (on/off): {on['examples_per_s'] / off['examples_per_s']:.2f}x")


if __name__ == "__main__":
    main()
