"""Teacher-pass throughput: tmkd's soft-target build against a plain Hugging Face inference loop.

    python -m tmkd.bench.teacher_pass --data-dir ../shared/data          # MiniLM-L6, RTE and QNLI dev, 512 rows
    python -m tmkd.bench.teacher_pass --tasks rte --rows 128 --threads 2 --out table.md

Both sides use the same model, batch size, dtype, device and rows, and both time tokenisation plus the forward
passes. The plain loop is what one writes by hand: ``no_grad``, rows in dataset order, each batch padded to its
longest row. tmkd is :meth:`SoftTargetStore.split_logits` without a cache (rows sorted by length, restored to row
order). The classification head is freshly initialised: speed does not depend on the head's weights, and the check
that both return the same logits (max abs difference printed) holds either way.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tmkd.data import get_task, load_splits
from tmkd.data.tasks import TaskSpec
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.distill.targets import DEFAULT_BATCH_SIZE, SoftTargetStore
from tmkd.models import ModelSpec, build_classifier

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (``platform.processor()`` is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@torch.no_grad()
def plain_loop(model: PreTrainedModel, tok: PreTrainedTokenizerBase, ds: Dataset, task: TaskSpec,
               batch_size: int, max_length: int, device: torch.device) -> torch.Tensor:
    """The baseline: dataset order, padded to the longest row of each batch."""
    out = []
    for a in range(0, len(ds), batch_size):
        chunk = ds[a:a + batch_size]
        enc = tok(*(chunk[c] for c in task.text_columns), truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")
        out.append(model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu())
    return torch.cat(out)


def measure(task_name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    task = get_task(task_name)
    split = task.eval_splits[0]
    ds = load_splits(task, args.data_dir, max_train_samples=1, max_eval_samples=args.rows)[split]
    torch.manual_seed(0)
    model, tok = build_classifier(ModelSpec(name_or_path=args.model), task)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    ensemble = TeacherEnsemble([Teacher("t0", model, tok)], task).to(device, dtype)
    ensemble.teachers[0].view = "teacher"
    store = SoftTargetStore(ensemble, task, task.max_length, None, batch_size=args.batch_size)
    # warm-up (allocator, kernels) on a few rows, both sides
    plain_loop(model, tok, ds.select(range(min(16, len(ds)))), task, args.batch_size, task.max_length, device)
    store.split_logits(ds.select(range(min(16, len(ds)))), split, device)
    lengths = [len(x) for x in tok(*(list(ds[c]) for c in task.text_columns), truncation=True,
                                   max_length=task.max_length)["input_ids"]]
    start = time.perf_counter()
    want = plain_loop(model, tok, ds, task, args.batch_size, task.max_length, device)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    got = store.split_logits(ds, split, device)[:, 0]
    tmkd_s = time.perf_counter() - start
    return {"rows": len(ds), "mean_len": sum(lengths) / len(lengths), "max_len": max(lengths),
            "plain": len(ds) / plain_s, "tmkd": len(ds) / tmkd_s, "max_abs_diff": float((got - want).abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["rte", "qnli"])
    ap.add_argument("--data-dir", default=None, help="local GLUE files (else the hub)")
    ap.add_argument("--model", default=MINILM)
    ap.add_argument("--rows", type=int, default=512, help="dev rows per task (cap)")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = ap.parse_args()
    if args.rows <= 0 or args.batch_size <= 0 or args.threads <= 0:
        ap.error("--rows, --batch-size and --threads must be positive")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_name()}, {args.threads} thread(s)"
    lines = [f"tmkd.bench.teacher_pass: model={args.model} batch={args.batch_size} device={device.type} ({where}) "
             f"dtype={'bf16' if device.type == 'cuda' else 'fp32'}", "",
             "| task | rows | mean / max tokens | plain HF loop (ex/s) | tmkd store (ex/s) | ratio | max abs diff |",
             "|---|---|---|---|---|---|---|"]
    print(lines[0], flush=True)
    for name in args.tasks:
        r = measure(name, args, device)
        lines.append(f"| {name} | {r['rows']} | {r['mean_len']:.0f} / {r['max_len']} | {r['plain']:.1f} | "
                     f"{r['tmkd']:.1f} | {r['tmkd'] / r['plain']:.2f}x | {r['max_abs_diff']:.1e} |")
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
