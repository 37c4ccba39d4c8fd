"""Trained models on disk, loaded for inference: a run folder's export, a save_pretrained folder, a hub id or a run's
Lightning ``.ckpt``; what latency measurements, ONNX exports and reports read.

A pruned export (``tmkd_pruned_bert``) loads here like any other model: :mod:`tmkd.models.build` registers it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.utils import logging as hf_logging

from tmkd.models.build import load_ckpt_weights, resolve_path

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def model_folder(name_or_path: str | os.PathLike) -> Path | None:
    """The local folder a model loads from: a run's ``hf/``, a save_pretrained folder, or a hub id's cached
    snapshot (``None`` when not cached)."""
    resolved = resolve_path(str(name_or_path))
    if Path(resolved).is_dir():
        return Path(resolved)
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
