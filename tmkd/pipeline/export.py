"""What a run leaves behind: HF export, resolved config, metrics JSON; each written atomically and fsynced (a crash or
a full disk leaves the previous file or none, never a truncated one that later runs would trust)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tmkd.atomic import atomic_dir, atomic_file
from tmkd.models.build import HF_EXPORT


def export_hf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
    """``save_pretrained`` of model and tokenizer; loads in ``transformers.pipeline('text-classification')``."""
    target = out_dir / HF_EXPORT
    with atomic_dir(target) as tmp:  # save_pretrained writes file by file: into a temp folder, renamed when complete
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        handle.write((json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())
