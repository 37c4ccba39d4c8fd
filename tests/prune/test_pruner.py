"""Pruner: masks per schedule, straight-through gradients, soft movement, fill, finalize, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import DistilBertConfig, DistilBertForSequenceClassification, RobertaConfig, RobertaModel

from tmkd.prune import Pruner, PruningConfig, encoder_layers

BLOCK = 16  # 64-wide tiny models: 4x4 blocks per attention matrix, one block row / column per head


def _topk(**kwargs) -> PruningConfig:
    base = {"block_size": BLOCK, "total_steps": 100, "warmup_steps": 10, "cooldown_steps": 20,
            "attention_density": 0.4, "ffn_density": 0.3, "score_init": "uniform", "score_init_scale": 1.0}
    return PruningConfig(**{**base, **kwargs})


def _loss(model, batch):
    labels = torch.tensor([0, 1, 2])
    return nn.functional.cross_entropy(model(**batch).logits, labels)


@pytest.mark.parametrize("step", [0, 10, 30, 45, 70, 80, 100])
def test_measured_density_follows_schedule(make_model, step):
    model = make_model()
    pruner = Pruner(model, _topk()).attach()
    state = pruner.step(step)
    attention, ffn = pruner.config.densities(step)
    assert state == {"attention_density": attention, "ffn_density": ffn}
    if step <= 10:
        assert attention == ffn == 1.0
    if step >= 80:
        assert (attention, ffn) == pytest.approx((0.4, 0.3))
    n_blocks, n_units = (64 // BLOCK) ** 2, 128
    for layer in encoder_layers(model):
        for linear in layer.attention().values():
            kept = float((linear.weight != 0).float().mean())  # the effective (masked) weight itself
            assert abs(kept - attention) <= 1 / n_blocks + 1e-9
        units = float((layer.intermediate.weight != 0).any(1).float().mean())
        assert abs(units - ffn) <= 1 / n_units + 1e-9
        assert torch.equal(layer.intermediate.weight.ne(0).any(1), layer.output.weight.ne(0).any(0))  # one unit
    report = pruner.density_report()
    assert all(abs(ld.attention_density - attention) <= 1 / n_blocks + 1e-9 for ld in report.layers)
    assert all(abs(ld.ffn_density - ffn) <= 1 / n_units + 1e-9 for ld in report.layers)


def test_straight_through_gradient_is_movement(make_model, batch):
    model = make_model()
    pruner = Pruner(model, _topk()).attach()
    pruner.step(45)
    _loss(model, batch).backward()
    layer = encoder_layers(model)[0]
    mask = pruner.attention_masks[0]["value"]
    weight = layer.value.parametrizations.weight.original
    movement = (weight.grad * weight).reshape(4, BLOCK, 4, BLOCK).sum((1, 3))  # dL/dW' * W per block (kept blocks)
    kept = mask.binary_grid().detach().bool()
    assert 0 < kept.sum() < kept.numel()
    assert torch.allclose(mask.scores.grad[kept], movement[kept], atol=1e-7)
    # a pruned block gets no weight gradient, but its score still gets one: it can come back
    assert weight.grad.reshape(4, BLOCK, 4, BLOCK).abs().sum((1, 3))[~kept].eq(0).all()
    assert mask.scores.grad[~kept].abs().max() > 0
    # FFN: one score per unit, fed by the unit's intermediate row and its output column
    rows, _ = pruner.ffn_masks[0]
    w1, w2 = layer.intermediate.parametrizations.weight.original, layer.output.parametrizations.weight.original
    unit = int(torch.nonzero(rows.binary_grid().detach().flatten())[0])
    expected = ((w1.grad[unit] * w1[unit]).sum() + (w2.grad[:, unit] * w2[:, unit]).sum()).detach()
    assert rows.scores.grad[unit] == pytest.approx(float(expected), abs=1e-7)
    assert all(p.grad is not None for p in pruner.score_parameters())


def test_score_parameters_and_groups(make_model):
    model = make_model()
    pruner = Pruner(model, _topk()).attach()
    scores = pruner.score_parameters()
    assert len(scores) == 2 * (4 + 1)  # per layer: Q, K, V, output, one shared FFN vector
    groups = pruner.parameter_groups(lr=1e-3, score_lr=1e-1, weight_decay=0.01)
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {id(p) for p in model.parameters()}
    assert groups[1]["lr"] == 1e-1 and groups[1]["weight_decay"] == 0.0


def _train_sigmoid(make_model, batch, weight: float) -> tuple[float, float]:
    model = make_model()
    cfg = PruningConfig(mask="sigmoid", block_size=BLOCK, total_steps=10, warmup_steps=0, cooldown_steps=5,
                        regularization_weight=weight, sigmoid_threshold=0.1)
    pruner = Pruner(model, cfg).attach()
    # the penalty's gradient per score is ~lambda / 1000 here (each score governs 1/256 or 1/512 of the weights)
    opt = torch.optim.SGD(pruner.score_parameters(), lr=1000.0)
    before = pruner.density_report().overall
    for step in range(10):
        state = pruner.step(step)
        loss = _loss(model, batch) + pruner.regularization_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert state == {"threshold": pytest.approx(0.1), "reg_lambda": pytest.approx(weight)}
    return before, pruner.density_report().overall


def test_sigmoid_regulariser_pushes_density_down(make_model, batch):
    before, with_penalty = _train_sigmoid(make_model, batch, weight=1.0)
    _, without = _train_sigmoid(make_model, batch, weight=0.0)
    assert before == 1.0
    assert with_penalty < 0.7
    assert with_penalty < without - 0.2


def test_regularisation_is_zero_for_topk(make_model):
    pruner = Pruner(make_model(), _topk()).attach()
    pruner.step(50)
    assert float(pruner.regularization_loss()) == 0.0


def test_finalize_bakes_masks_and_removes_scores(make_model, batch):
    model = make_model().eval()
    keys = set(model.state_dict())
    pruner = Pruner(model, _topk()).attach()
    pruner.step(100)
    with torch.no_grad():
        masked = model(**batch).logits
        effective = {n: lin.weight.clone() for n, lin in encoder_layers(model)[1].attention().items()}
    report = pruner.density_report()
    assert pruner.finalize() is model
    assert set(model.state_dict()) == keys  # no parametrizations.*, no scores
    layer = encoder_layers(model)[1]
    assert type(layer.query) is nn.Linear
    assert all(torch.equal(lin.weight, effective[n]) for n, lin in layer.attention().items())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, masked)
    assert pruner.density_report() == report  # now read from the weights' zeros
    with pytest.raises(RuntimeError, match="not attached"):
        pruner.step(1)


def test_fill_restores_live_heads_and_freezes(make_model, batch):
    model = make_model()
    dense = {n: lin.weight.detach().clone() for n, lin in encoder_layers(model)[0].attention().items()}
    pruner = Pruner(model, _topk(attention_density=0.25)).attach()
    pruner.step(100)
    report = pruner.density_report()
    ffn_before = encoder_layers(model)[0].intermediate.weight.detach().clone()
    pruner.fill()
    layer = encoder_layers(model)[0]
    live = [h for h in range(4) if layer.value.weight[h * 16:(h + 1) * 16].ne(0).any()]
    assert len(live) == report.layers[0].heads_kept  # fill keeps exactly the heads the report counted
    for h in range(4):
        rows = slice(h * 16, (h + 1) * 16)
        for name in ("query", "key", "value"):
            got = getattr(layer, name).weight[rows]
            assert torch.equal(got, dense[name][rows]) if h in live else got.eq(0).all()
        got = layer.attn_out.weight[:, rows]
        assert torch.equal(got, dense["attn_out"][:, rows]) if h in live else got.eq(0).all()
    assert torch.equal(layer.intermediate.weight, ffn_before)  # FFN structure unchanged
    assert all(not p.requires_grad for p in pruner.score_parameters())
    pruner.step(0)  # no longer moves the masks
    assert torch.equal(layer.intermediate.weight, ffn_before)
    _loss(model, batch).backward()
    assert all(p.grad is None for p in pruner.score_parameters())


def test_attaching_twice_is_refused(make_model):
    model = make_model()
    pruner = Pruner(model, _topk()).attach()
    with pytest.raises(RuntimeError, match="already attached"):
        pruner.attach()
    with pytest.raises(RuntimeError, match="already has a weight parametrization"):
        Pruner(model, _topk()).attach()


def test_block_size_must_divide(make_model):
    with pytest.raises(ValueError, match="block_size 24 does not divide"):
        Pruner(make_model(), _topk(block_size=24))


def test_not_bert_like_is_refused(tok):
    distil = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=1,
                                                                  n_heads=2, hidden_dim=64))
    with pytest.raises(TypeError, match="not a BERT-like encoder"):
        Pruner(distil, _topk())
    with pytest.raises(TypeError, match="not a BERT-like encoder"):
        Pruner(nn.Sequential(nn.Linear(4, 4)), _topk())


def test_roberta_layout_is_masked(tok):
    roberta = RobertaModel(RobertaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, intermediate_size=128))
    pruner = Pruner(roberta, _topk()).attach()
    pruner.step(100)
    assert pruner.density_report().layers[0].attention_density == pytest.approx(0.4, abs=1 / 16)
