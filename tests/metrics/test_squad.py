"""The SQuAD evaluation against hand-computed cases, the CLI and its errors, and the real dev sets."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tmkd.metrics.squad import (
    SquadInputError,
    evaluate,
    exact_match,
    f1,
    golds_from_rows,
    load_squad_json,
    main,
    normalize_answer,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
OFFICIAL_KEYS = ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
                 "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


@pytest.mark.parametrize(("text", "expected"), [
    ("The  Quick, brown fox!", "quick brown fox"),
    ("An apple a day", "apple day"),
    ("theater anthem", "theater anthem"),  # articles only as whole words
    ("U.S.A.", "usa"),
    ("a-team", "ateam"),  # punctuation goes first, so the article is glued on and stays
    ("\tthe\n end ", "end"),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_takes_the_best_gold_answer():
    assert exact_match("the Eiffel Tower", ["Paris", "Eiffel tower!"]) == 1
    assert exact_match("Eiffel", ["Paris", "Eiffel tower"]) == 0


def test_f1_values_computed_by_hand():
    # gold {quick, brown, fox} vs pred {brown, fox, jumps}: P = R = 2/3
    assert f1("brown fox jumps", ["the quick brown fox"]) == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: common y*2, P = 2/3, R = 2/4 -> F1 = 4/7
    assert f1("y y y", ["x y y z"]) == pytest.approx(4 / 7)
    # max over golds: 0.8 (P=1, R=2/3) beats 2/3 (P=1/2, R=1)
    assert f1("brown fox", ["quick brown fox", "fox"]) == pytest.approx(0.8)
    assert f1("cat", ["dog"]) == 0.0


def test_unanswerable_gold_accepts_only_the_empty_answer():
    assert exact_match("", []) == 1 and f1("", []) == 1.0
    assert exact_match("London", []) == 0 and f1("London", []) == 0.0
    assert f1("", ["Paris"]) == 0.0
    # a gold answer that normalises to "" is dropped, as in the official script: only "" matches then
    assert exact_match("", ["the"]) == 1 and exact_match("the", ["the"]) == 1 and exact_match("x", ["the"]) == 0
    # ... and next to a real answer it does not make "" right
    assert exact_match("", ["the", "Paris"]) == 0 and f1("", ["a", "Paris"]) == 0.0


GOLDS = {"q1": ["Paris"], "q2": ["quick brown fox", "the quick brown fox"], "q3": [], "q4": []}
PREDS = {"q1": "paris", "q2": "brown fox jumps", "q3": "", "q4": "London"}
NA = {"q1": 0.1, "q2": 0.6, "q3": 0.3, "q4": 0.9}


def test_evaluate_breakdowns_by_hand():
    out = evaluate(GOLDS, PREDS)
    assert list(out) == OFFICIAL_KEYS[:9]  # no best_* without na_probs
    assert out["exact"] == pytest.approx(50.0)  # q1, q3 right
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    assert (out["total"], out["HasAns_total"], out["NoAns_total"]) == (4, 2, 2)
    assert out["HasAns_exact"] == pytest.approx(50.0) and out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert out["NoAns_exact"] == pytest.approx(50.0) and out["NoAns_f1"] == pytest.approx(50.0)


def test_only_present_question_kinds_are_broken_down():
    out = evaluate({"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"})
    assert list(out) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total"]
    assert out["exact"] == pytest.approx(50.0)
    assert list(evaluate({"a": []}, {"a": ""})) == ["exact", "f1", "total", "NoAns_exact", "NoAns_f1", "NoAns_total"]


def test_no_answer_threshold_replaces_predictions_above_it():
    out = evaluate(GOLDS, PREDS, NA, na_prob_thresh=0.5)
    # q2 (0.6) becomes "" -> 0 (answerable); q4 (0.9) becomes "" -> 1 (unanswerable); q1, q3 kept
    assert out["exact"] == pytest.approx(75.0) and out["f1"] == pytest.approx(75.0)
    assert out["NoAns_exact"] == pytest.approx(100.0) and out["HasAns_f1"] == pytest.approx(50.0)
    # strictly above: a score equal to the threshold keeps its prediction
    at = evaluate(GOLDS, PREDS, NA, na_prob_thresh=0.6)
    assert at["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    # the default 1.0 changes nothing for probabilities
    default = evaluate(GOLDS, PREDS, NA)
    assert {k: default[k] for k in OFFICIAL_KEYS[:9]} == evaluate(GOLDS, PREDS)
    assert list(default) == OFFICIAL_KEYS


def test_best_thresholds_by_hand():
    # Start at 2/4 (all predicted ""), then in order of na: q1 (+1 -> 3, thresh 0.1), q3 ("" -> +0),
    # q2 (exact +0; f1 +2/3 -> 3.67, thresh 0.6), q4 ("London" on an unanswerable -> -1).
    out = evaluate(GOLDS, PREDS, NA)
    assert out["best_exact"] == pytest.approx(75.0) and out["best_exact_thresh"] == 0.1
    assert out["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4) and out["best_f1_thresh"] == 0.6
    # no threshold beats "all unanswerable": best_thresh stays 0.0
    worse = evaluate({"a": [], "b": ["x"]}, {"a": "y", "b": "z"}, {"a": 0.2, "b": 0.7})
    assert worse["best_exact"] == pytest.approx(50.0) and worse["best_exact_thresh"] == 0.0


def test_missing_predictions_are_reported_and_skipped(capsys):
    out = evaluate(GOLDS, {k: v for k, v in PREDS.items() if k != "q4"})
    err = capsys.readouterr().err
    assert err.strip() == "Missing prediction for q4"
    assert (out["total"], out["NoAns_total"]) == (3, 1)
    assert out["exact"] == pytest.approx(100 * 2 / 3)


def test_evaluate_input_errors():
    with pytest.raises(SquadInputError, match=r"2 prediction id\(s\) not in the data: 'x1', 'x2'"):
        evaluate(GOLDS, {**PREDS, "x1": "a", "x2": "b"})
    with pytest.raises(SquadInputError, match=r"missing for 1 predicted id\(s\): 'q3'"):
        evaluate(GOLDS, PREDS, {k: v for k, v in NA.items() if k != "q3"})
    with pytest.raises(SquadInputError, match="must be strings"):
        evaluate(GOLDS, {**PREDS, "q1": 3})
    with pytest.raises(SquadInputError, match="no predictions"):
        evaluate(GOLDS, {})


def test_golds_from_rows_reads_hub_answers():
    rows = [{"text": ["x", "y"], "answer_start": [0, 3]}, {"text": [], "answer_start": []}]
    golds = golds_from_rows(["a", "b"], rows)
    assert golds == {"a": ["x", "y"], "b": []}
    assert golds_from_rows(["a"], [["x"]]) == {"a": ["x"]}
    with pytest.raises(ValueError, match="duplicate question id 'a'"):
        golds_from_rows(["a", "a"], [["x"], ["y"]])


# ---------------------------------------------------------------------------------------------------------- CLI


def _official(golds: dict[str, list[str]]) -> dict:
    qas = [{"id": k, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in v],
            "is_impossible": not v} for k, v in golds.items()]
    return {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"data": tmp_path / "data.json", "preds": tmp_path / "preds.json", "na": tmp_path / "na.json"}
    paths["data"].write_text(json.dumps(_official(GOLDS)))
    paths["preds"].write_text(json.dumps(PREDS))
    paths["na"].write_text(json.dumps(NA))
    return paths


def _run(capsys, *args: object) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_the_official_json(files, tmp_path, capsys):
    assert load_squad_json(files["data"]) == GOLDS
    code, out, _ = _run(capsys, files["data"], files["preds"], "--na-prob-file", files["na"], "--na-prob-thresh", 0.5)
    assert code == 0
    assert json.loads(out) == evaluate(GOLDS, PREDS, NA, na_prob_thresh=0.5)
    gz = tmp_path / "data.json.gz"
    gz.write_bytes(gzip.compress(files["data"].read_bytes()))
    result = tmp_path / "eval.json"
    code, out, _ = _run(capsys, gz, files["preds"], "-o", result)
    assert code == 0 and out == ""
    assert json.loads(result.read_text()) == evaluate(GOLDS, PREDS)


def test_cli_runs_as_a_module(files):
    proc = subprocess.run([sys.executable, "-m", "tmkd.metrics.squad", str(files["data"]), str(files["preds"])],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["exact"] == pytest.approx(50.0)
    assert proc.stderr == ""  # nothing else on stderr (e.g. a runpy warning), so errors stay one line
    from tmkd.metrics import evaluate as lazily_imported

    assert lazily_imported is evaluate


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m tmkd.metrics.squad: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_cli_errors(files, tmp_path, capsys):
    _one_line_error(*_run(capsys, tmp_path / "nope.json", files["preds"])[::2], "data file not found", "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_line_error(*_run(capsys, files["data"], bad)[::2], "predictions file", "bad.json", "not valid JSON")
    _one_line_error(*_run(capsys, bad, files["preds"])[::2], "data file", "not valid JSON")
    _one_line_error(*_run(capsys, files["data"], files["preds"], "-n", bad)[::2], "no-answer probability file")
    not_gz = tmp_path / "broken.json"
    not_gz.write_bytes(gzip.compress(b'{"data": []}')[:-8])
    _one_line_error(*_run(capsys, not_gz, files["preds"])[::2], "cannot read data file")
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({**PREDS, **{f"zz{i}": "x" for i in range(7)}}))
    _one_line_error(*_run(capsys, files["data"], extra)[::2], "7 prediction id(s) not in the data",
                    "'zz0', 'zz1', 'zz2', 'zz3', 'zz4' and 2 more")
    partial_na = tmp_path / "na_partial.json"
    partial_na.write_text(json.dumps({"q1": 0.5}))
    _one_line_error(*_run(capsys, files["data"], files["preds"], "-n", partial_na)[::2],
                    "no-answer probabilities missing for 3 predicted id(s)")
    _one_line_error(*_run(capsys, files["preds"], files["preds"])[::2], "is not SQuAD data")
    as_list = tmp_path / "list.json"
    as_list.write_text("[1, 2]")
    _one_line_error(*_run(capsys, files["data"], as_list)[::2], "must be a JSON object")


def test_cli_reports_missing_predictions_on_stderr(files, tmp_path, capsys):
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"q1": "Paris"}))
    code, out, err = _run(capsys, files["data"], partial)
    assert code == 0 and json.loads(out)["total"] == 1
    assert err.splitlines() == [f"Missing prediction for {k}" for k in ("q2", "q3", "q4")]


# ---------------------------------------------------------------------------------------------------- real data


@pytest.mark.parametrize(("folder", "name", "total", "has_ans"), [
    ("squad_v2", "dev-v2.0.json.gz", 11873, 5928),
    ("squad", "dev-v1.1.json.gz", 10570, 10570),
])
def test_gold_answers_score_100_on_the_real_dev_sets(folder, name, total, has_ans):
    path = DATA / folder / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    golds = load_squad_json(path)
    out = evaluate(golds, {k: (v[0] if v else "") for k, v in golds.items()})
    assert out["exact"] == out["f1"] == 100.0
    assert out["total"] == total and out["HasAns_total"] == has_ans
    assert out.get("NoAns_total", 0) == total - has_ans
    # the hub Parquet copy of the same split carries the same gold answers
    import pyarrow.parquet as pq

    table = pq.read_table(DATA / folder / "validation.parquet", columns=["id", "answers"]).to_pydict()
    assert golds_from_rows(table["id"], table["answers"]) == golds
