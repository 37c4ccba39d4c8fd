"""Small builders shared by several test folders (importable because setup.cfg sets pytest's pythonpath)."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerBase


def tiny_encoder(tok: PreTrainedTokenizerBase, seed: int = 0) -> BertModel:
    """A random 2-layer, 32-wide BERT encoder over ``tok``'s vocabulary (seeded)."""
    torch.manual_seed(seed)
    return BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                vocab_size=len(tok)))
