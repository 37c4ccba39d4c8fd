"""The DIST term (Huang et al., NeurIPS 2022): its relation losses against hand-computed values, and its knobs."""

from __future__ import annotations

import math

import pytest
import torch

from tmkd.data.kinds import get_kind
from tmkd.distill.objective import DISTLoss, Objective, Step, objective_from_distill
from tmkd.pipeline.distill_factory import extra_terms

KIND = get_kind("classification")
# Softmax of log(p) at temperature 1 is p itself, so the correlations below are of these probabilities.
P_STUDENT = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.4, 0.4]], dtype=torch.float64)
P_TEACHER = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], dtype=torch.float64)
# Inter-class (per row, values centred on 1/3, in 30ths): row 0 (5, -1, -4) . (8, -1, -7) = 69 over
# sqrt(42 * 114); row 1 (-4, 2, 2) . (-7, -4, 11) = 42 over sqrt(24 * 186).
INTER = 1 - (69 / math.sqrt(42 * 114) + 42 / math.sqrt(24 * 186)) / 2
# Intra-class (per column, two examples): each centred column is (+d, -d), so its correlation is the sign of the
# product of the two differences: column 0 (0.3, 0.5) +1, column 1 (-0.1, 0.1) -1, column 2 (-0.2, -0.6) +1.
INTRA = 1 - (1 - 1 + 1) / 3
# The correlations carry DIST's 1e-8 in their denominators (products of norms down to 0.005 here): relative 1e-5.


class _Ensemble:
    weights = (1.0,)


def _dist(**options) -> DISTLoss:
    term = DISTLoss(**options)
    term.bind(torch.nn.Linear(1, 1), _Ensemble())  # type: ignore[arg-type]
    return term


def _step(per_head: bool = False) -> Step:
    logits = torch.stack([P_STUDENT.log(), P_TEACHER.log()]) if per_head else P_STUDENT.log()
    teachers = torch.stack([P_TEACHER.log(), P_STUDENT.log()]) if per_head else P_TEACHER.log()[None]
    return Step(KIND, logits, None, teachers, per_head=per_head)


def test_dist_is_beta_inter_plus_gamma_intra_as_computed_by_hand():
    assert _dist()(_step()).item() == pytest.approx(INTER + INTRA, rel=1e-5)
    assert _dist(beta=2.0, gamma=0.5)(_step()).item() == pytest.approx(2 * INTER + 0.5 * INTRA, rel=1e-5)
    assert _dist(beta=1.0, gamma=0.0)(_step()).item() == pytest.approx(INTER, rel=1e-5)


def test_beta_gamma_and_temperature_change_the_loss():
    base = _dist()(_step()).item()
    assert _dist(beta=3.0)(_step()).item() != pytest.approx(base)
    assert _dist(gamma=3.0)(_step()).item() != pytest.approx(base)
    assert _dist(temperature=2.0)(_step()).item() != pytest.approx(base)


def test_a_student_equal_to_its_teacher_has_no_loss():
    same = Step(KIND, P_TEACHER.log(), None, P_TEACHER.log()[None])
    assert _dist()(same).item() == pytest.approx(0.0, abs=1e-5)


def test_per_head_each_head_follows_its_own_teacher():
    """m-o-m: head 0 learns teacher 0 (the hand-computed pair), head 1 teacher 1 (the pair swapped: correlation is
    symmetric), and the term is their mean."""
    assert _dist()(_step(per_head=True)).item() == pytest.approx(INTER + INTRA, rel=1e-5)


def test_dist_joins_the_objective_and_gets_its_options_from_the_config(compose_cfg):
    cfg = compose_cfg(["experiment=m_o_1_quick", "+objective=dist", "objective.terms.dist.gamma=2",
                       "aggregator=confidence"])
    (term,) = extra_terms(cfg)
    assert isinstance(term, DISTLoss) and (term.weight, term.beta, term.gamma, term.temperature) == (1, 1, 2, 1)
    assert type(term.aggregator).__name__ == "ConfidenceAggregator"  # the stage's aggregator, as for `kd`
    objective = objective_from_distill(alpha=0.5, temperature=2.0, loss="kl", labelled=True, extra=[term])
    assert objective.names() == ["kd", "ce", "dist"]


def test_bad_dist_settings_fail_clearly():
    with pytest.raises(ValueError, match=r"beta and gamma must be >= 0 and not both 0, got beta=-1"):
        DISTLoss(beta=-1.0)
    with pytest.raises(ValueError, match=r"beta and gamma must be >= 0 and not both 0"):
        DISTLoss(beta=0.0, gamma=0.0)
    with pytest.raises(ValueError, match=r"'dist': temperature must be positive, got 0"):
        DISTLoss(temperature=0.0)
    qa = Step(get_kind("qa"), torch.zeros(2, 2, 5), None, torch.zeros(1, 2, 2, 5))
    with pytest.raises(ValueError, match=r"\[batch, classes\] distributions, got student logits of shape \(2, 2, 5\)"):
        _dist()(qa)
    with pytest.raises(ValueError, match=r"term 'dist' cannot train.*aggregator=best"):
        Objective([DISTLoss(aggregator="best")]).check_label_free("qnli")
