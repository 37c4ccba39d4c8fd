"""What a run leaves behind: HF export, resolved config, metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tmkd.models.build import HF_EXPORT


def export_hf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
    """``save_pretrained`` of model and tokenizer; loads in ``transformers.pipeline('text-classification')``."""
    target = out_dir / HF_EXPORT
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
