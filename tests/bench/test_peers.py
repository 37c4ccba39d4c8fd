"""``python -m tmkd.bench.peers --quick``: every system runs, they agree on the student's dev accuracy within
:data:`ACCURACY_TOLERANCE` (same data, teachers, student, optimiser, schedule, T and alpha; what still differs is in the
module docstring), and the last line has the machine-readable format. The quick task and briefly trained teachers
(``peers.quick_task``, ``peers.train_teachers``) make the tiny student learn in every system whatever the data
order. TextBrewer systems are skipped, with the reason in the table, when textbrewer is not installed; the tmkd
systems run either way."""

from __future__ import annotations

import re

import pytest

from tmkd.bench import peers


def test_setup_rejects_bad_values():
    with pytest.raises(ValueError, match="must be positive"):
        peers.Setup(epochs=0)
    with pytest.raises(ValueError, match="alpha"):
        peers.Setup(alpha=1.5)


def test_quick_benchmark_runs_every_system_and_they_agree(tmp_path, capsys):
    out = tmp_path / "table.md"
    peers.main(["--quick", "--k", "2", "--out", str(out)])
    text = capsys.readouterr().out
    lines = text.strip().splitlines()
    assert re.fullmatch(r"tmkd vs textbrewer \(cached\): (\d+\.\d\dx|n/a); vs textbrewer \(online\): (\d+\.\d\dx|n/a)",
                        lines[-1]), lines[-1]
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "system" not in line}
    assert set(rows) == set(peers.SYSTEMS)
    missing = peers.textbrewer_missing()
    if missing:
        assert "skipped" in rows["textbrewer (online)"] and "n/a" in lines[-1]
    else:
        assert "skipped" not in text
    on, off = (float(rows[s].split("|")[5]) for s in ("tmkd (cache on)", "tmkd (cache off)"))
    assert abs(on - off) <= 0.01  # same targets (to fp tolerance), same order: the same run
    assert out.read_text().strip().splitlines()[-1] == lines[-1]
    accs = [float(row.split("|")[5]) for row in rows.values() if "skipped" not in row]
    mean = sum(accs) / len(accs)
    assert max(abs(a - mean) for a in accs) <= peers.ACCURACY_TOLERANCE, accs
    assert min(accs) > 0.8, accs  # the student learned in every system (chance is ~0.5), so agreement means something
