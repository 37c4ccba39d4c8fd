"""BERTVision-style adapter: learns from cached features, shapes for spans, ensembling, save/load predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _helpers import tiny_encoder
from torch.utils.data import DataLoader

from tmkd.data import get_task, load_splits
from tmkd.features import FeatureStore, FrozenEncoder
from tmkd.models.adapter import (
    AdapterClassifier,
    AdapterConfig,
    AdapterWithEncoder,
    HiddenStateAdapter,
    ensemble_logits,
    load_adapter,
    save_adapter,
)


def accuracy(adapter: HiddenStateAdapter, loader: DataLoader) -> float:
    adapter.eval()
    with torch.no_grad():
        hits = sum(int((adapter(b["features"]).argmax(-1) == b["labels"]).sum()) for b in loader)
    return hits / len(loader.dataset)


def test_adapter_learns_the_synthetic_task_from_cached_features(tmp_path, tok):
    # A *random* frozen encoder cannot compute synth_pair's cross-sentence difference, but its mean-pooled
    # states are a bag of words: reading sentence 1 alone, its polarity sum predicts the label well above
    # chance. That is what the adapter must find in the cached features (a pretrained encoder would give more).
    task = get_task("synth_pair")
    splits = load_splits(task, max_train_samples=2000, max_eval_samples=500)
    first_only = task.with_overrides(text_columns=("sentence1",))
    encoder = FrozenEncoder(tiny_encoder(tok))
    store = FeatureStore(encoder, tok, first_only, pooling="mean", cache_dir=tmp_path, batch_size=128)
    train = DataLoader(store.dataset(splits["train"], "train"), batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(store.dataset(splits["validation"], "validation"), batch_size=500)
    passes = encoder.forward_batches

    torch.manual_seed(0)
    adapter = HiddenStateAdapter(AdapterConfig.for_encoder(encoder, projection_size=64, dropout=0.0))
    opt = torch.optim.AdamW(adapter.parameters(), lr=3e-3)
    for _ in range(8):
        adapter.train()
        for batch in train:
            loss = torch.nn.functional.cross_entropy(adapter(batch["features"]), batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()

    majority = max(np.mean(splits["validation"]["label"]), 1 - np.mean(splits["validation"]["label"]))
    acc = accuracy(adapter, val)
    assert acc >= majority + 0.06, f"adapter accuracy {acc:.3f} vs majority class {majority:.3f}"
    assert encoder.forward_batches == passes, "training must read the cache, not run the encoder"
    weights = adapter.layer_weights()
    assert weights is not None and torch.allclose(weights.sum(), torch.tensor(1.0))
    assert not torch.allclose(weights, torch.full_like(weights, 1 / 3)), "the layer mix must be learned"


@pytest.mark.parametrize("combination", ["softmax", "concat"])
@pytest.mark.parametrize("skip", [True, False])
def test_classification_and_span_output_shapes(combination, skip):
    cfg = {"hidden_size": 16, "layers": (0, 2, 3), "projection_size": 8, "combination": combination, "skip": skip}
    clf = HiddenStateAdapter(AdapterConfig(num_labels=3, **cfg))
    assert clf(torch.randn(5, 3, 16)).shape == (5, 3)
    spans = HiddenStateAdapter(AdapterConfig(output="spans", **cfg))
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[1, 5:] = 0
    out = spans(torch.randn(4, 3, 7, 16), mask=mask)
    assert out.shape == (4, 7, 2)
    assert (out[1, 5:] == torch.finfo(out.dtype).min).all() and (out[0] > torch.finfo(out.dtype).min).all()
    with pytest.raises(ValueError, match="layers"):
        spans(torch.randn(4, 3, 16))  # pooled input to a span adapter
    with pytest.raises(ValueError, match="3 layers"):
        clf(torch.randn(5, 2, 16))
    assert (clf.layer_weights() is None) == (combination == "concat")


def test_config_rejects_bad_values():
    for bad in ({"layers": (2, 1)}, {"layers": ()}, {"layers": (1,), "combination": "max"},
                {"layers": (1,), "output": "qa"}, {"layers": (1,), "pooling": "max"}, {"layers": (1,), "dropout": 1.0}):
        with pytest.raises(ValueError):
            AdapterConfig(hidden_size=8, **bad)


def test_span_adapter_trains_on_streamed_states_with_the_encoder_frozen(tok):
    encoder = FrozenEncoder(tiny_encoder(tok), layers=(1, 2))
    adapter = HiddenStateAdapter(AdapterConfig.for_encoder(encoder, output="spans", projection_size=8))
    model = AdapterWithEncoder(encoder, adapter).train()
    assert not encoder.model.training, "the frozen encoder must stay in eval mode (no dropout)"
    enc = tok(["bakan dolis", "bakan"], ["kimer", "dolis kimer sutar"], padding=True, return_tensors="pt")
    out = model(**enc)
    seq = enc["input_ids"].shape[1]
    assert out.start_logits.shape == out.end_logits.shape == (2, seq)
    loss = (torch.nn.functional.cross_entropy(out.start_logits, torch.tensor([1, 2]))
            + torch.nn.functional.cross_entropy(out.end_logits, torch.tensor([2, 3])))
    loss.backward()  # streamed states are no_grad, not inference tensors: backward must work
    assert all(p.grad is not None for p in adapter.parameters() if p.requires_grad)
    assert all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    assert encoder.forward_batches == 1
    with pytest.raises(ValueError, match="expects"):
        AdapterWithEncoder(FrozenEncoder(tiny_encoder(tok)), adapter)  # layers (0, 1, 2) vs (1, 2)


def test_ensemble_is_the_weighted_mean():
    adapter_logits = torch.tensor([[2.0, -1.0], [0.0, 4.0]])
    model_logits = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    assert torch.equal(ensemble_logits(adapter_logits, model_logits, 1.0), adapter_logits)
    assert torch.equal(ensemble_logits(adapter_logits, model_logits, 0.0), model_logits)
    assert torch.allclose(ensemble_logits(adapter_logits, model_logits, 0.25),
                          torch.tensor([[0.5, 0.5], [1.5, 1.0]]))
    with pytest.raises(ValueError):
        ensemble_logits(adapter_logits, model_logits, 1.5)
    with pytest.raises(ValueError):
        ensemble_logits(adapter_logits, model_logits[:1], 0.5)


def test_save_load_round_trip_predicts_like_the_in_memory_module(tmp_path, tok):
    task = get_task("synth_pair")
    val = load_splits(task, max_train_samples=50, max_eval_samples=40)["validation"]
    model = tiny_encoder(tok, seed=1)
    model.save_pretrained(tmp_path / "encoder")
    tok.save_pretrained(tmp_path / "encoder")
    encoder = FrozenEncoder(model)
    torch.manual_seed(2)
    adapter = HiddenStateAdapter(AdapterConfig.for_encoder(encoder, num_labels=2, pooling="mean"))
    with torch.no_grad():  # a non-uniform layer mix, so a lost or reordered weight shows
        adapter.layer_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    in_memory = AdapterWithEncoder(encoder, adapter.eval())
    out = save_adapter(adapter, str(tmp_path / "encoder"), tmp_path / "adapter", id2label=task.id2label,
                       max_length=task.max_length, encoder_fingerprint=encoder.fingerprint())
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["pooling"] == "mean" and saved["encoder"] == str((tmp_path / "encoder").resolve())

    loaded = load_adapter(out)
    assert loaded.adapter.config == adapter.config
    for name, tensor in adapter.state_dict().items():
        assert torch.equal(loaded.adapter.state_dict()[name], tensor), name

    clf = AdapterClassifier.from_pretrained(out)
    pairs = list(zip(val["sentence1"], val["sentence2"], strict=True))
    enc = tok([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=task.max_length,
              padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = in_memory(**enc).logits
    torch.testing.assert_close(clf.logits(pairs, batch_size=16), expected, atol=1e-5, rtol=1e-5)

    preds = clf(pairs)
    assert len(preds) == len(pairs) and set(preds[0]) == {"label", "score"}
    assert [p["label"] for p in preds] == [task.id2label[int(i)] for i in expected.argmax(-1)]
    probs = expected.softmax(-1).max(-1).values
    assert [p["score"] for p in preds] == pytest.approx(probs.tolist(), abs=1e-5)
    single = clf({"text": pairs[0][0], "text_pair": pairs[0][1]})
    assert len(single) == 1 and single[0]["label"] == preds[0]["label"]
    assert single[0]["score"] == pytest.approx(preds[0]["score"], abs=1e-5)
    assert len(clf("bakan dolis")) == 1  # a single text (no pair) also works

    # The cached-feature path and the raw-input path must agree: an adapter trained on the cache serves here.
    store = FeatureStore(encoder, tok, task, pooling="mean", cache_dir=tmp_path / "features")
    feats = torch.from_numpy(np.asarray(store.split_features(val, "validation"), dtype=np.float32))
    with torch.no_grad():
        torch.testing.assert_close(adapter(feats), expected, atol=2e-2, rtol=1e-2)


def test_predictor_refuses_an_encoder_other_than_the_trained_one(tmp_path, tok):
    model = tiny_encoder(tok)
    model.save_pretrained(tmp_path / "encoder")
    tok.save_pretrained(tmp_path / "encoder")
    encoder = FrozenEncoder(model)
    adapter = HiddenStateAdapter(AdapterConfig.for_encoder(encoder))
    save_adapter(adapter, str(tmp_path / "encoder"), tmp_path / "adapter",
                 encoder_fingerprint=FrozenEncoder(tiny_encoder(tok, seed=9)).fingerprint())
    with pytest.raises(ValueError, match="fingerprint"):
        AdapterClassifier.from_pretrained(tmp_path / "adapter")
    clf = AdapterClassifier.from_pretrained(tmp_path / "adapter", check_encoder=False)
    assert clf(["bakan dolis"])[0]["label"] in {"LABEL_0", "LABEL_1"}
