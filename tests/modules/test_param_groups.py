"""Callbacks add optimiser groups (pruning's scores at their own learning rate) through ``param_groups``."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from tmkd.data import STUDENT, TaskDataModule, get_task
from tmkd.models import ModelSpec, build_classifier
from tmkd.modules import FineTuneModule, OptimConfig

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "max_position_embeddings": 64}


class OwnGroup(pl.Callback):
    """Puts the classifier's weight in a group of its own at another learning rate."""

    def param_groups(self, pl_module: pl.LightningModule) -> list[dict]:
        return [{"params": [pl_module.model.classifier.weight], "lr": 0.5, "weight_decay": 0.0}]


def test_callback_param_groups_join_the_optimiser_and_leave_the_decay_groups():
    task = get_task("synth_pair")
    model, tok = build_classifier(ModelSpec(tiny=TINY), task)
    module = FineTuneModule(model, task, OptimConfig(lr=1e-3))
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[OwnGroup()])
    trainer.fit(module, datamodule=TaskDataModule(task, {STUDENT: tok}, batch_size=8))
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 3 and groups[2]["initial_lr"] == 0.5  # its own rate, scheduled like the rest
    weight = model.classifier.weight
    assert groups[2]["params"] == [weight]
    assert not any(p is weight for g in groups[:2] for p in g["params"])
    assert torch.isfinite(weight).all()
