"""Inference size and speed of exported models (``<run>/hf`` folders) on a task's validation texts.

    python -m tmkd.bench.speed checkpoints/finetune_sst2/minilm_l6_s42 checkpoints/sst2_tiny_kd/<run> \
        --task sst2 --data-dir ../shared/data
Prints parameters, examples per second (batch 64, no grad, padding per batch) and accuracy, per model.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tmkd.data import get_task, load_splits
from tmkd.models.build import resolve_path


@torch.inference_mode()
def measure(path: str, texts: list[tuple[str, ...]], labels: list[int], batch_size: int, max_length: int
            ) -> dict[str, float]:
    folder = resolve_path(path)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    correct, seconds = 0, 0.0
    for i in range(0, len(texts), batch_size):
        chunk = list(zip(*texts[i:i + batch_size], strict=True))
        enc = tok(*chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        start = time.perf_counter()
        logits = model(**enc).logits
        seconds += time.perf_counter() - start
        correct += (logits.argmax(-1) == torch.tensor(labels[i:i + batch_size])).sum().item()
    return {"params": sum(p.numel() for p in model.parameters()), "layers": model.config.num_hidden_layers,
            "examples_per_s": len(texts) / seconds, "accuracy": correct / len(texts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="run folders or save_pretrained folders")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--max-eval-samples", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    task = get_task(args.task)
    split = load_splits(task, args.data_dir, max_train_samples=1, max_eval_samples=args.max_eval_samples)
    ds = split[task.eval_splits[0]]
    texts = list(zip(*(ds[c] for c in task.text_columns), strict=True))
    labels = ds[task.label_column]
    measure(args.models[0], texts[: args.batch_size], labels[: args.batch_size], args.batch_size, task.max_length)
    print(f"tmkd.bench.speed: task={task.name} split={task.eval_splits[0]} rows={len(texts)} "
          f"batch={args.batch_size} threads={torch.get_num_threads()}")
    for path in args.models:
        r = measure(path, texts, labels, args.batch_size, task.max_length)
        print(f"  {path}: {r['params'] / 1e6:.1f}M params, {r['layers']} layers, "
              f"{r['examples_per_s']:.0f} examples/s, accuracy {r['accuracy']:.4f}")


if __name__ == "__main__":
    main()
