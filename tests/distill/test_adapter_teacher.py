"""A saved hidden-state adapter as a teacher: detected from its folder, frozen encoder + adapter in the ensemble."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from _helpers import tiny_encoder

from tmkd.data import STUDENT, get_task, load_splits
from tmkd.data.qa import FILL
from tmkd.distill.ensemble import Teacher
from tmkd.distill.targets import SoftTargetStore
from tmkd.features import FrozenEncoder
from tmkd.models import ModelSpec, build_classifier
from tmkd.models.adapter import AdapterClassifier, AdapterConfig, AdapterWithEncoder, HiddenStateAdapter, save_adapter
from tmkd.models.adapter_teacher import AdapterForSequenceClassification, find_adapter_export
from tmkd.models.tokenizers import synthetic_tokenizer
from tmkd.pipeline.distill_factory import build_teachers

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def task():
    return get_task("synth_pair")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    tok = synthetic_tokenizer()
    out = tmp_path_factory.mktemp("encoder")
    tiny_encoder(tok, seed=1).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def export_adapter(encoder_dir: Path, out: Path, task, seed: int = 2, output: str = "classification",
                   id2label: dict[int, str] | None = None, record_encoder: bool = True) -> Path:
    """An adapter (non-uniform layer mix) on the saved tiny encoder, exported as a run's ``hf/`` folder would be."""
    from transformers import AutoModel

    encoder = FrozenEncoder(AutoModel.from_pretrained(encoder_dir))
    torch.manual_seed(seed)
    adapter = HiddenStateAdapter(AdapterConfig.for_encoder(encoder, output=output, pooling="mean"))
    with torch.no_grad():
        adapter.layer_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    return save_adapter(adapter, str(encoder_dir), out, id2label=task.id2label if id2label is None else id2label,
                        max_length=task.max_length, encoder_fingerprint=encoder.fingerprint() if record_encoder
                        else None)


@pytest.fixture(scope="module")
def adapter_run(encoder_dir, task, tmp_path_factory) -> Path:
    """A folder shaped like an adapter run: the export under ``hf/`` (what the planner points a teacher at)."""
    run = tmp_path_factory.mktemp("adapter_run")
    export_adapter(encoder_dir, run / "hf", task)
    return run


@pytest.fixture(scope="module")
def val(task):
    return load_splits(task, max_train_samples=50, max_eval_samples=40)["validation"]


def pairs_of(ds) -> list[tuple[str, str]]:
    return list(zip(ds["sentence1"], ds["sentence2"], strict=True))


def test_adapter_run_as_teacher_gives_the_predictors_logits(task, adapter_run, val):
    assert find_adapter_export(adapter_run) == adapter_run / "hf" == find_adapter_export(adapter_run / "hf")
    ens = build_teachers([{"name": "cheap", "weight": 0.5, "name_or_path": str(adapter_run)}], task)
    teacher = ens.teachers[0]
    assert isinstance(teacher.model, AdapterForSequenceClassification) and teacher.weight == 0.5
    assert "adapter" in teacher.source and str(adapter_run / "hf") in teacher.source
    assert teacher.model.config.num_labels == task.num_labels
    assert not any(p.requires_grad for p in teacher.model.parameters())

    ens.assign_views(STUDENT, synthetic_tokenizer())  # the adapter's tokenizer is the student's: shared view
    assert teacher.view == STUDENT
    pairs = pairs_of(val)
    enc = teacher.tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True,
                            max_length=task.max_length, padding=True, return_tensors="pt")
    got = ens.logits({STUDENT: dict(enc)})
    assert got.shape == (1, len(pairs), task.num_labels)

    predictor = AdapterClassifier.from_pretrained(adapter_run / "hf")
    torch.testing.assert_close(got[0], predictor.logits(pairs, batch_size=16), atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # and the module it was built from (encoder + adapter on the same inputs)
        direct = AdapterWithEncoder(predictor.model.encoder, predictor.model.adapter)(**enc).logits
    torch.testing.assert_close(got[0], direct)
    with pytest.raises(ValueError, match="no hidden states"):
        ens.hidden_states(0, dict(enc))


def test_adapter_mixes_with_a_hf_teacher_in_soft_targets(task, adapter_run, val, tmp_path):
    model, tok = build_classifier(ModelSpec(tiny=TINY, tokenizer="synthetic:7"), task)  # another vocabulary
    model.save_pretrained(tmp_path / "hf_teacher")
    tok.save_pretrained(tmp_path / "hf_teacher")
    ens = build_teachers([{"name": "hf", "name_or_path": str(tmp_path / "hf_teacher")},
                          {"name": "cheap", "weight": 0.5, "name_or_path": str(adapter_run)}], task)
    extra = ens.assign_views(STUDENT, synthetic_tokenizer())
    assert list(extra) == ["teacher_hf"] and ens.teachers[1].view == STUDENT
    assert ens.weights == [1.0, 0.5]

    store = SoftTargetStore(ens, task, task.max_length, tmp_path / "cache")
    targets = store.split_logits(val, "validation")
    assert targets.shape == (len(val), 2, task.num_labels) and store.misses == 2
    expected = AdapterClassifier.from_pretrained(adapter_run / "hf").logits(pairs_of(val))
    torch.testing.assert_close(targets[:, 1], expected, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        enc = tok(list(val["sentence1"]), list(val["sentence2"]), truncation=True, max_length=task.max_length,
                  padding=True, return_tensors="pt")
        torch.testing.assert_close(targets[:, 0], model.eval()(**enc).logits, atol=1e-4, rtol=1e-4)

    again = SoftTargetStore(build_teachers([{"name": "hf", "name_or_path": str(tmp_path / "hf_teacher")},
                                            {"name": "cheap", "name_or_path": str(adapter_run)}], task),
                            task, task.max_length, tmp_path / "cache")
    again.ensemble.assign_views(STUDENT, synthetic_tokenizer())
    assert torch.equal(again.split_logits(val, "validation"), targets) and again.hits == 2 and again.misses == 0


def test_fingerprint_covers_adapter_and_encoder_weights(task, encoder_dir, adapter_run, tmp_path):
    def fingerprint(path: Path) -> str:
        ens = build_teachers([{"name": "a", "name_or_path": str(path)}], task)
        t = ens.teachers[0]
        return Teacher("fresh", t.model, t.tokenizer).fingerprint  # computed here, not cached on the object

    base = fingerprint(adapter_run)
    assert fingerprint(adapter_run / "hf") == base  # same weights, same key, whichever folder names them
    other_adapter = export_adapter(encoder_dir, tmp_path / "other_adapter", task, seed=3)
    assert fingerprint(other_adapter) != base

    # same adapter weights on another encoder (nothing recorded, so loading allows it): another key too
    other_dir = tmp_path / "other_encoder"
    tok = synthetic_tokenizer()
    tiny_encoder(tok, seed=8).save_pretrained(other_dir)
    tok.save_pretrained(other_dir)
    moved = export_adapter(encoder_dir, tmp_path / "moved", task, record_encoder=False)
    config = json.loads((moved / "adapter_config.json").read_text())
    assert fingerprint(moved) == base
    config["encoder"] = str(other_dir)
    (moved / "adapter_config.json").write_text(json.dumps(config))
    assert fingerprint(moved) != base


def test_bad_folders_and_misfits_fail_clearly(task, encoder_dir, adapter_run, tmp_path):
    empty = tmp_path / "neither"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a model")
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty)) + ".*neither a HF model.*nor a saved tmkd"):
        build_teachers([{"name": "bad", "name_or_path": str(empty)}], task)
    peft = tmp_path / "peft"
    peft.mkdir()
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))  # another library's adapter
    with pytest.raises(FileNotFoundError, match=re.escape(str(peft))):
        build_teachers([{"name": "bad", "name_or_path": str(peft)}], task)
    with pytest.raises(ValueError, match=r"saved adapter; \['layers'\]"):
        build_teachers([{"name": "cut", "name_or_path": str(adapter_run), "layers": [0]}], task)
    relabelled = export_adapter(encoder_dir, tmp_path / "relabelled", task, id2label={0: "yes", 1: "no"})
    with pytest.raises(ValueError, match="label space mismatch"):
        build_teachers([{"name": "t", "name_or_path": str(relabelled)}], task)
    with pytest.raises(ValueError, match="classification adapter; task 'synth_qa'"):
        build_teachers([{"name": "t", "name_or_path": str(adapter_run)}], get_task("synth_qa"))


def test_span_adapter_is_a_qa_teacher(encoder_dir, tmp_path):
    qa_task = get_task("synth_qa")
    export = export_adapter(encoder_dir, tmp_path / "spans", qa_task, output="spans", id2label={})
    ens = build_teachers([{"name": "spans", "name_or_path": str(export)}], qa_task)
    teacher = ens.teachers[0]
    assert type(teacher.model).__name__ == "AdapterForQuestionAnswering"
    assert teacher.tokenizer.model_max_length <= 512  # capped to the encoder's positions
    enc = teacher.tokenizer(["bakan", "dolis kimer"], ["bakan dolis kimer sutar", "kimer"], padding=True,
                            return_tensors="pt")
    logits = ens.teacher_logits(0, dict(enc))
    assert logits.shape == (2, 2, enc["input_ids"].shape[1])
    assert (logits[1][:, enc["attention_mask"][1] == 0] == FILL).all()
    with pytest.raises(ValueError, match="spans adapter; task 'synth_pair'"):
        build_teachers([{"name": "spans", "name_or_path": str(export)}], get_task("synth_pair"))


def test_rte_with_adapter_plans_the_adapter_run_as_a_teacher():
    from tmkd.cli import prepare_argv
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import build_plan

    overrides = prepare_argv(["experiment=m_o_1_rte", "teachers=rte_with_adapter"])
    plan = build_plan(compose_run(overrides), overrides)
    cheap = plan.runs["adapter_minilm"]
    assert cheap.role == "teacher" and cheap.experiment == "adapter_head_rte"
    assert cheap.config["method"] == "adapter"
    main = plan.runs[plan.final]
    assert main.needs == ["minilm_s42", "minilm_s7", "adapter_minilm"]
    teachers = {t["name"]: t for t in main.config["distill"]["teachers"]}
    assert teachers["adapter_minilm"] == {"name": "adapter_minilm", "weight": 0.5, "name_or_path": str(cheap.out_dir)}


def test_an_adapter_is_refused_as_the_hidden_state_teacher(task, adapter_run, tmp_path, compose_cfg):
    from tmkd.pipeline.factory import build_module

    cfg = compose_cfg(["experiment=m_o_1_quick", "distill.hidden.weight=1.0", "distill.hidden.layer_map={1: 2}",
                       f"distill.cache_dir={tmp_path}"])
    cfg.distill.teachers = [{"name": "cheap", "name_or_path": str(adapter_run)}]
    with pytest.raises(ValueError, match="adapter teacher 'cheap': it has no hidden states"):
        build_module(cfg, task)
