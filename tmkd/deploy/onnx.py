"""ONNX export of sequence classifiers, a parity check of ONNX Runtime against PyTorch, and ONNX Runtime latency
(the same harness as PyTorch's: :mod:`tmkd.deploy.latency`).

Exporter choice (checked with torch 2.13, transformers 5.23, onnx 1.23, onnxruntime 1.32 on MiniLM-L6 and
MPNet-base): the TorchScript-based ``torch.onnx.export(..., dynamo=False)``.

- It exports any ``nn.Module``: stock BERT / MPNet and custom classes registered with the Auto classes
  (``tmkd_pruned_bert``) alike; it needs only ``onnx`` besides torch; max |logit diff| was ~1e-8 on real batches.
  It is fast (~1 s for a tiny model, ~3 s MiniLM-L6, ~20 s MPNet-base), so tests can export.
- The dynamo exporter (``exporter="dynamo"``) gives the same parity but needs ``onnxscript`` and took ~25 s even
  for a 2-layer toy model; it stays available for when the TorchScript exporter (deprecated since torch 2.9) is
  removed.
- ``optimum`` / ``optimum-onnx`` was not an option: its only release on the index (0.1.0) pins
  ``transformers<4.58``, and its per-architecture config table would exclude custom models anyway.

Tracing pitfalls handled here: the example batch is padded (transformers drops an all-ones attention mask, and a
trace would bake that in), and the wrapper is put in eval mode (export restores the wrapper's mode, which would
otherwise switch dropout back on in the model). The parity check is what guards against the next such pitfall.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from tmkd.data.synthetic import cache_root
from tmkd.deploy.latency import (
    INPUT_NAMES,
    encode,
    measure_sizes,
    model_input_names,
    timing_environment,
)
from tmkd.environment import usable_cpus
from tmkd.models.saved import load_model, model_folder

ONNX_NAME = "model.onnx"
META_NAME = "tmkd_onnx.json"  # written last: its presence marks a complete export
DEFAULT_OPSET = 17  # first opset with LayerNormalization; ONNX Runtime >= 1.14 runs it
DEFAULT_ATOL = 1e-4
TRACE_TEXTS = ("a short one", "a somewhat longer second example, so that the first row is padded")


def onnx_file(path: str | os.PathLike) -> Path:
    """The ``.onnx`` file of an export folder (or the file itself)."""
    p = Path(path).expanduser()
    candidate = p / ONNX_NAME if p.is_dir() else p
    if not candidate.is_file():
        raise FileNotFoundError(f"no ONNX model at {candidate}")
    return candidate


def onnx_bytes(path: str | os.PathLike) -> int:
    """Bytes of the ONNX graph plus any external-data files beside it."""
    file = onnx_file(path)
    extra = [p for p in file.parent.iterdir() if p.is_file() and p.name.startswith(file.name) and p != file]
    return file.stat().st_size + sum(p.stat().st_size for p in extra)


def default_onnx_dir(name_or_path: str | os.PathLike) -> Path:
    """Where a model's export is cached: ``<folder>/onnx`` (a run folder or save_pretrained folder),
    ``<run>/checkpoints/<ckpt>_onnx`` (a checkpoint), ``$TMKD_CACHE_DIR/onnx/<org>--<name>`` (a hub id)."""
    p = Path(name_or_path).expanduser()
    if p.suffix == ".ckpt":
        return p.with_name(p.stem + "_onnx")
    if p.is_dir():
        return p / "onnx"
    return cache_root() / "onnx" / str(name_or_path).replace("/", "--")


def _fingerprint(name_or_path: str | os.PathLike) -> list[list[Any]]:
    """Name, size and mtime of the files the model loads from: a changed checkpoint invalidates the export."""
    files: list[Path] = []
    folder = model_folder(name_or_path)
    if folder is not None:
        files += [f for f in sorted(folder.iterdir()) if f.is_file()]
    if str(name_or_path).endswith(".ckpt"):
        files.append(Path(name_or_path).expanduser())
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


class _Logits(torch.nn.Module):
    """Positional inputs -> logits tensor: the graph's inputs are named, its one output is ``logits``."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs, strict=True))).logits


def graph_inputs(model: torch.nn.Module, tokenizer: Any) -> list[str]:
    """Inputs the graph takes: what the tokenizer produces and ``forward`` accepts (MPNet: no token_type_ids)."""
    accepted = model_input_names(model) or list(INPUT_NAMES)
    produced = set(tokenizer.model_input_names)
    names = [n for n in accepted if n in produced]
    if "input_ids" not in names:
        raise ValueError(f"{type(model).__name__} does not take input_ids from its tokenizer; cannot export")
    return names


def export_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET,
                *, exporter: str = "torchscript", model: torch.nn.Module | None = None, tokenizer: Any = None,
                force: bool = False) -> Path:
    """Export a sequence classifier to ``<out_dir>/model.onnx`` (logits output; dynamic batch and sequence axes)
    with its config and tokenizer beside it; returns the ``.onnx`` path.

    ``model_dir``: a run folder, save_pretrained folder, hub id or run ``.ckpt`` (``out_dir`` defaults to
    :func:`default_onnx_dir`). An export whose source files, opset and exporter are unchanged is reused unless
    ``force``. ``model`` / ``tokenizer``: already-loaded copies of ``model_dir``'s, to skip loading them again.
    """
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    out = Path(out_dir).expanduser() if out_dir is not None else default_onnx_dir(model_dir)
    meta = {"source": str(model_dir), "files": _fingerprint(model_dir), "opset": opset, "exporter": exporter}
    meta_path = out / META_NAME
    if not force and meta_path.is_file() and (out / ONNX_NAME).is_file():
        old = json.loads(meta_path.read_text())
        if all(old.get(k) == v for k, v in meta.items()):
            return out / ONNX_NAME
    if model is None or tokenizer is None:
        model, tokenizer = load_model(model_dir)
    names = graph_inputs(model, tokenizer)
    example = tokenizer(list(TRACE_TEXTS), padding=True, return_tensors="pt")
    inputs = {n: example[n] for n in names}
    if "attention_mask" in inputs and bool(inputs["attention_mask"].all()):
        inputs["attention_mask"][0, -1] = 0  # the trace must see padding, or the mask path is dropped
    out.mkdir(parents=True, exist_ok=True)
    for stale in (meta_path, *out.glob(ONNX_NAME + "*")):
        stale.unlink(missing_ok=True)
    was_training = model.training
    wrapper = _Logits(model, names).eval()
    try:
        _export(wrapper, tuple(inputs.values()), names, out / ONNX_NAME, opset, exporter)
    finally:
        model.train(was_training)
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta_path.write_text(json.dumps({**meta, "inputs": names, "torch": torch.__version__}, indent=2) + "\n")
    return out / ONNX_NAME


def _export(wrapper: torch.nn.Module, args: tuple[torch.Tensor, ...], names: list[str], path: Path, opset: int,
            exporter: str) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings about Python bools of shapes (masking_utils) and the exporter's deprecation notice:
        # known and harmless here; check_parity tests the graph on other batch sizes and lengths.
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {n: {0: "batch", 1: "sequence"} for n in names}
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["logits"],
                              dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=opset,
                              do_constant_folding=True, dynamo=False)
        else:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["logits"],
                              dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),),
                              opset_version=max(opset, 18), dynamo=True, verbose=False)


def check_parity(model_dir: str | os.PathLike, onnx_path: str | os.PathLike, texts: Sequence[tuple[str, ...]],
                 atol: float = DEFAULT_ATOL, *, batch_sizes: Sequence[int] = (1, 8), max_length: int = 128,
                 model: torch.nn.Module | None = None, tokenizer: Any = None) -> dict[str, Any]:
    """Compare ONNX Runtime logits with PyTorch logits on the same real, dynamically padded batches.

    ``texts`` are cut into batches of each of ``batch_sizes`` (the last batch may be smaller), so the graph is
    run at several batch sizes and padded lengths, with and without padding. ``ok`` is
    ``max_abs_diff <= atol``.

    Tolerance: both sides compute in float32, but with different kernels (oneDNN/MKL vs MLAS GEMMs, ORT's fused
    LayerNorm/GELU/attention, other summation orders): ~1e-7 relative error per op, which grows to ~1e-6..1e-5
    on logits of size ~1-10 after 6-12 layers (measured: ~1e-8..1e-7 on MiniLM-L6 and MPNet-base). ``atol=1e-4``
    leaves 10x headroom over that, while real export bugs (a shape baked into the trace, a dropped attention
    mask, swapped inputs, dropout left on, other weights) move logits by 1e-3..1, even on a tiny random model.
    """
    if model is None or tokenizer is None:
        model, tokenizer = load_model(model_dir)
    session = ort_session(onnx_file(onnx_path))
    names = [i.name for i in session.get_inputs()]
    diffs, agree, lengths, biggest, batches = [], 0, set(), 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for size in batch_sizes:
                for start in range(0, len(texts), size):
                    enc = encode(tokenizer, list(texts[start:start + size]), max_length, names, "np")
                    got = session.run(None, enc)[0]  # the first output: logits (any export's name)
                    ref = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.float().numpy()
                    diffs.append(float(np.abs(got - ref).max()))
                    agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
                    biggest = max(biggest, float(np.abs(ref).max()))
                    lengths.add(int(enc["input_ids"].shape[1]))
                    batches += 1
    finally:
        model.train(was_training)
    if not batches:
        raise ValueError("check_parity needs at least one text")
    examples = len(texts) * len(batch_sizes)
    worst = max(diffs)
    return {"max_abs_diff": worst, "ok": bool(worst <= atol), "atol": atol, "examples": len(texts),
            "batches": batches, "batch_sizes": list(batch_sizes), "seq_lens": sorted(lengths),
            "argmax_agreement": agree / examples, "max_abs_logit": biggest}


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
    """:func:`tmkd.deploy.latency.torch_latency` for an ONNX export (a folder from :func:`export_onnx` or a
    ``.onnx`` file) through ONNX Runtime; ``tokenizer=None`` loads the one saved beside the export."""
    path = onnx_file(onnx_dir)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path.parent)
    session = ort_session(path, threads)
    names = [i.name for i in session.get_inputs()]
    batches = measure_sizes(lambda b: session.run(None, b), lambda b: encode(tokenizer, b, max_length, names, "np"),
                            texts, batch_sizes, warmup, max_batches, min_batches, budget_s)
    used = threads if threads is not None else usable_cpus()  # ORT's default: one thread per usable core
    env = {**timing_environment(used, "onnxruntime"), "rows": len(texts), "max_length": max_length}
    return {"env": env, "batches": batches}
