"""Feature cache: computed once and reused, keyed by content, memmapped, faithful to the encoder, self-healing."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import tiny_encoder
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForSequenceClassification

from tmkd.data import TaskSpec, get_task, load_splits
from tmkd.features import CachedFeatureDataset, FeatureCache, FeatureStore, FrozenEncoder, pool_states

BATCH = 32




@pytest.fixture(scope="module")
def task() -> TaskSpec:
    return get_task("synth_pair")


@pytest.fixture(scope="module")
def splits(task: TaskSpec) -> dict[str, Dataset]:
    return dict(load_splits(task, max_train_samples=200, max_eval_samples=60))


def files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_written_once_and_reused_across_loads_and_epochs(tmp_path, tok, task, splits):
    train = splits["train"]
    encoder = FrozenEncoder(tiny_encoder(tok))
    store = FeatureStore(encoder, tok, task, cache_dir=tmp_path, batch_size=BATCH)
    first = store.split_features(train, "train")
    assert first.shape == (len(train), 3, 32) and first.dtype == np.float16
    assert encoder.forward_batches == math.ceil(len(train) / BATCH) and (store.hits, store.misses) == (0, 1)
    assert [n.rsplit(".", 1)[1] for n in files(tmp_path)] == ["json", "npy"], "exactly one pair, no temp files"

    # A second store (another process, in effect) reads the file instead of running the encoder.
    again = FeatureStore(encoder, tok, task, cache_dir=tmp_path, batch_size=BATCH)
    second = again.split_features(train, "train")
    assert (again.hits, again.misses) == (1, 0)
    assert np.array_equal(first, second)

    ds = again.dataset(train, "train")
    passes = encoder.forward_batches
    seen = []
    for _ in range(2):  # two "epochs"
        for batch in DataLoader(ds, batch_size=64, shuffle=True):
            assert batch["features"].shape[1:] == (3, 32) and batch["features"].dtype == torch.float32
            seen.append(batch["row_id"])
    assert encoder.forward_batches == passes, "epochs must not run the encoder"
    assert sorted(torch.cat(seen).tolist()) == sorted(list(range(len(train))) * 2)


def test_features_are_a_read_only_memmap_of_the_cache_file(tmp_path, tok, task, splits):
    store = FeatureStore(FrozenEncoder(tiny_encoder(tok)), tok, task, cache_dir=tmp_path)
    ds = store.dataset(splits["validation"], "validation")
    assert isinstance(ds.features, np.memmap), "features must stay on disk, not be loaded into RAM"
    assert not ds.features.flags.writeable
    (npy,) = tmp_path.glob("*.npy")
    assert Path(ds.features.filename) == npy.resolve()
    meta = json.loads(npy.with_suffix(".json").read_text())
    assert meta["shape"] == [len(splits["validation"]), 3, 32] and meta["dtype"] == "float16"
    assert meta["bytes"] == npy.stat().st_size and len(meta["sha256"]) == 64
    assert meta["parts"]["pooling"] == "cls" and meta["parts"]["layers"] == [0, 1, 2]
    row = ds[7]
    assert torch.equal(row["features"], torch.from_numpy(np.asarray(ds.features[7], dtype=np.float32)))
    assert int(row["labels"]) == splits["validation"]["label"][7] and int(row["row_id"]) == 7


@pytest.mark.parametrize(("pooling", "layers"), [("cls", None), ("mean", (0, 2))])
def test_stored_rows_equal_a_direct_forward_pass_in_original_order(tmp_path, tok, task, splits, pooling, layers):
    ds = splits["validation"]
    model = tiny_encoder(tok, seed=3)
    lengths = [len(tok(a, b)["input_ids"]) for a, b in zip(ds["sentence1"], ds["sentence2"], strict=True)]
    assert list(np.argsort(-np.asarray(lengths), kind="stable")) != list(range(len(ds))), \
        "rows must be unsorted by length, or this test cannot catch a lost row order"
    store = FeatureStore(FrozenEncoder(model, layers=layers), tok, task, pooling=pooling, cache_dir=tmp_path,
                         batch_size=16)
    cached = torch.from_numpy(np.asarray(store.split_features(ds, "validation"), dtype=np.float32))
    wanted = [0, 1, 2] if layers is None else list(layers)
    assert cached.shape == (len(ds), len(wanted), 32)
    with torch.no_grad():
        for i in range(len(ds)):  # one row at a time: no padding at all
            enc = tok(ds["sentence1"][i], ds["sentence2"][i], truncation=True, max_length=task.max_length,
                      return_tensors="pt")
            states = model(**enc, output_hidden_states=True).hidden_states
            stacked = torch.stack([states[j] for j in wanted], dim=1)
            direct = stacked[0, :, 0] if pooling == "cls" else stacked[0].mean(dim=1)
            torch.testing.assert_close(cached[i], direct, atol=2e-3, rtol=2e-3)


def test_pool_states_ignores_padding_on_either_side():
    states = torch.arange(2 * 1 * 4 * 2, dtype=torch.float32).reshape(2, 1, 4, 2)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert torch.equal(pool_states(states, right, "cls"), states[:, :, 0])
    assert torch.equal(pool_states(states, left, "cls"), torch.stack([states[0, :, 1], states[1, :, 2]]))
    assert torch.equal(pool_states(states, right, "mean")[1], states[1, :, :2].mean(dim=1))
    with pytest.raises(ValueError, match="pooling"):
        pool_states(states, right, "max")


def test_key_changes_with_encoder_weights_data_and_settings(tmp_path, tok, task, splits):
    ds = splits["validation"]
    model = tiny_encoder(tok)
    encoder = FrozenEncoder(model)
    store = FeatureStore(encoder, tok, task, cache_dir=tmp_path, batch_size=BATCH)
    before = np.array(store.split_features(ds, "validation"))
    one_pass = encoder.forward_batches

    with torch.no_grad():  # weights changed in place, same objects: must not read the old file
        model.encoder.layer[1].output.dense.bias[0] += 1.0  # not uniform: LayerNorm would undo that
    changed = store.split_features(ds, "validation")
    assert store.misses == 2 and encoder.forward_batches == 2 * one_pass
    assert np.allclose(changed[:, :2], before[:, :2]) and not np.allclose(changed[:, 2], before[:, 2])

    edited = ds.map(lambda r, i: {"sentence1": r["sentence1"] + " bakan" if i == 0 else r["sentence1"]},
                    with_indices=True)
    store.split_features(edited, "validation")
    assert store.misses == 3, "a changed row must not reuse the old split's features"

    for other in (FeatureStore(encoder, tok, task, pooling="mean", cache_dir=tmp_path),
                  FeatureStore(encoder, tok, task, max_length=8, cache_dir=tmp_path),
                  FeatureStore(FrozenEncoder(model, layers=(1, 2)), tok, task, cache_dir=tmp_path)):
        other.split_features(ds, "validation")
        assert (other.hits, other.misses) == (0, 1)
    assert len(list(tmp_path.glob("*.npy"))) == 6

    store.split_features(ds, "validation")  # the current weights' entry is still there
    assert store.hits == 1


def _flip_last_byte(npy: Path) -> None:
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0xFF
    npy.write_bytes(bytes(data))


DAMAGE = {
    "flipped byte": _flip_last_byte,
    "truncated": lambda npy: npy.write_bytes(npy.read_bytes()[:-64]),
    "sidecar missing": lambda npy: npy.with_suffix(".json").unlink(),
    "sidecar garbage": lambda npy: npy.with_suffix(".json").write_text("{not json"),
    "array missing": lambda npy: npy.unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_deleted_and_rebuilt(tmp_path, tok, task, splits, damage, caplog):
    ds = splits["validation"]
    encoder = FrozenEncoder(tiny_encoder(tok))
    store = FeatureStore(encoder, tok, task, cache_dir=tmp_path, batch_size=BATCH)
    good = np.array(store.split_features(ds, "validation"))
    one_pass = encoder.forward_batches
    (npy,) = tmp_path.glob("*.npy")
    DAMAGE[damage](npy)

    with caplog.at_level(logging.WARNING, logger="tmkd.features.cache"):
        rebuilt = store.split_features(ds, "validation")
    assert "damaged" in caplog.text
    assert encoder.forward_batches == 2 * one_pass and store.misses == 2
    assert np.array_equal(rebuilt, good)
    assert len(list(tmp_path.glob("*.npy"))) == 1 and len(list(tmp_path.glob("*.json"))) == 1

    fresh = FeatureStore(encoder, tok, task, cache_dir=tmp_path)
    fresh.split_features(ds, "validation")
    assert fresh.hits == 1, "the rebuilt entry must verify"


def test_span_tasks_are_not_cached(tok, task):
    with pytest.raises(ValueError, match="stream"):
        FeatureStore(FrozenEncoder(tiny_encoder(tok)), tok, task.with_overrides(kind="qa", doc_stride=16))


def test_default_directory_follows_tmkd_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TMKD_CACHE_DIR", str(tmp_path / "c"))
    assert FeatureCache().root == tmp_path / "c" / "features"


def test_dataset_checks_lengths():
    with pytest.raises(ValueError, match="labels"):
        CachedFeatureDataset(np.zeros((3, 2, 4), dtype=np.float16), [0, 1])


def test_a_classifier_is_reduced_to_its_base_encoder(tok):
    torch.manual_seed(0)
    clf = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                   intermediate_size=64, vocab_size=len(tok), num_labels=2))
    clf.train()
    encoder = FrozenEncoder(clf, layers=(-1,))
    assert encoder.model is clf.bert and encoder.layers == (2,)
    encoder.train()
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.parameters())
    enc = tok(["bakan dolis kimer"], return_tensors="pt")
    with torch.no_grad():
        top = clf.bert(**enc).last_hidden_state
    assert torch.equal(encoder.hidden_states(enc), top[:, None])
    with pytest.raises(ValueError, match="layers"):
        FrozenEncoder(clf, layers=(0, 3))


def test_real_encoder_features_match_its_forward_pass(tmp_path, minilm, task, splits):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm)
    ds = splits["validation"].select(range(6))
    store = FeatureStore(FrozenEncoder(model, layers=(0, 6)), tok, task, pooling="mean", cache_dir=tmp_path)
    feats = np.asarray(store.split_features(ds, "validation"), dtype=np.float32)
    assert feats.shape == (6, 2, 384)
    enc = tok(ds["sentence1"][4], ds["sentence2"][4], return_tensors="pt")
    with torch.no_grad():
        states = model(**enc, output_hidden_states=True).hidden_states
    direct = torch.stack([states[0][0].mean(0), states[6][0].mean(0)]).numpy()
    np.testing.assert_allclose(feats[4], direct, atol=1e-2, rtol=1e-2)
