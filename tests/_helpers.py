"""Small builders shared by several test folders (importable because setup.cfg sets pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerBase

from tmkd.cli import prepare_argv
from tmkd.data.synthetic import generate
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


def write_glue_pair(root: Path, task: str, n_train: int = 40, n_eval: int = 20) -> Path:
    """``<root>/glue/<task>/{train,validation}.parquet`` in the hub's sentence-pair columns (sentence1, sentence2,
    label, idx; RTE, MRPC), in synthetic words (the tiny model's vocabulary); returns ``root`` (a ``data.dir``)."""
    folder = root / "glue" / task
    folder.mkdir(parents=True)
    for split, n, seed in (("train", n_train, 5), ("validation", n_eval, 6)):
        rows = generate(2, n, seed=seed, noise=0.0)
        pd.DataFrame({"sentence1": [r["first"] for r in rows], "sentence2": [r["second"] for r in rows],
                      "label": [r["label"] for r in rows], "idx": range(n)}).to_parquet(folder / f"{split}.parquet")
    return root
