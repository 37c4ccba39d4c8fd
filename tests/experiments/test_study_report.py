"""The QNLI study's reading of its expectations (experiments/study/report.py): each method-against-method claim gets
its own paired interval, and a claim holds only when that interval excludes 0."""

from __future__ import annotations

import pytest
from _helpers import fake_run


@pytest.mark.parametrize(("diff", "interval", "says"), [
    (0.03, (0.01, 0.05), "holds"),
    (-0.03, (-0.05, -0.01), "does not hold"),
    (0.01, (-0.01, 0.03), "not resolved: the mean difference is in the claim's direction"),
    (-0.01, (-0.03, 0.01), "not resolved: the mean difference goes against the claim"),
])
def test_a_claim_holds_only_when_its_interval_excludes_zero(report, diff, interval, says):
    assert report.verdict({"diff": diff, "interval": interval}).startswith(says)


def test_method_against_method_claims_get_their_own_paired_interval(report, tmp_path):
    """TMKD clearly above m-o-1 and m-o-1 level with 1-o-1: the pairwise rows say so, with intervals from
    comparisons in which the second method is the baseline; a pair with an unrun row is left out."""
    runs = {"one_to_one": 0.80, "m_o_1_mean": 0.80, "tmkd": 0.90}
    inputs = [f"{label}={fake_run(tmp_path, label, seed, acc)}" for label, acc in runs.items() for seed in (1, 2, 3)]
    pairs = report.pairwise(inputs, replicates=300)
    assert sorted(pairs) == ["m_o_1_mean vs one_to_one", "tmkd vs m_o_1_mean"]  # no control run
    tmkd, mo1 = pairs["tmkd vs m_o_1_mean"], pairs["m_o_1_mean vs one_to_one"]
    assert tmkd["interval"][0] > 0 and report.verdict(tmkd).startswith("holds")
    assert mo1["interval"][0] < 0 < mo1["interval"][1]  # equal methods: the seeds resampled apart move it around 0
    lines = report.expectations({"methods": {}}, pairs, [], {})
    assert any(line.startswith("- tmkd > m_o_1_mean: tmkd - m_o_1_mean = ") and "holds" in line for line in lines)
    assert "- tmkd > control: not measurable yet (a row has no finished run)." in lines
