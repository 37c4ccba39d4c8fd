"""Aggregators: each strategy's weights on hand-made logits, the mixing, and input validation."""

import pytest
import torch

from tmkd.distill.aggregators import AGGREGATORS, SoftTarget, build_aggregator
from tmkd.registry import Registry

ALL_CONFIGS = [
    ("mean", {}),
    ("weighted", {"weights": [0.5, 0.3, 0.2]}),
    ("confidence", {"measure": "gold"}),
    ("confidence", {"measure": "entropy"}),
    ("best", {}),
    ("agreement", {"sharpness": 5.0}),
]


def test_registry_lists_all_aggregators_and_names_valid_ones_on_typo():
    assert AGGREGATORS.names() == ["agreement", "best", "confidence", "mean", "weighted"]
    assert "mean" in AGGREGATORS and "median" not in AGGREGATORS
    with pytest.raises(KeyError) as info:
        build_aggregator("median")
    message = str(info.value)
    assert "'median'" in message
    assert "agreement, best, confidence, mean, weighted" in message


def test_registry_rejects_duplicate_names_and_builds_with_kwargs():
    reg: Registry[object] = Registry("widget")

    @reg.register("a")
    class A:
        def __init__(self, x: int = 0) -> None:
            self.x = x

    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(A)
    assert reg.build("a", x=3).x == 3
    with pytest.raises(KeyError, match="unknown widget 'b'; valid names: a"):
        reg.get("b")


def test_build_from_yaml_like_config():
    cfg = {"name": "weighted", "weights": [0.5, 0.3, 0.2]}
    agg = build_aggregator(**cfg)
    target = agg(torch.randn(3, 2, 4))
    torch.testing.assert_close(target.weights[:, 0], torch.tensor([0.5, 0.3, 0.2]))


@pytest.mark.parametrize(("name", "kwargs"), ALL_CONFIGS)
def test_identical_teachers_give_that_teachers_softened_probs(name, kwargs):
    z = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    logits = z.expand(3, -1, -1).clone()
    target = build_aggregator(name, **kwargs)(logits, torch.tensor([0, 2]), temperature=2.0)
    assert isinstance(target, SoftTarget)
    torch.testing.assert_close(target.probs, torch.softmax(z / 2.0, dim=-1))
    torch.testing.assert_close(target.logits, z)


@pytest.mark.parametrize(("name", "kwargs"), ALL_CONFIGS)
@pytest.mark.parametrize("with_labels", [True, False])
def test_weights_are_a_distribution_over_teachers(name, kwargs, with_labels):
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 5) * 4
    labels = torch.randint(0, 5, (8,)) if with_labels else None
    target = build_aggregator(name, **kwargs)(logits, labels, temperature=1.5)
    assert target.weights.shape == (3, 8)
    assert (target.weights >= 0).all()
    torch.testing.assert_close(target.weights.sum(0), torch.ones(8))
    torch.testing.assert_close(target.probs.sum(-1), torch.ones(8))
    # The mixes follow from the weights, independently recomputed.
    w = target.weights.unsqueeze(-1)
    torch.testing.assert_close(target.probs, (w * torch.softmax(logits / 1.5, -1)).sum(0))
    torch.testing.assert_close(target.logits, (w * logits).sum(0))


def test_mean_is_plain_average_of_softened_probs():
    logits = torch.tensor([[[4.0, 0.0]], [[0.0, 4.0]]])
    target = build_aggregator("mean")(logits, temperature=4.0)
    p0, p1 = torch.softmax(logits[0] / 4, -1), torch.softmax(logits[1] / 4, -1)
    torch.testing.assert_close(target.probs, (p0 + p1) / 2)
    torch.testing.assert_close(target.weights, torch.full((2, 1), 0.5))


def test_weighted_normalizes_and_respects_given_weights():
    logits = torch.tensor([[[3.0, 0.0]], [[0.0, 3.0]], [[1.0, 1.0]]])
    target = build_aggregator("weighted", weights=[1, 1, 2])(logits)
    torch.testing.assert_close(target.weights[:, 0], torch.tensor([0.25, 0.25, 0.5]))
    expected = sum(w * torch.softmax(logits[t], -1) for t, w in enumerate([0.25, 0.25, 0.5]))
    torch.testing.assert_close(target.probs, expected)


@pytest.mark.parametrize(
    ("weights", "match"),
    [([0.5, -0.1, 0.6], "non-negative"), ([0, 0, 0], "all be zero"), ([], "at least one")],
)
def test_weighted_rejects_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        build_aggregator("weighted", weights=weights)


def test_weighted_rejects_teacher_count_mismatch():
    agg = build_aggregator("weighted", weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="2 weights but got logits from 3 teachers"):
        agg(torch.randn(3, 2, 4))


def test_confidence_gold_favours_teacher_confident_on_gold_label():
    # Example 0 (gold 0): teacher 0 right and sure, teacher 1 sure of the wrong class.
    # Example 1 (gold 1): roles swapped.
    logits = torch.tensor([[[5.0, 0.0], [5.0, 0.0]], [[0.0, 5.0], [0.0, 5.0]]])
    labels = torch.tensor([0, 1])
    target = build_aggregator("confidence", measure="gold")(logits, labels)
    w = target.weights
    assert w[0, 0] > 0.9 and w[1, 1] > 0.9
    p = torch.softmax(logits, -1)
    gold = torch.stack([p[:, 0, 0], p[:, 1, 1]], dim=1)
    torch.testing.assert_close(w, gold / gold.sum(0))


def test_confidence_entropy_favours_peaked_teacher_without_labels():
    logits = torch.tensor([[[6.0, 0.0, 0.0]], [[0.3, 0.0, 0.1]]])
    target = build_aggregator("confidence", measure="entropy")(logits)
    p = torch.softmax(logits, -1)
    neg_entropy = (p * p.log()).sum(-1)
    torch.testing.assert_close(target.weights, torch.softmax(neg_entropy, 0))
    assert target.weights[0, 0] > target.weights[1, 0]


def test_confidence_gold_without_labels_falls_back_to_entropy():
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 5)
    gold = build_aggregator("confidence", measure="gold")(logits, None, 2.0)
    entropy = build_aggregator("confidence", measure="entropy")(logits, None, 2.0)
    torch.testing.assert_close(gold.weights, entropy.weights)


def test_confidence_gold_uniform_when_every_teacher_gives_gold_zero_mass():
    logits = torch.tensor([[[0.0, 200.0]], [[0.0, 300.0]]])  # p(gold=0) underflows to 0 for both
    target = build_aggregator("confidence")(logits, torch.tensor([0]))
    torch.testing.assert_close(target.weights, torch.full((2, 1), 0.5))


def test_confidence_rejects_unknown_measure():
    with pytest.raises(ValueError, match="unknown confidence measure 'margin'"):
        build_aggregator("confidence", measure="margin")


def test_best_picks_teacher_with_highest_gold_probability_per_example():
    logits = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 3.0, 0.0]],  # teacher 0
            [[0.0, 4.0, 0.0], [0.0, 0.0, 5.0], [0.0, 1.0, 0.0]],  # teacher 1
            [[1.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # teacher 2
        ]
    )
    labels = torch.tensor([0, 2, 1])
    target = build_aggregator("best")(logits, labels)
    torch.testing.assert_close(target.weights, torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 0]]))
    expected = torch.stack([torch.softmax(logits[t, b], -1) for b, t in enumerate([0, 1, 0])])
    torch.testing.assert_close(target.probs, expected)
    # Without labels the most peaked teacher wins: teacher 1, teacher 2, teacher 0.
    unlabeled = build_aggregator("best")(logits)
    assert unlabeled.weights.argmax(0).tolist() == [1, 2, 0]


def test_half_precision_logits_are_mixed_in_float32():
    target = build_aggregator("mean")(torch.randn(2, 3, 4).to(torch.bfloat16))
    assert target.probs.dtype == torch.float32


@pytest.mark.parametrize(
    ("logits", "labels", "temperature", "match"),
    [
        (torch.randn(4, 3), None, 1.0, "3-D tensor"),
        (torch.randn(2, 4, 3), torch.tensor([0, 1, 2]), 1.0, r"labels must have shape \[batch\] = \[4\]"),
        (torch.randn(2, 4, 3), torch.tensor([0, 1, 3, 0]), 1.0, r"label value 3 is outside \[0, 3\)"),
        (torch.randn(2, 4, 3), torch.tensor([0, -1, 2, 0]), 1.0, r"label value -1 is outside"),
        (torch.randn(2, 4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]), 1.0, "integer class indices"),
        (torch.randn(2, 4, 3), None, 0.0, "temperature must be > 0"),
        (torch.randint(0, 3, (2, 4, 3)), None, 1.0, "floating point"),
    ],
)
def test_bad_inputs_raise_naming_the_problem(logits, labels, temperature, match):
    with pytest.raises(ValueError, match=match):
        build_aggregator("mean")(logits, labels, temperature)
