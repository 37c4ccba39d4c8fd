"""The official SQuAD evaluation (``evaluate-v2.0.py``, which also scores v1.1 data), as a library and a CLI.

Written here rather than taken from torchmetrics: torchmetrics' ``SQuAD`` is the v1.1 metric only (no
unanswerable questions, no HasAns/NoAns breakdown, no no-answer threshold, no best-threshold search), so its
v2.0 numbers would not be comparable with published ones. Every rule below follows the official script:

- answers are normalised (lower case, punctuation removed, articles a/an/the removed, whitespace collapsed);
- exact and F1 are the maximum over the gold answers; gold answers that normalise to "" are dropped, and a
  question left with none is unanswerable, whose only correct answer is "" (F1 is then 1 or 0);
- a question counts as answerable (HasAns) when its gold list is non-empty, as in ``make_qid_to_has_ans``;
- with no-answer scores, a prediction whose score exceeds ``na_prob_thresh`` is replaced by "", and
  ``best_*`` is the best score over all thresholds (``find_best_thresh``, unchanged);
- scores are percentages.

One documented difference: the official script prints ``Missing prediction for <id>`` and then crashes in its
HasAns/NoAns breakdown (a ``KeyError``); here the missing questions are reported on stderr and left out of every
total, breakdown and threshold search, which gives exactly the official numbers on the questions predicted.

CLI: ``python -m tmkd.metrics.squad DATA.json PREDICTIONS.json [--na-prob-file F] [--na-prob-thresh 1.0]
[--out-file F]`` (any of the files may be gzipped); input errors exit with status 2 and one line naming the problem.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


class SquadInputError(ValueError):
    """Data, predictions or no-answer scores that cannot be evaluated (the message names the problem)."""


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order of steps)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _f1_tokens(gold_toks: list[str], pred_toks: list[str]) -> float:
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)  # no-answer on either side: 1 if both are empty, else 0
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def scoring_golds(golds: Sequence[str]) -> list[str]:
    """The gold answers a prediction is scored against: non-empty after normalisation, else ``[""]``."""
    kept = [g for g in golds if normalize_answer(g)]
    return kept or [""]


def _scores(pred: str, golds: Sequence[str]) -> tuple[int, float]:
    """(exact, F1) of one prediction, each the maximum over the scoring golds (each text normalised once)."""
    norm_pred = normalize_answer(pred)
    pred_toks = norm_pred.split()
    norm_golds = [normalize_answer(g) for g in golds]
    norm_golds = [g for g in norm_golds if g] or [""]
    exact = max(int(g == norm_pred) for g in norm_golds)
    return exact, max(_f1_tokens(g.split(), pred_toks) for g in norm_golds)


def exact_match(pred: str, golds: Sequence[str]) -> int:
    """1 if ``pred`` matches any gold answer after normalisation; ``golds == []`` means unanswerable."""
    return _scores(pred, golds)[0]


def f1(pred: str, golds: Sequence[str]) -> float:
    """Token-overlap F1 in [0, 1], the maximum over the gold answers; ``golds == []`` means unanswerable."""
    return _scores(pred, golds)[1]


def _some(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _check_inputs(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, Any],
                  na_probs: Mapping[str, Any] | None) -> None:
    unknown = [k for k in predictions if k not in golds]
    if unknown:
        raise SquadInputError(f"{len(unknown)} prediction id(s) not in the data: {_some(unknown)}")
    not_text = [k for k, v in predictions.items() if not isinstance(v, str)]
    if not_text:
        raise SquadInputError(f"predictions must be strings; not for id(s) {_some(not_text)}")
    if not predictions and golds:
        raise SquadInputError(f"no predictions for any of the {len(golds)} questions")
    if na_probs is not None:
        missing = [k for k in predictions if k not in na_probs]
        if missing:
            raise SquadInputError(f"no-answer probabilities missing for {len(missing)} predicted id(s): "
                                  f"{_some(missing)}")
        bad = [k for k in predictions
               if isinstance(na_probs[k], bool) or not isinstance(na_probs[k], int | float)]
        if bad:
            raise SquadInputError(f"no-answer probabilities must be numbers; not for id(s) {_some(bad)}")


def _eval_dict(exact: Mapping[str, float], f1s: Mapping[str, float], qids: Sequence[str]) -> dict[str, float]:
    total = len(qids)
    return {"exact": 100.0 * sum(exact[k] for k in qids) / total,
            "f1": 100.0 * sum(f1s[k] for k in qids) / total,
            "total": total}


def find_best_thresh(preds: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                     qid_to_has_ans: Mapping[str, bool]) -> tuple[float, float]:
    """The best score over no-answer thresholds and the threshold that reaches it (official algorithm).

    Starts from "every question predicted unanswerable" and walks the questions by increasing no-answer
    score, switching each to its prediction; ties keep the first (lowest) threshold.
    """
    num_no_ans = sum(1 for k in scores if not qid_to_has_ans[k])
    cur_score = best_score = num_no_ans
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        # answerable: gains its score once predicted; unanswerable: loses its point if the prediction is not ""
        cur_score += scores[qid] if qid_to_has_ans[qid] else (-1 if preds[qid] else 0)
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def evaluate(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
             na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0,
             warn_missing: bool = True) -> dict[str, float]:
    """The official SQuAD v2.0 evaluation (also right for v1.1 data), keys and values as the official script.

    ``golds`` maps question id -> gold answer texts (``[]`` = unanswerable); ``predictions`` id -> answer text;
    ``na_probs`` id -> no-answer score (any scale where higher means "more likely unanswerable": a probability,
    or the logit margin of :func:`tmkd.data.qa.postprocess`; ``na_prob_thresh`` and ``best_*_thresh`` are then
    on that scale, so pass a matching ``na_prob_thresh``: the default 1.0 suits probabilities). Returns
    ``exact, f1, total``, ``HasAns_*`` / ``NoAns_*`` when the data has such questions, ``best_*`` only with
    ``na_probs``. Questions without a prediction are reported on stderr (``warn_missing``) and left out.

    Raises :class:`SquadInputError` for prediction ids not in ``golds``, non-string predictions, no usable
    prediction at all, and ``na_probs`` lacking a predicted id.
    """
    _check_inputs(golds, predictions, na_probs)
    probs = na_probs if na_probs is not None else {k: 0.0 for k in predictions}
    qid_to_has_ans = {qid: bool(answers) for qid, answers in golds.items()}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for qid, answers in golds.items():
        if qid not in predictions:
            if warn_missing:
                print(f"Missing prediction for {qid}", file=sys.stderr)
            continue
        exact_raw[qid], f1_raw[qid] = _scores(predictions[qid], answers)

    def _thresholded(scores: dict[str, float]) -> dict[str, float]:
        return {k: float(not qid_to_has_ans[k]) if probs[k] > na_prob_thresh else s for k, s in scores.items()}

    exact_t, f1_t = _thresholded(exact_raw), _thresholded(f1_raw)
    scored = list(exact_raw)
    out: dict[str, float] = _eval_dict(exact_t, f1_t, scored)
    for prefix, has_ans in (("HasAns", True), ("NoAns", False)):
        qids = [k for k in scored if qid_to_has_ans[k] == has_ans]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact_t, f1_t, qids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(predictions, exact_raw, na_probs,
                                                                       qid_to_has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(predictions, f1_raw, na_probs, qid_to_has_ans)
    return out


def _read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file, plain or gzipped (told apart by content, not name); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise SquadInputError(f"{what} not found: {path}" if not path.exists() else f"{what} is not a file: {path}")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as err:
        raise SquadInputError(f"{what} {path} is not valid JSON: {err}") from err
    except (OSError, EOFError, UnicodeDecodeError) as err:  # bad gzip stream or not UTF-8 text
        raise SquadInputError(f"cannot read {what} {path}: {type(err).__name__}: {err}") from err


def _golds_from_official(dataset: Any, source: str) -> dict[str, list[str]]:
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise SquadInputError(f"{source} is not SQuAD data: expected an object with a 'data' list of articles")
    golds: dict[str, list[str]] = {}
    try:
        for article in dataset["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    golds[str(qa["id"])] = [str(a["text"]) for a in qa["answers"]]
    except (KeyError, TypeError) as err:
        raise SquadInputError(f"{source} is not SQuAD data: article/paragraph/question without {err}") from err
    return golds


def load_squad_json(path: str | Path) -> dict[str, list[str]]:
    """Gold answers (id -> answer texts, ``[]`` = unanswerable) from an official SQuAD JSON file, plain or .gz."""
    return _golds_from_official(_read_json(path, "data file"), f"data file {path}")


def golds_from_rows(ids: Sequence[str], answers: Sequence[Mapping[str, Sequence[Any]] | Sequence[str]]
                    ) -> dict[str, list[str]]:
    """Gold answers from hub-style rows: ``ids`` and, per row, ``{"text": [...], ...}`` or a list of texts.

    Ids must be unique: a duplicate would silently drop one row's gold answers.
    """
    if len(ids) != len(answers):
        raise ValueError(f"{len(ids)} ids but {len(answers)} answer lists")
    golds: dict[str, list[str]] = {}
    for qid, ans in zip(ids, answers, strict=True):
        texts = ans["text"] if isinstance(ans, Mapping) else ans
        if qid in golds:
            raise ValueError(f"duplicate question id {qid!r}")
        golds[qid] = [str(t) for t in texts]
    return golds


def _mapping_file(path: str, what: str, values: str) -> dict[str, Any]:
    obj = _read_json(path, what)
    if not isinstance(obj, dict):
        raise SquadInputError(f"{what} {path} must be a JSON object mapping question ids to {values}")
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmkd.metrics.squad",
                                     description="Official evaluation for SQuAD v2.0 (and v1.1) data.")
    parser.add_argument("data_file", metavar="data.json", help="Input data JSON file (plain or .gz).")
    parser.add_argument("pred_file", metavar="pred.json", help="Model predictions: {id: answer text}.")
    parser.add_argument("--out-file", "-o", metavar="eval.json",
                        help="Write accuracy metrics to file (default is stdout).")
    parser.add_argument("--na-prob-file", "-n", metavar="na_prob.json",
                        help="Model estimates of probability of no answer: {id: number}.")
    parser.add_argument("--na-prob-thresh", "-t", type=float, default=1.0,
                        help='Predict "" if no-answer probability exceeds this (default = 1.0).')
    opts = parser.parse_args(argv)
    try:
        golds = load_squad_json(opts.data_file)
        preds = _mapping_file(opts.pred_file, "predictions file", "answer texts")
        na_probs = (_mapping_file(opts.na_prob_file, "no-answer probability file", "numbers")
                    if opts.na_prob_file else None)
        out = evaluate(golds, preds, na_probs, opts.na_prob_thresh)
    except SquadInputError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if opts.out_file:
        with open(opts.out_file, "w") as f:
            json.dump(out, f)
    else:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
