"""Tokenisation through ``datasets.map`` (batched, fast tokenizers, cached by fingerprint) and padding.

Teachers and students may use different vocabularies, so one dataset can be encoded in several
*views*, one per tokenizer; each view is cached on its own, so adding a teacher never re-encodes
the student's view.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerBase

from tmkd.data.tasks import TaskSpec

SEP = "."  # view/column separator in encoded datasets: "student.input_ids"


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Same fingerprint <=> same token ids for the same text (vocab, normaliser, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Truncation/padding are per-call settings the backend remembers after use: not identity.
        state.pop("truncation", None)
        state.pop("padding", None)
        spec = json.dumps(state, sort_keys=True)
    else:
        spec = repr(sorted(tokenizer.get_vocab().items()))
    extra = repr((type(tokenizer).__name__, tokenizer.padding_side, tokenizer.model_input_names))
    return hashlib.sha256((spec + extra).encode()).hexdigest()[:16]


def encode_view(ds: Dataset, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, max_length: int,
                view: str, desc: str = "") -> Dataset:
    """Encode ``ds`` with one tokenizer; returns only this view's columns, prefixed ``<view>.``."""

    def _encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[c] for c in task.text_columns]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        return {f"{view}{SEP}{k}": v for k, v in enc.items()}

    return ds.map(_encode, batched=True, remove_columns=ds.column_names,
                  desc=desc or f"Tokenizing {view} (max_length={max_length})")


def encode(ds: Dataset, tokenizers: Mapping[str, PreTrainedTokenizerBase], task: TaskSpec, max_length: int,
           split: str = "") -> Dataset:
    """All views side by side, plus ``labels`` and ``row_id``; no ``labels`` for an unlabelled split
    (``task.split_labelled(split)`` false: the train split of a ``train_labelled=false`` task)."""
    if task.split_labelled(split):
        keep = ds.select_columns([task.label_column, "row_id"])
        if task.label_column != "labels":
            keep = keep.rename_column(task.label_column, "labels")
    else:
        keep = ds.select_columns(["row_id"])
    views = [encode_view(ds, tok, task, max_length, name, desc=f"Tokenizing {split} for {name}")
             for name, tok in tokenizers.items()]
    return concatenate_datasets([keep, *views], axis=1)


def view_lengths(ds: Dataset, view: str) -> list[int]:
    """Token counts of one view, for length-grouped batching."""
    return [len(x) for x in ds[f"{view}{SEP}input_ids"]]


class MultiViewCollator:
    """Pads each view with its own tokenizer (dynamic, per batch) into ``batch['inputs'][view]``."""

    def __init__(self, tokenizers: Mapping[str, PreTrainedTokenizerBase], pad_to_multiple_of: int | None = None):
        self.tokenizers = dict(tokenizers)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "row_id": torch.tensor([f["row_id"] for f in features], dtype=torch.long),
            "inputs": {},
        }
        if "labels" in features[0]:  # unlabelled splits have none (see encode)
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        for view, tok in self.tokenizers.items():
            prefix = view + SEP
            rows = [{k[len(prefix):]: v for k, v in f.items() if k.startswith(prefix)} for f in features]
            batch["inputs"][view] = dict(tok.pad(rows, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of))
        return batch
