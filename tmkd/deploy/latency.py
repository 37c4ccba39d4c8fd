"""CPU inference latency: one harness for every model and backend (the pipeline report, pruning, the benchmarks).

The command line is ``python -m tmkd.bench.latency`` (:mod:`tmkd.bench.latency`); ONNX Runtime timing is
:func:`tmkd.deploy.onnx.onnx_latency`.

Every model sees the same inputs, measured the same way, so numbers in one table are comparable:

- texts: the first ``rows`` rows of the task's first dev split (deterministic, no shuffling);
- batches: consecutive texts, wrapped round so every batch is full, tokenised *before* timing with dynamic
  padding (each batch padded to its own longest row, truncated at ``max_length``);
- timing: ``time.perf_counter`` around each forward call alone, after up to ``warmup`` untimed batches, with the
  garbage collector paused, torch under ``inference_mode`` with ``threads`` intra-op threads (set and restored),
  ONNX Runtime with ``intra_op_num_threads = threads``;
- bounded: at most ``max_batches`` per batch size, and no more once ``budget_s`` of timed work is spent (but at
  least ``min_batches``; warm-up stops after ``budget_s / 2``), so a report on a small shared machine costs
  seconds per model. Timed batches are always a prefix of the same batch list: a budget cut only shortens it.

Medians resist the odd slow batch of a shared machine; p90 shows the spread. Results record threads, library
versions and the CPU model, so a table can say how it was measured. Unit tests never assert on timings.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from tmkd.data.holdout import holdout_task
from tmkd.data.loading import load_splits
from tmkd.data.tasks import TaskSpec, get_task
from tmkd.environment import cpu_model, usable_cpus
from tmkd.models.saved import load_model, weights_bytes

Batch = Mapping[str, Any]
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


# --- environment -------------------------------------------------------------------------------------------------


def timing_environment(threads: int, backend: str = "torch") -> dict[str, Any]:
    """How a measurement was taken; stored in every result."""
    env: dict[str, Any] = {"backend": backend, "threads": threads, "torch": torch.__version__, "cpu": cpu_model(),
                           "cpus": usable_cpus(), "python": platform.python_version(), "platform": platform.platform()}
    if backend == "onnxruntime":
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    return env


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """``torch.set_num_threads(threads)`` for the block, restored after; yields the count in effect."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# --- inputs ------------------------------------------------------------------------------------------------------


def load_texts(task: Any, data_dir: str | os.PathLike | None = None, rows: int = 256,
               holdout: Any = None) -> list[tuple[str, ...]]:
    """The first ``rows`` rows of the task's first dev split, as tuples of its text columns.

    ``task``: a name, a :class:`~tmkd.data.TaskSpec`, or a config node / mapping with ``name`` and overrides.
    ``holdout`` (a :class:`~tmkd.data.holdout.Holdout`): the held-out part of train instead, the dev set unread.
    """
    if isinstance(task, str):
        spec = get_task(task)
    elif isinstance(task, TaskSpec):
        spec = task
    else:  # a task config node: name plus TaskSpec overrides (null = keep the registered value)
        node = OmegaConf.to_container(task, resolve=True) if isinstance(task, DictConfig) else dict(task)
        assert isinstance(node, dict)
        spec = get_task(node.pop("name"), **node)
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    spec = holdout_task(spec, holdout)
    loaded = load_splits(spec, data_dir, max_train_samples=1, max_eval_samples=rows, holdout=holdout)
    split = loaded[spec.eval_splits[0]]
    return list(zip(*(split[c] for c in spec.text_columns), strict=True))


def make_batches(texts: Sequence[tuple[str, ...]], batch_size: int, count: int) -> list[list[tuple[str, ...]]]:
    """``count`` full batches of consecutive texts, wrapping round at the end (deterministic)."""
    if not texts:
        raise ValueError("no texts to time")
    if batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batch_size}")
    n = len(texts)
    return [[texts[(b * batch_size + j) % n] for j in range(batch_size)] for b in range(count)]


def encode(tokenizer: Any, batch: Sequence[tuple[str, ...]], max_length: int, names: Sequence[str] | None,
           tensors: str = "pt") -> dict[str, Any]:
    """Tokenise one batch (padding to its longest row), keeping only the inputs the model takes."""
    columns = [list(c) for c in zip(*batch, strict=True)]  # one list per text column (1 or 2)
    enc = tokenizer(*columns, truncation=True, max_length=max_length, padding=True, return_tensors=tensors)
    keep = {k: v for k, v in enc.items() if names is None or k in names}
    if tensors == "np":
        keep = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in keep.items()}
    return keep


def model_input_names(model: torch.nn.Module) -> list[str] | None:
    """The standard inputs ``model.forward`` names (MPNet, for one, has no ``token_type_ids``); ``None`` when it
    names none of them (a bare ``**kwargs`` forward: pass what the tokenizer gives). transformers 5 forwards also
    take ``**kwargs``, so named parameters decide."""
    params = inspect.signature(model.forward).parameters
    names = [n for n in INPUT_NAMES if n in params]
    return names or None


def _rows_of(batch: Batch) -> tuple[int, int]:
    first = next(iter(batch.values()))
    shape = tuple(first.shape)
    return int(shape[0]), int(shape[1]) if len(shape) > 1 else 1


# --- the harness -------------------------------------------------------------------------------------------------


def measure_latency(run: Callable[[Batch], Any] | torch.nn.Module, batches: Sequence[Batch], *, warmup: int = 2,
                    max_batches: int = 50, min_batches: int = 3, budget_s: float = 2.0) -> dict[str, Any]:
    """Time ``run(batch)`` per batch; backend-agnostic (``batches`` are already-encoded inputs).

    ``run`` is any callable taking one batch mapping (an ``nn.Module`` is called as ``model(**batch)``; the
    caller sets threads and ``inference_mode``). The first ``warmup`` batches run untimed (lazy init, caches;
    fewer once ``budget_s / 2`` is spent, but at least one); timing then restarts at batch 0 and cycles the list,
    stopping at ``max_batches``, or once ``budget_s`` of timed work is spent after at least ``min_batches``.
    Returns per-batch median / p90 in ms, ms per example and examples/s (from totals: padded lengths differ
    between batches), batches timed and warmed, mean padded length, and whether the budget cut timing short.
    """
    if not batches:
        raise ValueError("no batches to time")
    if max_batches < 1 or min_batches < 1 or warmup < 0:
        raise ValueError("need max_batches >= 1, min_batches >= 1, warmup >= 0")
    call: Callable[[Batch], Any] = (lambda b: run(**b)) if isinstance(run, torch.nn.Module) else run
    warmed, warm_start = 0, time.perf_counter()
    while warmed < warmup and (warmed == 0 or time.perf_counter() - warm_start < budget_s / 2):
        call(batches[warmed % len(batches)])
        warmed += 1
    times: list[float] = []
    examples = tokens = 0
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one timed call would land in that batch's time
    try:
        spent = 0.0
        while len(times) < max_batches and (spent < budget_s or len(times) < min_batches):
            batch = batches[len(times) % len(batches)]
            start = time.perf_counter()
            call(batch)
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            spent += elapsed
            rows, length = _rows_of(batch)
            examples += rows
            tokens += length
    finally:
        if gc_was_enabled:
            gc.enable()
    total = sum(times)
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return {
        "batch_size": _rows_of(batches[0])[0],
        "ms_per_batch": 1e3 * statistics.median(times),
        "p90_ms_per_batch": 1e3 * p90,
        "ms_per_example": 1e3 * total / examples,
        "examples_per_s": examples / total,
        "timed_batches": len(times),
        "warmup_batches": warmed,
        "mean_seq_len": tokens / len(times),
        "budget_hit": len(times) < max_batches,
    }


def measure_sizes(run: Callable[[Batch], Any], encode_batch: Callable[[list[tuple[str, ...]]], Batch],
                  texts: Sequence[tuple[str, ...]], batch_sizes: Sequence[int], warmup: int, max_batches: int,
                  min_batches: int, budget_s: float) -> dict[str, dict[str, Any]]:
    """:func:`measure_latency` of ``run`` at each batch size (keys: the sizes as strings), on batches of ``texts``
    encoded by ``encode_batch`` before timing; the backends (torch here, ONNX Runtime in :mod:`tmkd.deploy.onnx`)
    differ only in ``run`` and ``encode_batch``."""
    out = {}
    for size in batch_sizes:
        distinct = min(max_batches, max(1, math.ceil(len(texts) / size)))
        batches = [encode_batch(b) for b in make_batches(texts, size, distinct)]  # tokenised outside the timing
        out[str(size)] = measure_latency(run, batches, warmup=warmup, max_batches=max_batches,
                                         min_batches=min_batches, budget_s=budget_s)
    return out


def torch_latency(model: torch.nn.Module, tokenizer: Any, texts: Sequence[tuple[str, ...]],
                  batch_sizes: Sequence[int] = (1, 32), max_length: int = 128, threads: int | None = None,
                  warmup: int = 2, max_batches: int = 50, min_batches: int = 3, budget_s: float = 2.0
                  ) -> dict[str, Any]:
    """Latency of a PyTorch model (eval mode, ``inference_mode``) per batch size.

    Returns ``{"env": {...threads, torch, cpu, rows, max_length}, "batches": {"1": stats, "32": stats}}``
    (string keys: the result goes to JSON as is); ``stats`` as in :func:`measure_latency`.
    """
    was_training = model.training
    model.eval()
    names = model_input_names(model)
    try:
        with torch_threads(threads) as used, torch.inference_mode():
            batches = measure_sizes(model, lambda b: encode(tokenizer, b, max_length, names), texts, batch_sizes,
                                    warmup, max_batches, min_batches, budget_s)
    finally:
        model.train(was_training)
    env = {**timing_environment(used, "torch"), "rows": len(texts), "max_length": max_length}
    return {"env": env, "batches": batches}


def model_latency(name_or_path: str | os.PathLike, texts: Sequence[tuple[str, ...]],
                  batch_sizes: Sequence[int] = (1, 32), threads: int | None = None, max_length: int = 128,
                  **harness: Any) -> dict[str, Any]:
    """:func:`torch_latency` of a model on disk, plus its parameter count and weight bytes (``"model"``)."""
    model, tokenizer = load_model(name_or_path)
    result = torch_latency(model, tokenizer, texts, batch_sizes=batch_sizes, max_length=max_length,
                           threads=threads, **harness)
    result["model"] = {"path": str(name_or_path), "params": sum(p.numel() for p in model.parameters()),
                       "size_bytes": weights_bytes(name_or_path), "type": model.config.model_type,
                       "layers": getattr(model.config, "num_hidden_layers", None)}
    return result
