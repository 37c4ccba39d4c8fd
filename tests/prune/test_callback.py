"""PruneCallback without a Trainer run: binding, the hooks the module asks for, resume keys, the wrapped export.

The contract with the module (``tmkd.modules.base``): ``.model``, ``export_model()``, and configure_optimizers /
training_step asking the trainer's callbacks for ``param_groups`` / ``loss_terms``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from tmkd.data.tasks import get_task
from tmkd.modules.base import FineTuneModule
from tmkd.modules.pruning import PruneCallback
from tmkd.prune import PruningConfig, TmkdPrunedBertForSequenceClassification
from tmkd.prune.config import PruneSettings
from tmkd.prune.regularizer import PruneRegularization

TASK = get_task("synth_pair")


class Holder(pl.LightningModule):
    """The least a module offers pruning: the HF model it trains and its export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def export_model(self) -> nn.Module:
        return self.model


def _callback(**pruning) -> PruneCallback:
    return PruneCallback(PruneSettings(pruning=PruningConfig(block_size=16, **pruning), score_lr=0.05), TASK)


def test_bind_refuses_a_module_without_a_transformer_and_bad_block_sizes(make_model) -> None:
    with pytest.raises(TypeError, match=r"prune needs a transformer to prune: Holder\.model is Linear"):
        _callback().bind(Holder(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="block_size 24 does not divide"):
        PruneCallback(PruneSettings(pruning=PruningConfig(block_size=24)), TASK).bind(Holder(make_model()))


def test_loss_term_only_for_sigmoid_before_the_fill(make_model) -> None:
    topk = _callback()
    module = Holder(make_model())
    topk.attach(module)
    assert topk.loss_terms(module) == {}
    sigmoid = _callback(mask="sigmoid", regularization_weight=3.0, total_steps=10, warmup_steps=0, cooldown_steps=0)
    module = Holder(make_model())
    sigmoid.attach(module)
    [(name, term)] = sigmoid.loss_terms(module).items()
    assert name == "prune_reg" and isinstance(term, PruneRegularization)
    sigmoid.pruner.step(10)
    assert float(term(module, {}).detach()) == pytest.approx(3.0 * float(sigmoid.pruner.soft_density().detach()))
    sigmoid.pruner.fill()
    assert sigmoid.loss_terms(module) == {}


def test_module_gathers_score_group_and_loss_terms_from_callbacks(make_model) -> None:
    """FineTuneModule (any StageModule): the scores leave the decay groups for the callback's group."""
    callback = _callback(mask="sigmoid")
    module = FineTuneModule(make_model(), TASK)
    callback.attach(module)
    module.trainer = SimpleNamespace(callbacks=[callback], estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    groups = [{id(p) for p in g["params"]} for g in optimizer.param_groups]
    scores = {id(p) for p in callback.pruner.score_parameters()}
    assert len(groups) == 3 and groups[2] == scores and not (groups[0] | groups[1]) & scores
    assert (optimizer.param_groups[2]["initial_lr"], optimizer.param_groups[2]["weight_decay"]) == (0.05, 0.0)
    assert set(module.addon_loss_terms()) == {"prune_reg"}


def test_a_filled_state_dict_loads_into_a_fresh_attached_module(make_model, batch) -> None:
    """Resume: the saved keys include the fill's `fixed` masks; a fresh module fills before loading them."""
    first, module = _callback(total_steps=10, warmup_steps=0, cooldown_steps=0), Holder(make_model())
    first.attach(module)
    with torch.no_grad():
        for p in first.pruner.score_parameters():
            p.uniform_(-1, 1)
    first.pruner.step(10)
    first.pruner.fill()
    state = module.state_dict()
    assert any(k.endswith(".fixed") for k in state)

    second, fresh = _callback(total_steps=10, warmup_steps=0, cooldown_steps=0), Holder(make_model(seed=1))
    second.attach(fresh)
    fresh.load_state_dict(state)
    assert second.pruner.filled
    module.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.model(**batch).logits, module.model(**batch).logits)
    assert second.pruner.density_report() == first.pruner.density_report()


def test_export_is_wrapped_to_the_compacted_model(make_model, batch) -> None:
    callback, module = _callback(total_steps=10, warmup_steps=0, cooldown_steps=0), Holder(make_model().eval())
    callback.attach(module)
    callback.attach(module)  # idempotent: wrapped once
    callback.pruner.step(10)
    small = module.export_model()
    assert isinstance(small, TmkdPrunedBertForSequenceClassification)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in callback.dense.parameters())
    with torch.no_grad():
        torch.testing.assert_close(small(**batch).logits, module.model(**batch).logits, atol=1e-5, rtol=0)
