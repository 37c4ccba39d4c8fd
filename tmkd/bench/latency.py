"""CPU inference latency: one harness for every model and backend (the pipeline report and the benchmarks).

    python -m tmkd.bench.latency checkpoints/finetune_rte/minilm_l6_s42 checkpoints/rte_kd/<run> \
        --task rte --data-dir ../shared/data --threads 1 --onnx

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

import argparse
import contextlib
import gc
import inspect
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tmkd.environment import cpu_model, usable_cpus

Batch = Mapping[str, Any]
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
PROG = "tmkd.bench.latency"


# --- environment -------------------------------------------------------------------------------------------------


def environment(threads: int, backend: str = "torch") -> dict[str, Any]:
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
    from tmkd.data import TaskSpec, get_task, load_splits

    if isinstance(task, str):
        spec = get_task(task)
    elif isinstance(task, TaskSpec):
        spec = task
    else:  # a task config node: name plus TaskSpec overrides (null = keep the registered value)
        from omegaconf import DictConfig, OmegaConf

        node = OmegaConf.to_container(task, resolve=True) if isinstance(task, DictConfig) else dict(task)
        assert isinstance(node, dict)
        spec = get_task(node.pop("name"), **node)
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    from tmkd.data.holdout import holdout_task

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


def _measure_sizes(run: Callable[[Batch], Any], encode_batch: Callable[[list[tuple[str, ...]]], Batch],
                   texts: Sequence[tuple[str, ...]], batch_sizes: Sequence[int], warmup: int, max_batches: int,
                   min_batches: int, budget_s: float) -> dict[str, dict[str, Any]]:
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
            batches = _measure_sizes(model, lambda b: encode(tokenizer, b, max_length, names), texts, batch_sizes,
                                     warmup, max_batches, min_batches, budget_s)
    finally:
        model.train(was_training)
    env = {**environment(used, "torch"), "rows": len(texts), "max_length": max_length}
    return {"env": env, "batches": batches}


def ort_session(onnx_path: str | os.PathLike, threads: int | None = None) -> Any:
    """A CPU InferenceSession with ``threads`` intra-op threads (``None``: ONNX Runtime's default), one inter-op
    thread and all graph optimisations, so its thread count matches the torch side's."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def onnx_latency(onnx_dir: str | os.PathLike, tokenizer: Any, texts: Sequence[tuple[str, ...]],
                 batch_sizes: Sequence[int] = (1, 32), max_length: int = 128, threads: int | None = None,
                 warmup: int = 2, max_batches: int = 50, min_batches: int = 3, budget_s: float = 2.0
                 ) -> dict[str, Any]:
    """:func:`torch_latency` for an ONNX export (a folder from :func:`tmkd.deploy.export_onnx` or a ``.onnx``
    file) through ONNX Runtime; ``tokenizer=None`` loads the one saved beside the export."""
    from tmkd.deploy.onnx import onnx_file

    path = onnx_file(onnx_dir)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path.parent)
    session = ort_session(path, threads)
    names = [i.name for i in session.get_inputs()]
    batches = _measure_sizes(lambda b: session.run(None, b), lambda b: encode(tokenizer, b, max_length, names, "np"),
                             texts, batch_sizes, warmup, max_batches, min_batches, budget_s)
    used = threads if threads is not None else usable_cpus()  # ORT's default: one thread per usable core
    env = {**environment(used, "onnxruntime"), "rows": len(texts), "max_length": max_length}
    return {"env": env, "batches": batches}


# --- models on disk ----------------------------------------------------------------------------------------------


def _register_custom_models() -> None:
    """Import the packages that register tmkd's own architectures (``tmkd_pruned_bert``) with the Auto classes."""
    with contextlib.suppress(ImportError):
        import tmkd.prune  # noqa: F401


def model_folder(name_or_path: str | os.PathLike) -> Path | None:
    """The local folder a model loads from: a run's ``hf/``, a save_pretrained folder, or a hub id's cached
    snapshot (``None`` when not cached)."""
    from tmkd.models.build import resolve_path

    resolved = resolve_path(str(name_or_path))
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(resolved, "config.json")
    return Path(config).parent if isinstance(config, str) else None


def weights_bytes(name_or_path: str | os.PathLike) -> int | None:
    """Bytes of the model's weight files (safetensors, else ``.bin``): the size a deployment ships."""
    folder = model_folder(name_or_path)
    if folder is None:
        return None
    for suffix in WEIGHT_SUFFIXES:
        files = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix)]
        if files:
            return sum(p.stat().st_size for p in files)
    return None


def load_model(name_or_path: str | os.PathLike) -> tuple[torch.nn.Module, Any]:
    """A sequence classifier (or, for a question-answering export, a span model) and its tokenizer (eval mode) from
    a run folder, save_pretrained folder, hub id, or a run's Lightning ``.ckpt`` (architecture from the run's
    export, weights from the checkpoint)."""
    from transformers import (
        AutoConfig,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging

    from tmkd.models.build import load_ckpt_weights, resolve_path

    _register_custom_models()
    folder = resolve_path(str(name_or_path))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a hub encoder's new head is expected here: latency does not need it trained
    try:
        architectures = AutoConfig.from_pretrained(folder).architectures or []
        spans = any(a.endswith("ForQuestionAnswering") for a in architectures)
        auto = AutoModelForQuestionAnswering if spans else AutoModelForSequenceClassification
        model = auto.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    finally:
        hf_logging.set_verbosity(verbosity)
    if str(name_or_path).endswith(".ckpt"):
        load_ckpt_weights(model, Path(name_or_path).expanduser())
    return model, tokenizer


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


# --- table -------------------------------------------------------------------------------------------------------


def markdown_table(entries: Sequence[dict[str, Any]]) -> str:
    """One row per (model, backend, batch size); speed-up = the first entry's ms/batch / this one's, per batch size.

    ``entries``: results of :func:`model_latency` / :func:`torch_latency` / :func:`onnx_latency`, each with a
    ``"name"`` and optionally ``"params"`` and ``"size_bytes"`` (as in ``result["model"]``).
    """
    head = ["model", "params", "size on disk", "backend", "batch", "ms/batch (median)", "p90 ms", "ms/example",
            "examples/s", "speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = entries[0]["batches"] if entries else {}
    for entry in entries:
        params, size = entry.get("params"), entry.get("size_bytes")
        for key, s in entry["batches"].items():
            ref = base.get(key)
            cells = [entry["name"], _short(params, "") if params else "-", _short(size, "B") if size else "-",
                     entry["env"]["backend"], key, f"{s['ms_per_batch']:.2f}", f"{s['p90_ms_per_batch']:.2f}",
                     f"{s['ms_per_example']:.2f}", f"{s['examples_per_s']:.1f}",
                     f"{ref['ms_per_batch'] / s['ms_per_batch']:.2f}x" if ref else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(value: float, unit: str) -> str:
    """22.7M, 38.2k, 86.6MB: three significant figures without a column of zeros for tiny test models."""
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= div:
            return f"{value / div:.3g}{prefix}{unit}"
    return f"{value:.0f}{unit}"


def describe(result: dict[str, Any]) -> str:
    """One line on how a result was measured, for under a table."""
    env = result["env"]
    timed = ", ".join(f"batch {k}: {s['timed_batches']} timed" for k, s in result["batches"].items())
    extra = f", onnxruntime {env['onnxruntime']}" if "onnxruntime" in env else ""
    return (f"{env['rows']} dev texts, max_length {env['max_length']}, dynamic padding, {env['threads']} thread(s), "
            f"torch {env['torch']}{extra}, {env['cpu']} ({env['cpus']} usable CPUs); {timed}")


# --- CLI ---------------------------------------------------------------------------------------------------------


class CliError(Exception):
    """A usage problem reported as one line, exit status 2."""


def _check_model_arg(path: str) -> None:
    from tmkd.models.build import resolve_path

    p = Path(path).expanduser()
    looks_local = p.is_absolute() or path.startswith((".", "~")) or path.count("/") != 1
    if not p.exists() and looks_local:
        raise CliError(f"{path}: no such folder (expected a tmkd run folder, a save_pretrained folder or a hub id)")
    try:
        resolve_path(path)
    except FileNotFoundError as err:
        raise CliError(f"{err} (not a model folder)") from None


def _load_or_fail(path: str) -> tuple[torch.nn.Module, Any]:
    try:
        return load_model(path)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CliError(f"cannot load {path} as a sequence classifier: {first}") from None


def run_cli(args: argparse.Namespace) -> int:
    """The CLI's work; returns the exit status (1 when an ONNX export fails its parity check)."""
    from tmkd.data import DataError

    if any(b < 1 for b in args.batch_sizes) or args.rows < 1 or (args.threads is not None and args.threads < 1):
        raise CliError("--batch-sizes, --rows and --threads must be >= 1")
    for path in args.models:
        _check_model_arg(path)
    if args.onnx:
        try:
            import onnx  # noqa: F401  (the exporter needs it)
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise CliError(f"--onnx needs onnx and onnxruntime ({err}); pip install onnx onnxruntime") from None
    try:
        from tmkd.data import get_task

        task = get_task(args.task)
        texts = load_texts(task, args.data_dir, rows=args.rows)
    except KeyError as err:
        raise CliError(str(err)) from None
    except (DataError, OSError, ConnectionError) as err:
        raise CliError(f"cannot load {args.task} texts: {err} (give --data-dir, or --task synth_pair offline)"
                       ) from None
    max_length = args.max_length or task.max_length
    harness = {"batch_sizes": args.batch_sizes, "max_length": max_length, "threads": args.threads,
               "warmup": args.warmup, "max_batches": args.max_batches, "budget_s": args.budget_s}
    entries, notes, status = [], [], 0
    for path in args.models:
        model, tokenizer = _load_or_fail(path)
        info = {"name": path, "params": sum(p.numel() for p in model.parameters()), "size_bytes": weights_bytes(path)}
        entries.append({**info, **torch_latency(model, tokenizer, texts, **harness)})
        print(f"{PROG}: {path}: torch done", file=sys.stderr)
        if args.onnx:
            from tmkd.deploy.onnx import check_parity, default_onnx_dir, export_onnx, onnx_bytes

            onnx_path = export_onnx(path, default_onnx_dir(path), model=model, tokenizer=tokenizer)
            parity = check_parity(path, onnx_path, texts[:32], max_length=max_length, model=model,
                                  tokenizer=tokenizer)
            verdict = "ok" if parity["ok"] else "FAILED"
            notes.append(f"- {path}: ONNX export {onnx_path}; parity on {parity['examples']} texts (batches of "
                         f"{parity['batch_sizes']}): max |logit diff| {parity['max_abs_diff']:.2e}, atol "
                         f"{parity['atol']:.0e}, argmax agreement {parity['argmax_agreement']:.3f}: {verdict}")
            if not parity["ok"]:
                status = 1
            entries.append({**info, "name": f"{path} (onnx)", "size_bytes": onnx_bytes(onnx_path),
                            **onnx_latency(onnx_path.parent, tokenizer, texts, **harness)})
            print(f"{PROG}: {path}: onnxruntime done", file=sys.stderr)
    print(f"## CPU latency: {task.name} / {task.eval_splits[0]}\n")
    print(markdown_table(entries))
    print(f"\nMeasured: {describe(entries[0])}.")
    print(f"Speed-up: {args.models[0]} (torch) ms/batch / each row's ms/batch at the same batch size.")
    if notes:
        print("\nONNX parity:\n" + "\n".join(notes))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", metavar="MODEL_DIR", help="tmkd run folders, save_pretrained folders or "
                                                                  "hub ids; the first is the speed-up baseline")
    ap.add_argument("--task", default="rte", help="task whose dev texts are timed (default rte)")
    ap.add_argument("--data-dir", default=None, help="local data root (default $TMKD_DATA_DIR, else the hub)")
    ap.add_argument("--rows", type=int, default=256, help="first N dev rows (default 256)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for every backend (default 1)")
    ap.add_argument("--max-length", type=int, default=None, help="truncation length (default: the task's)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches per batch size")
    ap.add_argument("--max-batches", type=int, default=50, help="timed batches per batch size, at most")
    ap.add_argument("--budget-s", type=float, default=2.0, help="seconds of timed work per batch size, roughly")
    ap.add_argument("--onnx", action="store_true", help="also export to ONNX (cached in <model>/onnx/), check "
                                                        "parity and time ONNX Runtime")
    args = ap.parse_args(argv)
    import datasets
    from transformers.utils import logging as hf_logging

    bars = (datasets.utils.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled())
    datasets.disable_progress_bars()  # the table is the output; per-file bars would bury it
    hf_logging.disable_progress_bar()
    try:
        return run_cli(args)
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    finally:  # main() is also called in-process (tests): leave the libraries as they were
        if not bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            hf_logging.enable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
