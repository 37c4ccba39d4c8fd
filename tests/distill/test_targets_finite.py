"""Non-finite soft targets (a diverged teacher) are refused before they are cached, naming teacher and split."""

from __future__ import annotations

import pytest
import torch

from tmkd.data import STUDENT, TaskDataModule, get_task
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.distill.targets import SoftTargetStore, row_prints
from tmkd.finite import NonFiniteError
from tmkd.models import ModelSpec, build_classifier

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _store(tmp_path, diverged: bool):
    task = get_task("synth_pair")
    torch.manual_seed(0)
    model, tokenizer = build_classifier(ModelSpec(tiny=TINY, tokenizer="synthetic"), task)
    if diverged:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    ensemble = TeacherEnsemble([Teacher("tiny_s1", model, tokenizer)], task)
    ensemble.assign_views(STUDENT, tokenizer)
    dm = TaskDataModule(task, {STUDENT: tokenizer}, max_train_samples=40)
    dm.setup()
    return SoftTargetStore(ensemble, task, task.max_length, tmp_path / "cache", batch_size=16), dm.raw["train"]


def test_a_diverged_teacher_stops_before_its_targets_are_cached(tmp_path):
    store, ds = _store(tmp_path, diverged=True)
    with pytest.raises(NonFiniteError, match=r"teacher 'tiny_s1'.*synth_pair/train.*100\.0%"):
        store.split_logits(ds, "train")
    assert not list((tmp_path / "cache").glob("*.pt"))


def test_non_finite_targets_already_in_the_cache_are_recomputed(tmp_path):
    store, ds = _store(tmp_path, diverged=False)
    good = store.split_logits(ds, "train")
    key = store.key(0, row_prints(ds, store.task)[1])
    store.cache.save(key, torch.full_like(good[:, 0], float("nan")))  # what an older version cached
    again = store.split_logits(ds, "train")
    assert torch.equal(again, good) and store.misses == 2
