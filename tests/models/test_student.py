"""Layer-subset students: exact weight copies, even spreading, index checks, save/reload."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tmkd.data import get_task
from tmkd.data.synthetic import vocabulary
from tmkd.models import ModelSpec, build_classifier, select_layers, spread_layers

TINY4 = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
         "max_position_embeddings": 64}
RTE = get_task("rte")
LAYER = "bert.encoder.layer."


@pytest.fixture
def parent():
    torch.manual_seed(0)
    model, tokenizer = build_classifier(ModelSpec(tiny=TINY4), RTE)
    return model.eval(), tokenizer


def split_state(model):
    """(per-layer tensors keyed by (layer, rest), all other tensors keyed by name)."""
    layers, other = {}, {}
    for name, tensor in model.state_dict().items():
        if name.startswith(LAYER):
            idx, rest = name[len(LAYER):].split(".", 1)
            layers[int(idx), rest] = tensor
        else:
            other[name] = tensor
    return layers, other


@pytest.mark.parametrize(("total", "keep", "expected"), [
    (12, 6, [0, 2, 4, 6, 8, 10]), (6, 3, [0, 2, 4]), (4, 4, [0, 1, 2, 3]), (12, 1, [0]), (6, 4, [0, 1, 3, 4]),
])
def test_spread_layers(total, keep, expected):
    assert spread_layers(total, keep) == expected


@pytest.mark.parametrize("keep", [0, 7, -1])
def test_spread_layers_rejects_impossible_counts(keep):
    with pytest.raises(ValueError, match="between 1 and 6"):
        spread_layers(6, keep)


def test_select_layers_copies_the_chosen_layers_exactly(parent):
    model, _ = parent
    parent_layers, parent_other = split_state(model)
    student = select_layers(copy.deepcopy(model), layers=[0, 2, 3])
    student_layers, student_other = split_state(student)
    assert student.config.num_hidden_layers == 3 and len(student.bert.encoder.layer) == 3
    assert student.config.tmkd_parent_layers == [0, 2, 3]
    assert {i for i, _ in student_layers} == {0, 1, 2}
    for (i, rest), tensor in student_layers.items():
        assert torch.equal(tensor, parent_layers[[0, 2, 3][i], rest]), (i, rest)
    assert student_other.keys() == parent_other.keys()  # embeddings, pooler, head: all of them, unchanged
    for name, tensor in student_other.items():
        assert torch.equal(tensor, parent_other[name]), name
    assert any(name.startswith("bert.embeddings.") for name in student_other)


def test_student_forward_matches_the_parent_on_the_shared_prefix(parent):
    model, tokenizer = parent
    w = vocabulary()
    inputs = tokenizer([" ".join(w[:5]), " ".join(w[5:8])], [" ".join(w[8:10]), w[10]], return_tensors="pt",
                       padding=True)
    with torch.no_grad():
        full = model(**inputs, output_hidden_states=True)
        prefix = select_layers(copy.deepcopy(model), layers=[0, 1]).eval()(**inputs, output_hidden_states=True)
        same = select_layers(copy.deepcopy(model), layers=[0, 1, 2, 3]).eval()(**inputs)
        skip = select_layers(copy.deepcopy(model), layers=[1, 3]).eval()(**inputs, output_hidden_states=True)
    assert len(prefix.hidden_states) == 3  # embeddings + 2 layers
    for mine, theirs in zip(prefix.hidden_states, full.hidden_states[:3], strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)
    assert torch.allclose(same.logits, full.logits, atol=1e-6)
    assert torch.allclose(skip.hidden_states[0], full.hidden_states[0])
    assert not torch.allclose(skip.hidden_states[1], full.hidden_states[1], atol=1e-4)  # layer 1, not 0


def test_num_layers_spreads_evenly(parent):
    model, _ = parent
    parent_layers, _ = split_state(model)
    student = select_layers(copy.deepcopy(model), num_layers=2)
    assert student.config.tmkd_parent_layers == [0, 2]
    layers, _ = split_state(student)
    assert all(torch.equal(t, parent_layers[[0, 2][i], rest]) for (i, rest), t in layers.items())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layers": [0, 4]}, r"must be distinct indices in \[0, 3\]"),
    ({"layers": [-1, 2]}, r"\[0, 3\]"),
    ({"layers": [1, 1]}, "distinct"),
    ({"layers": []}, "empty"),
    ({"layers": [0, 1], "num_layers": 3}, "disagree"),
    ({}, "give layers or num_layers"),
    ({"num_layers": 5}, "between 1 and 4"),
])
def test_bad_layer_choices_are_errors(parent, kwargs, match):
    model, _ = parent
    with pytest.raises(ValueError, match=match):
        select_layers(copy.deepcopy(model), **kwargs)
    assert len(model.bert.encoder.layer) == 4


def test_student_built_from_a_folder_and_reloaded(parent, tmp_path):
    model, tokenizer = parent
    model.save_pretrained(tmp_path / "parent")
    tokenizer.save_pretrained(tmp_path / "parent")
    student, _ = build_classifier(ModelSpec(name_or_path=str(tmp_path / "parent"), layers=[0, 2, 3]), RTE)
    parent_layers, parent_other = split_state(model)
    layers, other = split_state(student)
    assert all(torch.equal(t, parent_layers[[0, 2, 3][i], rest]) for (i, rest), t in layers.items())
    assert all(torch.equal(t, parent_other[name]) for name, t in other.items())

    student.save_pretrained(tmp_path / "student")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert again.config.num_hidden_layers == 3 and len(again.bert.encoder.layer) == 3
    assert list(again.config.tmkd_parent_layers) == [0, 2, 3]
    assert all(torch.equal(t, again.state_dict()[n]) for n, t in student.state_dict().items())
