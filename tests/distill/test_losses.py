"""KD losses against independently written reference formulas, plus hidden-state distillation."""

import pytest
import torch

from tmkd.distill.aggregators import SoftTarget, build_aggregator
from tmkd.distill.losses import KD_LOSSES, HiddenStateLoss, build_kd_loss


def _reference_kl(student_logits, teacher_probs, temperature):
    """T^2 * mean_b sum_c p (log p - log q), zero-probability classes contributing 0."""
    q = torch.softmax(student_logits / temperature, dim=-1)
    terms = torch.where(teacher_probs > 0, teacher_probs * (teacher_probs.log() - q.log()), 0.0)
    return temperature**2 * terms.sum(-1).mean()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_matches_reference_formula_for_multi_teacher_target(temperature):
    torch.manual_seed(0)
    teachers = torch.randn(3, 6, 5, dtype=torch.float64) * 3
    student = torch.randn(6, 5, dtype=torch.float64) * 3
    target = build_aggregator("mean")(teachers, temperature=temperature)
    loss = build_kd_loss("kl")(student, target, temperature)
    expected = _reference_kl(student, target.probs, temperature)
    torch.testing.assert_close(loss, expected)
    assert loss > 0


def test_kl_handles_teacher_probs_with_exact_zeros():
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    target = SoftTarget(probs=probs, logits=torch.zeros(2, 3), weights=torch.ones(1, 2))
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]], requires_grad=True)
    loss = build_kd_loss("kl")(student, target, 1.0)
    torch.testing.assert_close(loss, _reference_kl(student, probs, 1.0))
    loss.backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 3.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_kl_is_exactly_zero_when_student_equals_single_teacher(temperature, dtype):
    torch.manual_seed(1)
    logits = (torch.randn(16, 7) * 10).to(dtype)
    target = build_aggregator("mean")(logits.unsqueeze(0), temperature=temperature)
    assert build_kd_loss("kl")(logits, target, temperature).item() == 0.0


def test_kl_gradient_is_temperature_scaled_probability_gap():
    # d/dz [T^2 KL(p || softmax(z/T))] averaged over B = T (q - p) / B: the classic Hinton gradient.
    torch.manual_seed(2)
    student = torch.randn(4, 5, requires_grad=True)
    target = build_aggregator("mean")(torch.randn(2, 4, 5), temperature=2.0)
    build_kd_loss("kl")(student, target, 2.0).backward()
    expected = 2.0 * (torch.softmax(student.detach() / 2.0, -1) - target.probs) / 4
    torch.testing.assert_close(student.grad, expected)


def test_mse_matches_reference_on_mixed_logits():
    teachers = torch.tensor([[[1.0, 2.0]], [[3.0, -2.0]]])
    target = build_aggregator("weighted", weights=[3, 1])(teachers)
    student = torch.tensor([[0.0, 1.0]])
    mixed = torch.tensor([[1.5, 1.0]])  # 0.75 * t0 + 0.25 * t1
    loss = build_kd_loss("mse")(student, target, 4.0)
    torch.testing.assert_close(loss, ((student - mixed) ** 2).mean())
    assert build_kd_loss("mse")(mixed, target, 4.0).item() == 0.0


@pytest.mark.parametrize("name", ["kl", "mse"])
def test_losses_reject_shape_mismatch(name):
    target = build_aggregator("mean")(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"student logits shape \(4, 5\) does not match"):
        build_kd_loss(name)(torch.randn(4, 5), target, 1.0)


def test_kd_loss_registry_names_valid_losses_on_typo():
    assert KD_LOSSES.names() == ["kl", "mse"]
    with pytest.raises(KeyError, match="unknown kd loss 'kld'; valid names: kl, mse"):
        build_kd_loss("kld")


def test_objective_alpha_is_validated():
    from tmkd.distill.objective import objective_from_distill

    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match="alpha must be in"):
            objective_from_distill(alpha=alpha, temperature=2.0, loss="kl", labelled=True)


def _hidden(n_layers, batch=2, seq=5, width=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, seq, width, generator=gen) for _ in range(n_layers))


MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def test_hidden_state_loss_zero_for_identical_states_with_identity_projection():
    loss_fn = HiddenStateLoss(8, 8, {0: 0, 2: 4})
    assert isinstance(loss_fn.proj, torch.nn.Identity)
    hidden = _hidden(5)
    student = (hidden[0], hidden[1], hidden[4])
    assert loss_fn(student, hidden, MASK).item() == 0.0


def test_hidden_state_loss_matches_masked_reference_and_ignores_padding():
    loss_fn = HiddenStateLoss(8, 8, {1: 2, 2: 4})
    student, teacher = _hidden(3, seed=1), _hidden(5, seed=2)
    loss = loss_fn(student, teacher, MASK)
    keep = MASK.bool().unsqueeze(-1)
    per_layer = [
        ((s - t) ** 2 * keep).sum() / (keep.sum() * 8)
        for s, t in [(student[1], teacher[2]), (student[2], teacher[4])]
    ]
    torch.testing.assert_close(loss, torch.stack(per_layer).mean())

    # Garbage (even nan) in padded positions must not change the loss.
    noisy_student = tuple(h.clone() for h in student)
    noisy_teacher = tuple(h.clone() for h in teacher)
    for h in (*noisy_student, *noisy_teacher):
        h[0, 3:] = float("nan")
    torch.testing.assert_close(loss_fn(noisy_student, noisy_teacher, MASK), loss)


def test_hidden_state_loss_projects_narrow_student_and_trains_projection():
    loss_fn = HiddenStateLoss(4, 8, {"1": "3"})  # string keys, as a config may deliver them
    assert isinstance(loss_fn.proj, torch.nn.Linear)
    assert loss_fn.layer_map == {1: 3}
    student, teacher = _hidden(2, width=4, seed=3), _hidden(4, width=8, seed=4)
    loss = loss_fn(student, teacher, MASK)
    loss.backward()
    assert loss > 0 and loss_fn.proj.weight.grad is not None
    assert loss_fn.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("layer_map", "match"),
    [
        ({3: 1}, "student hidden-state index 3 is out of range: 3 hidden states available"),
        ({1: 7}, "teacher hidden-state index 7 is out of range: 5 hidden states available"),
        ({-1: 1}, "student hidden-state index -1 is out of range"),
    ],
)
def test_hidden_state_loss_rejects_out_of_range_layers(layer_map, match):
    with pytest.raises(ValueError, match=match):
        HiddenStateLoss(8, 8, layer_map)(_hidden(3), _hidden(5), MASK)


def test_hidden_state_loss_rejects_empty_map_and_width_mismatch():
    with pytest.raises(ValueError, match="at least one"):
        HiddenStateLoss(8, 8, {})
    with pytest.raises(ValueError, match="do not match the configured widths"):
        HiddenStateLoss(8, 16, {1: 1})(_hidden(2), _hidden(2), MASK)
