"""PruningConfig: validation and the cubic schedule."""

from __future__ import annotations

import itertools

import pytest

from tmkd.prune import PruningConfig


@pytest.mark.parametrize("kwargs", [{"target_density": 0.0}, {"target_density": 1.5}, {"target_density": -0.2},
                                    {"attention_density": 0.0}, {"ffn_density": 1.01}])
def test_density_outside_unit_interval_is_refused(kwargs):
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        PruningConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mask": "magnitude"}, "mask must be one of"),
    ({"block_size": 0}, "block_size must be a positive int"),
    ({"score_init": "uniform"}, "score_init_scale > 0"),
    ({"sigmoid_threshold": 1.0}, "sigmoid_threshold"),
])
def test_other_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruningConfig(**kwargs)


def test_schedule_needs_total_steps_and_room_to_prune():
    with pytest.raises(ValueError, match="total_steps must be set"):
        PruningConfig().densities(0)
    with pytest.raises(ValueError, match="leave no pruning phase"):
        PruningConfig(total_steps=10, warmup_steps=5, cooldown_steps=5).densities(0)


def test_cubic_schedule_warmup_decrease_cooldown():
    cfg = PruningConfig(attention_density=0.4, ffn_density=0.2, total_steps=100, warmup_steps=10, cooldown_steps=20)
    assert cfg.densities(0) == cfg.densities(10) == (1.0, 1.0)
    mid = cfg.densities(45)  # half-way through the 70 pruning steps: 1 - (1 - 0.5)^3 = 7/8 of the way
    assert mid == pytest.approx((1 - 0.6 * 7 / 8, 1 - 0.8 * 7 / 8))
    assert cfg.densities(80) == pytest.approx((0.4, 0.2))
    assert cfg.densities(100) == cfg.densities(500) == pytest.approx((0.4, 0.2))
    attention = [cfg.densities(s)[0] for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(attention))


def test_fractions_resolve_against_total_steps():
    cfg = PruningConfig(total_steps=200, warmup_fraction=0.1, cooldown_fraction=0.25)
    assert cfg.phases() == (200, 20, 50)
    cfg.total_steps = 400  # settable after construction (Lightning knows it only at fit time)
    assert cfg.phases() == (400, 40, 100)
