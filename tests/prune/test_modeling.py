"""The pruned BERT's attention forwards whatever transformers' BertSelfAttention takes, by the caller's names."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers.models.bert import modeling_bert

from tmkd.prune.modeling import TmkdPrunedBertConfig, TmkdPrunedBertSelfAttention


def _config() -> TmkdPrunedBertConfig:
    return TmkdPrunedBertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                vocab_size=50, heads_per_layer=[2])


def test_arguments_pass_through_whatever_the_parent_calls_them(monkeypatch: pytest.MonkeyPatch):
    """transformers 5.25 renamed BertSelfAttention's third parameter (``past_key_values`` -> ``cache``) and its
    callers pass it by keyword; a subclass that re-passes it positionally fails with "got multiple values". Here
    the parent's signature is replaced by one with a parameter name no release has used."""
    seen: dict[str, Any] = {}

    def parent_forward(self, hidden_states, attention_mask=None, some_future_cache=None, **kwargs):
        seen.update(attention_mask=attention_mask, some_future_cache=some_future_cache, **kwargs)
        return hidden_states[..., : self.all_head_size], None

    monkeypatch.setattr(modeling_bert.BertSelfAttention, "forward", parent_forward)
    attention = TmkdPrunedBertSelfAttention(_config(), num_heads=2)
    hidden, mask = torch.randn(2, 5, 32), torch.zeros(2, 1, 1, 5)
    out, _ = attention(hidden, attention_mask=mask, some_future_cache="cache object", output_attentions=False)
    assert out.shape == (2, 5, 16)
    assert seen["some_future_cache"] == "cache object" and seen["attention_mask"] is mask
    assert seen["output_attentions"] is False


def test_a_layer_without_heads_returns_an_empty_context():
    attention = TmkdPrunedBertSelfAttention(_config(), num_heads=0)
    out, weights = attention(torch.randn(2, 5, 32), attention_mask=None)
    assert out.shape == (2, 5, 0) and weights is None


def test_real_forward_matches_the_installed_transformers():
    """The pass-through runs transformers' own attention (any release in setup.cfg's bounds)."""
    torch.manual_seed(0)
    attention = TmkdPrunedBertSelfAttention(_config(), num_heads=2).eval()
    out, _ = attention(torch.randn(2, 5, 32), attention_mask=None)
    assert out.shape == (2, 5, 16) and torch.isfinite(out).all()
