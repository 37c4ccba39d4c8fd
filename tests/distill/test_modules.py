"""Distillation modules end to end on the synthetic task: cache behaviour, the three modules, transfer."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from transformers import AutoModelForSequenceClassification

from tmkd.data import STUDENT, TaskDataModule, get_task, load_splits
from tmkd.distill.aggregators import build_aggregator
from tmkd.distill.ensemble import Teacher, TeacherEnsemble, tokenizer_fingerprint
from tmkd.distill.targets import SoftTargetStore
from tmkd.models import ModelSpec, build_classifier
from tmkd.models.tokenizers import synthetic_tokenizer
from tmkd.modules import FineTuneModule, OptimConfig
from tmkd.modules.distill import DistillConfig, distillation_module

TEACHER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
           "max_position_embeddings": 64}
STUDENT_TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                "max_position_embeddings": 64}


def OneToOne(*args, **kwargs):  # the methods, as the tests name them
    return distillation_module(*args, exact_teachers=1, **kwargs)


def ManyToOne(*args, **kwargs):
    return distillation_module(*args, **kwargs)


def ManyToMany(*args, **kwargs):
    return distillation_module(*args, per_teacher_heads=True, **kwargs)


def _trainer(epochs: int, limit: int | None = None) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_train_batches=limit, limit_val_batches=limit)


@pytest.fixture(scope="module")
def task():
    return get_task("synth_pair")


@pytest.fixture(scope="module")
def teachers(task, tmp_path_factory) -> list[Path]:
    """Two tiny fine-tuned teachers, the second with a permuted vocabulary (its own tokenizer)."""
    paths = []
    for seed, tok in ((1, "synthetic"), (2, "synthetic:7")):
        pl.seed_everything(seed)
        model, tokenizer = build_classifier(ModelSpec(tiny=TEACHER, tokenizer=tok), task)
        dm = TaskDataModule(task, {STUDENT: tokenizer}, batch_size=32)
        _trainer(6).fit(FineTuneModule(model, task, OptimConfig(lr=1e-3, warmup_ratio=0.05)), datamodule=dm)
        out = tmp_path_factory.mktemp(f"teacher{seed}")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        paths.append(out)
    return paths


def _ensemble(task, paths) -> TeacherEnsemble:
    members = []
    for i, p in enumerate(paths):
        model, tok = build_classifier(ModelSpec(name_or_path=str(p)), task)
        members.append(Teacher(f"t{i}", model, tok, 1.0, str(p)))
    return TeacherEnsemble(members, task)


def _distill(cls, task, paths, cache_dir, epochs=2, alpha=0.5, cache=True, aggregator="mean", seed=0, lr=2e-3,
             limit=None):
    """Train a tiny student; ``limit`` caps batches per epoch (for tests that count, not learn)."""
    pl.seed_everything(seed)
    student, tok = build_classifier(ModelSpec(tiny=STUDENT_TINY), task)
    ens = _ensemble(task, paths)
    extra = ens.assign_views(STUDENT, tok)
    cfg = DistillConfig(alpha=alpha, cache=cache, cache_dir=str(cache_dir), temperature=2.0)
    module = cls(student, task, OptimConfig(lr=lr, warmup_ratio=0.05), ens, cfg, build_aggregator(aggregator))
    dm = TaskDataModule(task, {STUDENT: tok, **({} if cache else extra)}, batch_size=32)
    trainer = _trainer(epochs, limit)
    trainer.fit(module, datamodule=dm)
    acc = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/accuracy"]
    return module, ens, acc


def test_teachers_learned_and_use_their_own_tokenizers(task, teachers, tmp_path):
    ens = _ensemble(task, teachers)
    extra = ens.assign_views(STUDENT, synthetic_tokenizer())
    assert ens.teachers[0].view == STUDENT  # same vocabulary as the student: shares its view
    assert list(extra) == [ens.teachers[1].view] != [STUDENT]
    text = "vabos kimul"
    assert ens.teachers[0].tokenizer(text)["input_ids"] != ens.teachers[1].tokenizer(text)["input_ids"]


def test_cache_pays_teacher_forward_once(task, teachers, tmp_path):
    cache = tmp_path / "cache"
    one, ens1, _ = _distill(ManyToOne, task, teachers, cache, epochs=1, limit=3)
    first = ens1.forward_batches
    assert first > 0 and one.teachers.store.misses == 4  # 2 teachers x (train + validation)
    _, ens3, _ = _distill(ManyToOne, task, teachers, tmp_path / "cache3", epochs=3, limit=3)
    assert ens3.forward_batches == first  # more epochs, no more teacher passes
    again, ens_again, _ = _distill(ManyToOne, task, teachers, cache, epochs=2, limit=3)
    assert ens_again.forward_batches == 0 and again.teachers.store.hits == 4  # a second run reads the cache only


def test_online_mode_runs_teachers_every_epoch_and_matches_cache(task, teachers, tmp_path):
    _, ens1, _ = _distill(ManyToOne, task, teachers, tmp_path / "c", epochs=1, cache=False, limit=3)
    _, ens2, _ = _distill(ManyToOne, task, teachers, tmp_path / "c", epochs=2, cache=False, limit=3)
    assert ens2.forward_batches - ens1.forward_batches == 3 * 2  # online: 3 batches x 2 teachers per epoch
    # The online path (batch views) and the cached path (whole split) give the same teacher logits.
    module, ens, _ = _distill(ManyToOne, task, teachers, tmp_path / "d", epochs=1, cache=True, limit=1)
    tok = synthetic_tokenizer()
    extra = ens.assign_views(STUDENT, tok)
    dm = TaskDataModule(task, {STUDENT: tok, **extra}, batch_size=16)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    ens.to("cpu")
    online = ens.logits(batch["inputs"])
    cached = module.teachers.train_targets[batch["row_id"]].transpose(0, 1)
    torch.testing.assert_close(online, cached, atol=1e-4, rtol=1e-4)


def test_cache_invalidates_on_data_and_teacher_change(task, teachers, tmp_path):
    cache = tmp_path / "cache"
    _distill(ManyToOne, task, teachers, cache, epochs=1, limit=1)
    other_data = get_task("synth_pair", synthetic={"seed": 5})
    _, ens, _ = _distill(ManyToOne, other_data, teachers, cache, epochs=1, limit=1)
    assert ens.forward_batches > 0  # new data, new targets
    changed = _ensemble(task, teachers)
    with torch.no_grad():
        next(changed.teachers[0].model.parameters()).add_(0.01)
    store = SoftTargetStore(changed, task, task.max_length, cache)
    changed.assign_views(STUDENT, synthetic_tokenizer())
    raw = load_splits(task)
    store.split_logits(raw["validation"], "validation")
    assert (store.hits, store.misses) == (1, 1)  # the unchanged teacher hits, the changed one recomputes


def test_corrupted_cache_file_is_rebuilt(task, teachers, tmp_path):
    cache = tmp_path / "cache"
    _distill(ManyToOne, task, teachers, cache, epochs=1, limit=1)
    victim = sorted(cache.glob("*.pt"))[0]
    victim.write_bytes(victim.read_bytes()[:50])
    module, ens, _ = _distill(ManyToOne, task, teachers, cache, epochs=1, limit=1)
    assert module.teachers.store.misses == 1 and module.teachers.store.hits == 3 and ens.forward_batches > 0
    assert victim.exists() and victim.stat().st_size > 50


@pytest.mark.parametrize("cls", [OneToOne, ManyToOne, ManyToMany])
def test_modules_train_end_to_end(cls, task, teachers, tmp_path):
    paths = teachers[:1] if cls is OneToOne else teachers
    module, _, acc = _distill(cls, task, paths, tmp_path / "c", epochs=4)
    assert acc > 0.6  # clearly above chance (0.5) on the synthetic pair task
    assert set(module.teachers.teacher_scores) == {f"t{i}" for i in range(len(paths))}


def test_one_to_one_rejects_several_teachers(task, teachers, tmp_path):
    with pytest.raises(ValueError, match="exactly one teacher"):
        _distill(OneToOne, task, teachers, tmp_path / "c", epochs=1, limit=1)


def test_many_to_many_export_is_the_folded_heads(task, teachers, tmp_path):
    module, _, _ = _distill(ManyToMany, task, teachers, tmp_path / "c", epochs=1, limit=5)
    assert len(module.heads) == 2
    assert not torch.allclose(module.heads[0].weight, module.heads[1].weight)  # heads learned different targets
    module.eval()
    inputs = {"input_ids": torch.tensor([[2, 10, 20, 30, 3, 40, 50, 3]]),
              "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    with torch.no_grad():
        predicted = module.predict_logits(inputs)
        exported = module.export_model()
        out = tmp_path / "export"
        exported.save_pretrained(out)
        reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
        torch.testing.assert_close(reloaded(**inputs).logits, predicted, atol=1e-5, rtol=1e-5)


def test_transfer_from_soft_targets_alone(task, teachers, tmp_path):
    """alpha=1: no gold labels at all; the student must still reach most of its teacher's accuracy."""
    module, _, acc = _distill(OneToOne, task, teachers[:1], tmp_path / "c", epochs=8, alpha=1.0)
    teacher_acc = module.teachers.teacher_scores["t0"]["val/accuracy"]
    print(f"transfer: student {acc:.3f} teacher {teacher_acc:.3f}")
    assert teacher_acc > 0.7
    assert acc >= 0.85 * teacher_acc, (acc, teacher_acc)


def test_tokenizer_fingerprint_ignores_per_call_state():
    """Using a tokenizer (truncation/padding set on its backend) must not change cache keys."""
    tok = synthetic_tokenizer()
    before = tokenizer_fingerprint(tok)
    tok(["vabos kimul"], truncation=True, max_length=8, padding="max_length")
    assert tokenizer_fingerprint(tok) == before
    assert tokenizer_fingerprint(synthetic_tokenizer(7)) != before


def test_hidden_state_distillation_trains(task, teachers, tmp_path):
    """Intermediate-layer MSE (student layer 1 -> teacher layer 2, 32 -> 64 wide through a projection)."""
    pl.seed_everything(0)
    student, tok = build_classifier(ModelSpec(tiny=STUDENT_TINY), task)
    ens = _ensemble(task, teachers[:1])
    ens.assign_views(STUDENT, tok)
    cfg = DistillConfig(cache=True, cache_dir=str(tmp_path), hidden_weight=1.0, hidden_layer_map={1: 2})
    module = ManyToOne(student, task, OptimConfig(lr=2e-3), ens, cfg)
    hidden = module.objective.terms[-1]
    assert module.objective.names() == ["kd", "ce", "hidden"]
    projection = next(hidden.parameters()).detach().clone()
    dm = TaskDataModule(task, {STUDENT: tok}, batch_size=32)
    _trainer(1, limit=5).fit(module, datamodule=dm)
    assert not torch.equal(projection, next(hidden.parameters()))  # the projection learns
    assert ens.forward_batches >= 5  # hidden states come from the teacher online, every batch


def test_hidden_state_distillation_needs_shared_tokenizer(task, teachers, tmp_path, compose_cfg):
    from tmkd.pipeline.factory import build_module

    specs = [{"name": "other_vocab", "name_or_path": str(teachers[1])}]
    cfg = compose_cfg(["experiment=m_o_1_quick", "distill.hidden.weight=1.0", "distill.hidden.layer_map={1: 2}",
                       f"distill.cache_dir={tmp_path}"])
    cfg.distill.teachers = specs
    with pytest.raises(ValueError, match="shares the student's tokenizer"):
        build_module(cfg, task)
