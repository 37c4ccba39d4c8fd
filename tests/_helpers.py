"""Small builders shared by several test folders (importable because setup.cfg sets pytest's pythonpath)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertModel, PreTrainedTokenizerBase

from tmkd.cli import prepare_argv
from tmkd.data.synthetic import generate
from tmkd.pipeline import manifest
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.plan import Plan, build_plan
from tmkd.pipeline.predictions import write_predictions


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


N = 400  # dev examples of a fake run (fake_run: the comparison tests' finished runs)
LABELS = np.random.default_rng(0).integers(0, 2, N)


def fake_run(root: Path, experiment: str, seed: int, accuracy: float, *, lr: float = 1e-3, rows: int = N,
             teacher: Path | str | None = None, name: str = "main", with_predictions: bool = True) -> Path:
    """A finished run folder as the runner leaves it: config.yaml, manifest.json, metrics.json, predictions/."""
    config = {"seed": seed, "experiment_name": experiment, "method": "finetune", "optim": {"lr": lr},
              "paths": {"output_dir": "x"}, "data": {"max_eval_samples": None},
              "distill": {"teachers": [{"name": "t", "name_or_path": str(teacher)}] if teacher else []}}
    folder = root / "runs" / experiment / f"{name}-{manifest.config_hash(config)[:8]}"
    folder.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
    manifest.write(folder, {"name": name, "experiment": experiment, "status": "done"})
    labels = LABELS[:rows]
    correct = np.random.default_rng(seed * 1000 + int(accuracy * 1000)).random(rows) < accuracy
    pred = np.where(correct, labels, 1 - labels)
    metrics = {"experiment": experiment, "best": {"val/accuracy": float(np.mean(pred == labels))}}
    if with_predictions:
        table = {"row": np.arange(rows), "label": labels, "pred": pred,
                 "probs": np.stack([1.0 - pred, pred.astype(float)], axis=1)}
        metrics["predictions"] = write_predictions(folder, {"validation": table}, lambda split: "val")
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder
