"""An adapter is a student of the one training module: ``adapter.distill`` takes its soft targets from the usual
teacher source, served by ``row_id`` for batches of cached features."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from _helpers import tiny_encoder

from tmkd.data import STUDENT, get_task
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.distill.objective import Step, objective_from_distill
from tmkd.distill.targets import SoftTargetStore
from tmkd.features import FeatureStore, FrozenEncoder
from tmkd.features.datamodule import FeatureDataModule
from tmkd.models import ModelSpec, build_classifier
from tmkd.models.adapter import AdapterConfig, HiddenStateAdapter
from tmkd.models.adapter_student import AdapterStudent
from tmkd.modules.adapter import AdapterFacts, adapter_module
from tmkd.modules.base import OptimConfig, StageModule
from tmkd.modules.distill import DistillConfig
from tmkd.modules.teachers import TeacherSource

TEACHER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
           "max_position_embeddings": 64}
MAX_LENGTH = 64


@pytest.fixture
def parts(tok, tmp_path):
    task = get_task("synth_pair")
    encoder = FrozenEncoder(tiny_encoder(tok))
    store = FeatureStore(encoder, tok, task, max_length=MAX_LENGTH, cache_dir=tmp_path / "features")
    adapter = HiddenStateAdapter(AdapterConfig.for_encoder(encoder, num_labels=task.num_labels))
    student = AdapterStudent(adapter, "tiny-encoder", encoder.fingerprint(), tok, dict(task.id2label), MAX_LENGTH)
    members = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model, _ = build_classifier(ModelSpec(tiny=TEACHER), task)
        members.append(Teacher(f"t{seed}", model.eval(), tok))
    ensemble = TeacherEnsemble(members, task)
    ensemble.assign_views(STUDENT, tok)
    dm = FeatureDataModule(task, store, batch_size=16, max_train_samples=64, max_eval_samples=32)
    dm.prepare()
    return task, store, student, ensemble, dm


def test_a_distilling_adapter_is_the_stage_module_with_the_teacher_source(parts, tmp_path):
    task, store, student, ensemble, dm = parts
    config = DistillConfig(alpha=0.3, temperature=2.0)
    module = adapter_module(student, task, OptimConfig(lr=1e-3), store, teachers=ensemble, distill=config,
                            targets_cache_dir=str(tmp_path / "targets"))
    assert type(module) is StageModule and isinstance(module.teachers, TeacherSource)
    assert module.objective.names() == ["kd", "ce"]
    assert module.teachers in module.configure_callbacks()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_train_batches=2)
    trainer.fit(module, datamodule=dm)
    assert {"train/kd", "train/ce"} <= set(trainer.callback_metrics)

    # the train split's targets, served by row_id: a batch in shuffled order gets its own rows' teacher logits
    direct = SoftTargetStore(ensemble, task, MAX_LENGTH, None).split_logits(dm.raw["train"], "train")  # [N, T, C]
    assert module.teachers.train_targets is not None and module.teachers.train_targets.shape == direct.shape
    batch = next(iter(dm.train_dataloader()))
    assert not torch.equal(batch["row_id"], torch.arange(len(batch["row_id"])))  # shuffled: the lookup matters
    served = module.teachers.logits(batch, STUDENT)
    torch.testing.assert_close(served, direct[batch["row_id"]].transpose(0, 1))

    # the training loss is the objective on the student's logits and those targets
    module.eval()  # no dropout: two forward passes agree
    with torch.no_grad():
        loss, _ = module.training_loss(batch)
        logits = student(batch["inputs"][STUDENT]["features"]).logits
        expected, _ = objective_from_distill(alpha=0.3, temperature=2.0, loss="kl", labelled=True,
                                             aggregator="mean")(Step(module.kind, logits, batch["labels"], served))
    torch.testing.assert_close(loss, expected)

    # run facts: the teachers' dev scores (the teacher source's) next to the adapter's own facts (a callback's)
    facts = module.extra_metrics()
    assert set(facts["teachers"]) == {"t1", "t2"} and "val/accuracy" in facts["teachers"]["t1"]
    assert facts["soft_target_cache"] == {"hits": 0, "misses": 4}  # two teachers x (train, validation)
    assert facts["adapter"]["encoder"] == "tiny-encoder" and len(facts["adapter"]["layer_weights"]) == 3
    assert facts["feature_cache"] == {"hits": 0, "misses": 2}
    assert module.export_model() is student  # the adapter student is its own export (the adapter's files)


def test_adapter_module_refuses_what_an_adapter_cannot_do(parts):
    task, store, student, ensemble, _ = parts
    with pytest.raises(ValueError, match="both teachers and a distill config"):
        adapter_module(student, task, None, store, teachers=ensemble)
    with pytest.raises(ValueError, match="no hidden states of its own"):
        adapter_module(student, task, None, store, teachers=ensemble,
                       distill=DistillConfig(hidden_weight=1.0, hidden_layer_map={1: 1}))
    with pytest.raises(ValueError, match="classification"):
        adapter_module(student, get_task("synth_qa"), None, store)
    module = adapter_module(student, task, None, store)  # gold CE alone: no teachers, only the facts callback
    assert module.teachers is None and module.objective.names() == ["ce"]
    assert [type(e) for e in module.extras] == [AdapterFacts]
