"""compact(): dead heads / FFN units removed, exact outputs, export that loads through Auto classes and pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    pipeline,
)

import tmkd.prune
from tmkd.prune import (
    Pruner,
    PruningConfig,
    TmkdPrunedBertForQuestionAnswering,
    TmkdPrunedBertForSequenceClassification,
    compact,
    encoder_layers,
)

HS = 16  # head size (64 / 4) = block size: one block row (Q/K/V) or block column (output) per head
HIGH = 10.0


def _craft(pruner: Pruner) -> None:
    """Scores that make layer 0 keep head 0 only (head 2: V alive, output dead; head 3: output alive, V dead ->
    a bias fold) and layer 1 keep no head at all (V alive only in head 1, output only in head 0)."""
    with torch.no_grad():
        for layer, (v_cells, o_cells) in enumerate([
            ([(0, 0), (0, 1), (2, 0), (2, 1)], [(0, 0), (1, 0), (0, 3), (1, 3)]),
            ([(1, c) for c in range(4)], [(r, 0) for r in range(4)]),
        ]):
            for name, cells in (("value", v_cells), ("attn_out", o_cells)):
                scores = pruner.attention_masks[layer][name].scores
                scores.uniform_(-1, 1)
                for r, c in cells:
                    scores[r, c] = HIGH


def _pruned(model: torch.nn.Module) -> Pruner:
    cfg = PruningConfig(block_size=HS, attention_density=0.25, ffn_density=0.25, total_steps=10, warmup_steps=0,
                        cooldown_steps=0, score_init="uniform", score_init_scale=1.0)
    pruner = Pruner(model.eval(), cfg).attach()
    _craft(pruner)
    pruner.step(10)
    return pruner


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_compact_matches_masked_model_and_removes_structure(make_model, batch, attn):
    model = make_model()
    model.set_attn_implementation(attn)
    dense_params = _count(model)
    pruner = _pruned(model)
    report = pruner.density_report()
    assert [ld.heads_kept for ld in report.layers] == [1, 0]
    with torch.no_grad():
        masked = model(**batch).logits
        small = compact(model)
        got = small(**batch).logits
    assert type(small) is TmkdPrunedBertForSequenceClassification
    assert small.config._attn_implementation == attn
    torch.testing.assert_close(got, masked, atol=1e-5, rtol=1e-5)
    assert small.config.heads_per_layer == [1, 0]
    assert small.config.intermediate_sizes == [32, 32]
    l0, l1 = small.bert.encoder.layer
    assert l0.attention.self.query.weight.shape == (HS, 64) and l0.attention.output.dense.weight.shape == (64, HS)
    assert l1.attention.self.value.weight.shape == (0, 64) and l1.attention.output.dense.weight.shape == (64, 0)
    assert l0.intermediate.dense.weight.shape == (32, 64) and l0.output.dense.weight.shape == (64, 32)
    removed_head = 3 * (HS * 64 + HS) + 64 * HS
    removed_unit = 64 + 1 + 64
    assert _count(small) == dense_params - (3 + 4) * removed_head - 2 * 96 * removed_unit
    with torch.no_grad():  # the source model is untouched: still masked, same outputs
        assert torch.equal(model(**batch).logits, masked)
    assert pruner.attached


def test_hybrid_filled_export_loads_through_auto_and_pipeline(make_model, batch, tok, tmp_path):
    model = make_model()
    dense_q = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    pruner = _pruned(model)
    pruner.fill()
    with torch.no_grad():
        filled = model(**batch).logits
    small = compact(pruner.finalize())
    # the kept head is dense again, with the latent (here: original) weights
    torch.testing.assert_close(small.bert.encoder.layer[0].attention.self.query.weight, dense_q[:HS], atol=0, rtol=0)
    assert small.config.heads_per_layer == [1, 0]

    small.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "tmkd_pruned_bert" and saved["heads_per_layer"] == [1, 0]
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        names = f.keys()
    assert names and not [k for k in names if "parametrizations" in k or "scores" in k or "fixed" in k]

    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is TmkdPrunedBertForSequenceClassification
    assert _count(loaded) == _count(small)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, filled, atol=1e-5, rtol=1e-5)

    texts = tok.batch_decode(batch["input_ids"], skip_special_tokens=True)
    clf = pipeline("text-classification", model=str(tmp_path), device="cpu")
    for text, pred in zip(texts, clf(texts), strict=True):
        with torch.no_grad():
            logits = model(**tok(text, return_tensors="pt")).logits[0]
        assert pred["label"] == model.config.id2label[int(logits.argmax())]
        assert pred["score"] == pytest.approx(float(logits.softmax(-1).max()), abs=1e-5)


def test_constant_ffn_unit_is_folded_into_the_bias(make_model, batch):
    model = make_model().eval()
    layer = encoder_layers(model)[1]
    with torch.no_grad():
        layer.intermediate.weight[5].zero_()  # unit 5 now outputs act(b1[5]) whatever the input
        layer.output.weight[:, 7].zero_()  # unit 7 outputs nothing
        ref = model(**batch).logits
        small = compact(model)
        torch.testing.assert_close(small(**batch).logits, ref, atol=1e-5, rtol=1e-5)
    assert small.config.intermediate_sizes == [128, 126]
    assert small.config.heads_per_layer == [4, 4]


def test_question_answering(tiny_config, batch, tmp_path):
    tiny_config.num_labels = 2
    torch.manual_seed(0)
    model = BertForQuestionAnswering(tiny_config)
    _pruned(model)
    with torch.no_grad():
        ref = model(**batch)
        small = compact(model)
    assert type(small) is TmkdPrunedBertForQuestionAnswering
    small.save_pretrained(tmp_path)
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path).eval()
    assert type(loaded) is TmkdPrunedBertForQuestionAnswering
    with torch.no_grad():
        out = loaded(**batch)
    torch.testing.assert_close(out.start_logits, ref.start_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.end_logits, ref.end_logits, atol=1e-5, rtol=1e-5)


def test_compacting_twice_is_idempotent(make_model, batch):
    model = make_model()
    _pruned(model)
    with torch.no_grad():
        once = compact(model)
        twice = compact(once)
        torch.testing.assert_close(twice(**batch).logits, once(**batch).logits, atol=0, rtol=0)
    assert twice.config.heads_per_layer == once.config.heads_per_layer
    assert _count(twice) == _count(once)
    # a compacted model (with its 0-head layer) can be pruned again
    again = Pruner(once, PruningConfig(block_size=HS, target_density=0.5, total_steps=2, warmup_steps=0,
                                       cooldown_steps=0)).attach()
    again.step(2)
    assert [ld.heads_total for ld in again.density_report().layers] == [1, 0]
    with torch.no_grad():
        assert compact(once)(**batch).logits.shape == (3, 3)


def test_compact_refuses_models_without_a_pruned_class(tok):
    roberta = RobertaForSequenceClassification(RobertaConfig(vocab_size=len(tok), hidden_size=64,
                                                             num_hidden_layers=1, num_attention_heads=4,
                                                             intermediate_size=128))
    with pytest.raises(TypeError, match="compact\\(\\) supports"):
        compact(roberta)


def test_registration_is_idempotent(tiny_config):
    tmkd.prune.register()
    from transformers import AutoConfig

    config = AutoConfig.for_model("tmkd_pruned_bert", hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                                  heads_per_layer=[2, 0])
    assert config.intermediate_sizes == [config.intermediate_size] * 2
    model = AutoModelForSequenceClassification.from_config(config)
    assert type(model) is TmkdPrunedBertForSequenceClassification
    assert isinstance(model, BertForSequenceClassification)  # reuses BERT's forward and heads
    assert model.bert.encoder.layer[1].attention.self.num_attention_heads == 0
