"""The QNLI study's grid rule (experiments/study/grid.py, PLAN.md step 1): the best held-out accuracy wins, and a
difference under 0.5 points is a tie won by the earlier (simpler, default) point."""

from __future__ import annotations

import pytest


def _points(grid, accuracies):
    points = [grid.kd_point("1", t, a) for t, a in grid.STEP1[: len(accuracies)]]
    for p, acc in zip(points, accuracies, strict=True):
        p.result = {"accuracy": acc}
    return points


@pytest.mark.parametrize(("accuracies", "won"), [
    ([0.80, 0.82, 0.81, 0.79], 1),      # a clear best
    ([0.80, 0.804, 0.79, 0.79], 0),     # 0.4 points better: a tie, the earlier point wins
    ([0.79, 0.80, 0.803, 0.70], 1),     # the earliest within 0.5 points of the best
    ([0.70, 0.70, 0.70, 0.706], 3),     # 0.6 points: not a tie
])
def test_the_winner_is_the_earliest_point_within_half_a_point_of_the_best(grid, accuracies, won):
    points = _points(grid, accuracies)
    assert grid.winner(points) is points[won]


def test_points_set_what_they_say(grid):
    p = grid.kd_point("3", 8.0, 0.9, 4, "confidence")
    assert p.overrides == ["distill.temperature=8.0", "distill.alpha=0.9", "aggregator=confidence",
                           "trainer.max_epochs=4"]
    assert p.experiment == "qnli_study_m_o_1" and "confidence" in p.label
    assert grid.HOLDOUT == ["data.holdout.fraction=0.1", "data.holdout.seed=0"]  # PLAN.md's held-out split
