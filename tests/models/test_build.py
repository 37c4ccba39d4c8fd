"""build_classifier: labels from the task, label-space checks, run folders, dropout, a real MiniLM student."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import BertConfig, BertModel, MPNetConfig

from tmkd.data import get_task
from tmkd.models import ModelSpec, build_classifier, build_tokenizer
from tmkd.models.build import HF_EXPORT, check_max_length, resolve_path

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}
RTE, MNLI, SST2 = get_task("rte"), get_task("mnli"), get_task("sst2")


def save_tiny(folder, task, tokenizer: str | None = None):
    model, tok = build_classifier(ModelSpec(tiny=TINY, tokenizer=tokenizer), task)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


@pytest.mark.parametrize("task", [RTE, MNLI])
def test_tiny_classifier_takes_labels_from_the_task(task):
    model, tok = build_classifier(ModelSpec(tiny=TINY), task)
    assert model.config.num_labels == task.num_labels
    assert model.config.id2label == task.id2label
    assert model.config.label2id == {name: i for i, name in enumerate(task.label_names)}
    assert model.classifier.out_features == task.num_labels
    assert model.config.vocab_size == len(tok) and model.config.pad_token_id == tok.pad_token_id


def test_tokenizer_choices():
    assert build_tokenizer(ModelSpec(tiny=TINY)).get_vocab() == build_tokenizer(
        ModelSpec(tiny=TINY, tokenizer="synthetic")).get_vocab()
    a = build_tokenizer(ModelSpec(tiny=TINY, tokenizer="synthetic:0"))
    b = build_tokenizer(ModelSpec(tiny=TINY, tokenizer="synthetic:7"))
    assert a.get_vocab() != b.get_vocab() and len(a) == len(b)
    with pytest.raises(ValueError, match="name_or_path or tiny"):
        build_tokenizer(ModelSpec())


def test_spec_errors():
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['num_layer'\]"):
        ModelSpec.from_config({"tiny": TINY, "num_layer": 3})
    spec = ModelSpec.from_config({"name": "t1", "weight": 2.0, "tiny": TINY, "layers": (0, 1)})
    assert spec.layers == [0, 1]
    with pytest.raises(ValueError, match="not both"):
        build_classifier(ModelSpec(tiny=TINY, name_or_path="x"), RTE)
    with pytest.raises(ValueError, match="name_or_path or tiny"):
        build_classifier(ModelSpec(tokenizer="synthetic"), RTE)


def test_finetuned_checkpoint_with_other_labels_is_an_error_naming_both(tmp_path):
    save_tiny(tmp_path / "sst2", SST2)
    with pytest.raises(ValueError) as info:
        build_classifier(ModelSpec(name_or_path=str(tmp_path / "sst2")), RTE)
    message = str(info.value)
    assert "label space mismatch" in message
    assert "['negative', 'positive']" in message and "['entailment', 'not_entailment']" in message


def test_same_labels_in_another_order_are_an_error(tmp_path):
    save_tiny(tmp_path / "swapped", dataclasses.replace(RTE, label_names=("not_entailment", "entailment")))
    with pytest.raises(ValueError, match="order must match"):
        build_classifier(ModelSpec(name_or_path=str(tmp_path / "swapped")), RTE)


def test_checkpoint_with_the_task_labels_reloads_its_head(tmp_path):
    saved = save_tiny(tmp_path / "rte", RTE)
    model, tok = build_classifier(ModelSpec(name_or_path=str(tmp_path / "rte")), RTE)
    assert torch.equal(model.classifier.weight, saved.classifier.weight)
    assert model.config.id2label == RTE.id2label
    assert len(tok) == saved.config.vocab_size  # the folder's own tokenizer


def test_plain_encoder_with_generic_labels_gets_a_new_head(tmp_path):
    tok = build_tokenizer(ModelSpec(tiny=TINY))
    BertModel(BertConfig(vocab_size=len(tok), **TINY)).save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    model, _ = build_classifier(ModelSpec(name_or_path=str(tmp_path / "enc")), MNLI)
    assert model.config.id2label == MNLI.id2label and model.classifier.out_features == 3


def test_run_folder_resolves_to_its_hf_export(tmp_path):
    save_tiny(tmp_path / "run" / HF_EXPORT, RTE)
    assert resolve_path(str(tmp_path / "run")) == str(tmp_path / "run" / HF_EXPORT)
    model, _ = build_classifier(ModelSpec(name_or_path=str(tmp_path / "run")), RTE)
    assert model.config.id2label == RTE.id2label
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        resolve_path(str(tmp_path / "empty"))
    assert resolve_path("some-org/some-model") == "some-org/some-model"  # hub ids pass through


def dropout_rates(model) -> set[float]:
    return {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}


def test_dropout_option_reaches_the_dropout_modules(tmp_path):
    model, _ = build_classifier(ModelSpec(tiny=TINY, dropout=0.0), RTE)
    assert dropout_rates(model) == {0.0}
    assert model.config.hidden_dropout_prob == 0.0 == model.config.attention_probs_dropout_prob
    default, _ = build_classifier(ModelSpec(tiny=TINY), RTE)
    assert dropout_rates(default) == {0.1}
    save_tiny(tmp_path / "rte", RTE)
    reloaded, _ = build_classifier(ModelSpec(name_or_path=str(tmp_path / "rte"), dropout=0.25), RTE)
    assert dropout_rates(reloaded) == {0.25}


def test_minilm_student_cut_to_three_layers(minilm):
    parent, parent_tok = build_classifier(ModelSpec(name_or_path=minilm), RTE)
    student, tok = build_classifier(ModelSpec(name_or_path=minilm, num_layers=3, dropout=0.0), RTE)
    assert parent.config.num_hidden_layers == 6
    assert student.config.num_hidden_layers == 3 and len(student.bert.encoder.layer) == 3
    assert student.config.tmkd_parent_layers == [0, 2, 4]
    assert student.config.id2label == RTE.id2label
    assert tok.get_vocab() == parent_tok.get_vocab() and len(tok) == 30522
    mine = student.bert.encoder.layer[1].state_dict()
    theirs = parent.bert.encoder.layer[2].state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not torch.equal(mine["attention.self.query.weight"],
                           parent.bert.encoder.layer[1].state_dict()["attention.self.query.weight"])
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, parent.bert.embeddings.word_embeddings.weight)
    assert dropout_rates(student) == {0.0} and dropout_rates(parent) == {0.1}
    inputs = tok(["A man is playing."], ["Someone plays."], return_tensors="pt")
    with torch.no_grad():
        assert student.eval()(**inputs).logits.shape == (1, 2)


# --- data.max_length against the positions a model embeds ------------------------------------------------------


def test_max_length_within_a_bert_models_positions_passes_and_beyond_fails_naming_both_numbers():
    config = BertConfig(max_position_embeddings=128)
    check_max_length(config, 128, "model tiny")
    with pytest.raises(ValueError) as err:
        check_max_length(config, 512, "model tiny")
    assert "data.max_length=512" in str(err.value) and "128 token positions model tiny" in str(err.value)


def test_mpnet_reserves_its_padding_offset():
    """MPNet (like RoBERTa) numbers positions from padding_idx + 1: 514 embeddings hold 512 tokens."""
    config = MPNetConfig(max_position_embeddings=514, pad_token_id=1)
    check_max_length(config, 512, "model mpnet")
    with pytest.raises(ValueError, match=r"513 is more than the 512 .*max_position_embeddings=514, 2 reserved"):
        check_max_length(config, 513, "model mpnet")
