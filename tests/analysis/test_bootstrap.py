"""The two-level bootstrap: point estimates, intervals, and why seeds must be resampled."""

from __future__ import annotations

import numpy as np
import pytest

from tmkd.analysis.bootstrap import MethodRuns, compare, from_confusion

N = 2000


def runs_from_correct(correct: np.ndarray, labels: np.ndarray, seeds: list[int] | None = None) -> MethodRuns:
    """Binary task: a run predicts the gold label where ``correct`` is true, the other label elsewhere."""
    correct = np.atleast_2d(correct)
    pred = np.where(correct, labels[None, :], 1 - labels[None, :])
    return MethodRuns(seeds or list(range(len(correct))), pred, labels)


def test_a_known_difference_is_the_point_estimate_and_inside_an_interval_that_excludes_zero():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, N)
    base = np.arange(N) < int(0.70 * N)  # right on 70% of examples
    better = np.arange(N) < int(0.80 * N)  # the same examples and 10% more
    methods = {"base": runs_from_correct(np.stack([base] * 3), labels),
               "better": runs_from_correct(np.stack([better] * 3), labels)}
    out = compare(methods, "base", replicates=2000)
    assert out.diff["better"] == pytest.approx(0.10)
    lo, hi = out.interval["better"]
    assert 0 < lo < 0.10 < hi
    assert out.diff["base"] == 0 and out.interval["base"] == (0.0, 0.0)
    assert out.scores["better"].tolist() == pytest.approx([0.80] * 3)


def test_identical_predictions_give_an_interval_of_zero_width_or_symmetric_about_zero():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, N)
    one = rng.random(N) < 0.75
    same = {"a": runs_from_correct(one, labels), "b": runs_from_correct(one, labels)}
    out = compare(same, "a", replicates=1000)
    assert out.diff["b"] == 0 and out.interval["b"] == (0.0, 0.0)  # one seed each: every replicate is paired

    seeds = rng.random((3, N)) < np.array([[0.70], [0.75], [0.80]])
    twins = {"a": runs_from_correct(seeds, labels), "b": runs_from_correct(seeds, labels)}
    lo, hi = compare(twins, "a", replicates=4000).interval["b"]
    assert lo < 0 < hi and abs(lo + hi) < 0.25 * (hi - lo)  # seeds resampled independently: symmetric about 0


def simulate_seeds(rng: np.random.Generator, p_logit: np.ndarray, seeds: int, seed_sd: float) -> np.ndarray:
    """Per-example correctness of ``seeds`` runs of one method: the example's difficulty plus a seed-wide shift
    (a seed makes the whole model better or worse, as seeds 1 and 42 did on QNLI)."""
    shift = rng.normal(0, seed_sd, size=(seeds, 1))
    return rng.random((seeds, len(p_logit))) < 1 / (1 + np.exp(-(p_logit[None, :] + shift)))


def test_methods_that_differ_only_by_seed_noise_are_not_called_different():
    """Same per-example correctness probabilities, different seeds: the two-level interval contains 0, while the
    examples-only bootstrap of a pair of seeds calls the seeds of one method different."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, N)
    p_logit = rng.normal(1.2, 1.5, N)
    a = simulate_seeds(rng, p_logit, 5, seed_sd=0.4)
    b = simulate_seeds(rng, p_logit, 5, seed_sd=0.4)
    methods = {"a": runs_from_correct(a, labels), "b": runs_from_correct(b, labels)}
    lo, hi = compare(methods, "a", replicates=4000).interval["b"]
    assert lo < 0 < hi

    # the most different pair of seeds, compared on examples only (what a paired bootstrap of one run each does)
    acc_a, acc_b = a.mean(1), b.mean(1)
    i, j = int(acc_a.argmin()), int(acc_b.argmax())
    pair = {"a": runs_from_correct(a[i], labels), "b": runs_from_correct(b[j], labels)}
    lo1, hi1 = compare(pair, "a", replicates=4000).interval["b"]
    assert lo1 > 0 or hi1 < 0, "the examples-only interval of two seeds should exclude 0 here"
    # and resample_seeds=False on all seeds is narrower than the two-level interval
    lo2, hi2 = compare(methods, "a", replicates=4000, resample_seeds=False).interval["b"]
    assert hi2 - lo2 < hi - lo


def test_the_two_level_interval_covers_a_null_difference_about_as_often_as_it_says():
    """Over simulated worlds with no true difference, the 95% interval contains 0 most of the time; the
    examples-only interval of one seed per method often does not."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 500)
    two_level = examples_only = 0
    worlds = 20
    for _ in range(worlds):
        p_logit = rng.normal(1.0, 1.5, 500)
        a, b = simulate_seeds(rng, p_logit, 4, 0.5), simulate_seeds(rng, p_logit, 4, 0.5)
        methods = {"a": runs_from_correct(a, labels), "b": runs_from_correct(b, labels)}
        lo, hi = compare(methods, "a", replicates=1000, seed=1).interval["b"]
        two_level += lo <= 0 <= hi
        single = {"a": runs_from_correct(a[0], labels), "b": runs_from_correct(b[0], labels)}
        lo, hi = compare(single, "a", replicates=1000, seed=1).interval["b"]
        examples_only += lo <= 0 <= hi
    assert two_level >= 17
    assert examples_only < two_level


def test_f1_and_mcc_from_confusion_match_sklearn_style_definitions():
    conf = np.array([[5, 1, 0], [2, 3, 1], [0, 1, 7]])
    tp = np.diag(conf)
    f1 = np.mean(2 * tp / (conf.sum(1) + conf.sum(0)))
    assert from_confusion(conf, "accuracy") == pytest.approx(15 / 20)
    assert from_confusion(conf, "f1") == pytest.approx(f1)
    t, p, c, s = conf.sum(1), conf.sum(0), tp.sum(), conf.sum()
    assert from_confusion(conf, "mcc") == pytest.approx((c * s - t @ p) / np.sqrt((s**2 - p @ p) * (s**2 - t @ t)))
    # per-replicate metrics of a 3-class task run through the same path
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 300)
    pred = np.where(rng.random((2, 300)) < 0.7, labels, rng.integers(0, 3, (2, 300)))
    out = compare({"a": MethodRuns([1, 2], pred, labels), "b": MethodRuns([1, 2], pred[::-1], labels)}, "a",
                  metric="f1", replicates=200)
    assert out.diff["b"] == pytest.approx(0)


def test_bad_inputs_are_named():
    labels = np.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="expected \\(seeds=2, examples=4\\)"):
        MethodRuns([1, 2], np.zeros((1, 4)), labels)
    runs = MethodRuns([1], np.zeros((1, 4)), labels)
    with pytest.raises(ValueError, match="baseline 'x' is not among"):
        compare({"a": runs}, "x")
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        compare({"a": runs}, "a", metric="auc")
    with pytest.raises(ValueError, match="method 'b': gold labels differ"):
        compare({"a": runs, "b": MethodRuns([1], np.zeros((1, 4)), np.ones(4, dtype=int))}, "a")
