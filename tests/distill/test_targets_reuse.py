"""Rows a teacher has labelled once are not run again: held-out cuts of a labelled train split, partial overlaps,
and the same texts read under another split or task reuse the cached logits, which equal a fresh pass."""

from __future__ import annotations

import pytest
import torch

from tmkd.data import STUDENT, TaskDataModule, get_task
from tmkd.data.holdout import HOLDOUT_SPLIT, Holdout
from tmkd.data.loading import row_fingerprints, split_fingerprint
from tmkd.distill.cache import SoftTargetCache
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.distill.targets import SoftTargetStore
from tmkd.models import ModelSpec, build_classifier

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
TASK = get_task("synth_pair")


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model, tokenizer = build_classifier(ModelSpec(tiny=TINY, tokenizer="synthetic"), TASK)
    ensemble = TeacherEnsemble([Teacher("tiny_s1", model.eval(), tokenizer)], TASK)
    ensemble.assign_views(STUDENT, tokenizer)
    return ensemble, tokenizer


def _splits(tokenizer, holdout: Holdout | None = None, cap: int | None = 120):
    dm = TaskDataModule(TASK, {STUDENT: tokenizer}, max_train_samples=cap, holdout=holdout, seed=0)
    dm.setup()
    return dm.raw


def _store(ensemble, cache_dir) -> SoftTargetStore:
    return SoftTargetStore(ensemble, TASK, TASK.max_length, cache_dir, batch_size=16)


def _fresh(ensemble, ds) -> torch.Tensor:
    return _store(ensemble, None).split_logits(ds, "train")


def test_a_held_out_cut_of_a_labelled_train_split_runs_no_teacher_pass(teacher, tmp_path):
    ensemble, tokenizer = teacher
    full = _splits(tokenizer, cap=None)["train"]  # all 2,000 rows: a cut's rows are all among them
    store = _store(ensemble, tmp_path)
    store.split_logits(full, "train")
    cut = _splits(tokenizer, Holdout(0.1, 0), cap=None)
    for split in ("train", HOLDOUT_SPLIT):
        fresh = _fresh(ensemble, cut[split])
        before = ensemble.forward_batches
        got = store.split_logits(cut[split], split)
        assert ensemble.forward_batches == before  # no teacher pass
        assert torch.allclose(got, fresh, atol=1e-5)
    assert store.misses == 3 and store.hits == 0  # new entries (the cut's splits), filled from the first one


def test_a_partial_overlap_runs_the_teacher_on_the_new_rows_only(teacher, tmp_path):
    ensemble, tokenizer = teacher
    train = _splits(tokenizer)["train"]
    first, second = (train.select(r).remove_columns("row_id").add_column("row_id", list(range(len(r))))
                     for r in (range(0, 64), range(32, 112)))
    store = _store(ensemble, tmp_path)
    store.split_logits(first, "train")
    before = ensemble.forward_batches
    got = store.split_logits(second, "train")
    assert ensemble.forward_batches - before == 3  # the 48 unseen rows, in batches of 16
    assert torch.allclose(got, _fresh(ensemble, second), atol=1e-5)


def test_the_same_texts_under_another_split_name_or_without_labels_hit_one_entry(teacher, tmp_path):
    ensemble, tokenizer = teacher
    dev = _splits(tokenizer)["validation"]
    store = _store(ensemble, tmp_path)
    labelled = store.split_logits(dev, "validation")
    unlabelled = store.split_logits(dev.remove_columns(TASK.label_column), "train")
    assert torch.equal(labelled, unlabelled) and (store.hits, store.misses) == (1, 1)
    assert len(list(tmp_path.glob("*.pt"))) == 1


def test_row_prints_follow_the_texts_only(teacher):
    dev = _splits(teacher[1])["validation"]
    prints = row_fingerprints(dev, TASK)
    texts = set(zip(*(dev[c] for c in TASK.text_columns), strict=True))
    assert len(prints) == len(dev) and len(set(prints)) == len(texts)
    flipped = dev.map(lambda r: {TASK.label_column: 1 - r[TASK.label_column]})
    assert row_fingerprints(flipped, TASK) == prints
    assert split_fingerprint(flipped, TASK, labelled=False) == split_fingerprint(dev, TASK, labelled=False)
    a, b = TASK.text_columns
    swapped = dev.rename_columns({a: b, b: a})
    assert row_fingerprints(swapped, TASK) != prints  # which column a text is in matters


def test_a_damaged_row_index_drops_the_entry_and_a_wrong_one_is_refused(tmp_path):
    cache = SoftTargetCache(tmp_path)
    values, index = torch.randn(5, 2), torch.arange(5, dtype=torch.long)
    path = cache.save("fam-a", values, index=index)
    loaded = cache.load_indexed("fam-a")
    assert loaded is not None and torch.equal(loaded[1], index) and cache.keys("fam-") == ["fam-a"]
    payload = torch.load(path, weights_only=True)
    payload["index"] = torch.arange(1, 6, dtype=torch.long)  # no longer matches its checksum
    torch.save(payload, path)
    assert cache.load_indexed("fam-a") is None and not path.exists()
    with pytest.raises(ValueError, match=r"index must be an int64 tensor of shape \(5,\), got torch.float32"):
        cache.save("fam-b", values, index=torch.zeros(5))
    with pytest.raises(ValueError, match="invalid cache key"):
        cache.keys("../")
