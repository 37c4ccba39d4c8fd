"""Tiny BERT classifiers (64 wide, 2 layers, 4 heads of 16, FFN 128) with the synthetic tokenizer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import BatchEncoding, BertConfig, BertForSequenceClassification, PreTrainedTokenizerBase

from tmkd.data.synthetic import vocabulary
from tmkd.models.tokenizers import synthetic_tokenizer


@pytest.fixture(scope="session")
def tok() -> PreTrainedTokenizerBase:
    return synthetic_tokenizer()


@pytest.fixture
def tiny_config(tok: PreTrainedTokenizerBase) -> BertConfig:
    return BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                      vocab_size=len(tok), max_position_embeddings=64, num_labels=3,
                      id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})


@pytest.fixture
def make_model(tiny_config: BertConfig) -> Callable[..., torch.nn.Module]:
    def _make(cls: type = BertForSequenceClassification, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = cls(tiny_config)
        with torch.no_grad():  # BERT's zero-init biases would make bias folding untestable
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0.0, 0.1)
        return model

    return _make


@pytest.fixture
def batch(tok: PreTrainedTokenizerBase) -> BatchEncoding:
    """A padded batch: rows of 3, 11 and 6 words."""
    words = vocabulary()
    texts = [" ".join(words[:3]), " ".join(words[10:21]), " ".join(words[40:46])]
    enc = tok(texts, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()
    return enc
