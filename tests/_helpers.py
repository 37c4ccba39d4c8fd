"""Small builders shared by several test folders (importable because setup.cfg sets pytest's pythonpath)."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerBase

from tmkd.cli import prepare_argv
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.plan import Plan, build_plan


def tiny_encoder(tok: PreTrainedTokenizerBase, seed: int = 0) -> BertModel:
    """A random 2-layer, 32-wide BERT encoder over ``tok``'s vocabulary (seeded)."""
    torch.manual_seed(seed)
    return BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                vocab_size=len(tok)))


def plan_for(*args: str) -> Plan:
    """The plan a command line (``experiment=... key=value --flag value``) makes, as ``tmkd.run`` builds it."""
    overrides = prepare_argv(list(args))
    return build_plan(compose_run(overrides), overrides)
