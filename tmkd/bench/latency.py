"""CPU inference latency of model folders, as a markdown table (the harness: :mod:`tmkd.deploy.latency`).

    python -m tmkd.bench.latency checkpoints/finetune_rte/minilm_l6_s42 checkpoints/rte_kd/<run> \
        --task rte --data-dir ../shared/data --threads 1 --onnx

How the numbers are measured (same inputs and method for every model, budgets, medians) is the harness's
docstring, :mod:`tmkd.deploy.latency`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers.utils import logging as hf_logging

from tmkd.data.sources import DataError
from tmkd.data.tasks import get_task
from tmkd.deploy.latency import load_texts, torch_latency
from tmkd.deploy.onnx import check_parity, default_onnx_dir, export_onnx, onnx_bytes, onnx_latency
from tmkd.models.build import resolve_path
from tmkd.models.saved import load_model, weights_bytes

PROG = "tmkd.bench.latency"


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
