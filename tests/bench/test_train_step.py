"""``python -m tmkd.bench.train_step --quick``: it runs, prints and writes its three tables, length grouping pads less
than a shuffle on rows of varied lengths, the Lightning and plain loops do the same work (same final weights), and
sorted validation pads less for the same metric. Timings are printed, never asserted."""

from __future__ import annotations

import re

import pytest

from tmkd.bench import train_step


def test_padding_fraction_counts_pad_tokens_over_all_tokens():
    lengths = [2, 4, 4, 1]
    assert train_step.padding_fraction(lengths, [0, 1, 2, 3], 2) == pytest.approx((2 + 3) / (8 + 8))
    assert train_step.padding_fraction(lengths, [1, 2, 0, 3], 2) == pytest.approx(1 / 12)
    assert train_step.padding_fraction([], [], 4) == 0.0


def test_setting_rejects_bad_values():
    with pytest.raises(ValueError, match="must be positive"):
        train_step.Setting(steps=0)


def test_quick_benchmark_prints_both_tables_and_grouping_pads_less(tmp_path, capsys):
    out = tmp_path / "table.md"
    train_step.main(["--quick", "--train-rows", "320", "--epochs", "1", "--steps", "8", "--repeats", "1",
                     "--out", str(out)])
    text = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| batching", "| loop",
                                                                                               "| validation order"))}
    assert set(rows) == {"shuffled", "length-grouped", "plain PyTorch", "Lightning (FineTuneModule)", "dataset order",
                         "sorted by length"}
    assert float(rows["length-grouped"][0]) < float(rows["shuffled"][0])  # padding fraction per epoch
    for name in ("shuffled", "length-grouped"):
        assert 0 <= float(rows[name][-1]) <= 1  # dev accuracy
    overhead = re.search(r"Lightning overhead: [+-]\d+\.\d% .* max \|weight difference\| after the runs: (\S+)", text)
    assert overhead and float(overhead.group(1)) <= 1e-6, text  # same batches, optimiser and dropout masks
    assert float(rows["sorted by length"][0]) < float(rows["dataset order"][0])  # validation padding
    assert rows["sorted by length"][-1] == rows["dataset order"][-1]  # same dev metric
    assert re.search(r"same accuracy: True", text)
    written = out.read_text()
    assert written.startswith("tmkd.bench.train_step: task=synth_pair_sum") and "| length-grouped |" in written
