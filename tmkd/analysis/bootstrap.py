"""Two-level (hierarchical) bootstrap of a dev metric over seeds and dev examples, paired over examples.

A method's dev score varies with the seed (initialisation, data order, dropout) and with which dev examples were
drawn; a comparison has to resample both. Seeds are independent draws, so they are resampled *within each method*
(with replacement); dev examples are shared by every run, so each replicate draws *one* resample of the examples
(as counts per example) and applies it to every run of every method: the difference stays paired over examples.
The replicate's score of a method is the mean, over its resampled seeds, of each run's metric on the resampled
examples; the interval is the percentile interval of the replicate differences.

This is the nested bootstrap of Davison & Hinkley (1997, *Bootstrap Methods and their Application*, ch. 3.8,
"hierarchical data": resample at the top level with replacement, and at the lower level too); for crossed
examples x seeds see Owen (2007, "The pigeonhole bootstrap", Ann. Appl. Stat.), whose point that resampling
both factors is mildly conservative applies here. That seeds must be resampled when comparing trained models:
Dodge et al. (2019, "Show Your Work"), Bouthillier et al. (2021, "Accounting for Variance in Machine Learning
Benchmarks", MLSys).

Written here rather than taken from ``scipy.stats.bootstrap``: that resamples one level (observations of
independent samples, or paired rows), not seeds and then examples shared across methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

METRICS = ("accuracy", "f1", "binary_f1", "mcc")
# example-resample counts held at once: replicates per chunk x examples (float64, 8 bytes each)
CHUNK_CELLS = 4_000_000


@dataclass
class MethodRuns:
    """One method's runs over the same dev examples: ``pred[s, n]`` of seed ``seeds[s]`` on example ``n``."""

    seeds: list[int]
    pred: np.ndarray  # [S, N] int
    labels: np.ndarray  # [N] int

    def __post_init__(self) -> None:
        self.pred = np.atleast_2d(np.asarray(self.pred, dtype=np.int64))
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.pred.shape != (len(self.seeds), len(self.labels)):
            raise ValueError(f"pred has shape {self.pred.shape}; expected (seeds={len(self.seeds)}, "
                             f"examples={len(self.labels)})")


@dataclass
class Comparison:
    """Per-method scores over seeds, and each method's difference to the baseline with its interval."""

    metric: str
    baseline: str
    confidence: float
    replicates: int
    resample_seeds: bool
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # method -> full-dev metric per seed
    diff: dict[str, float] = field(default_factory=dict)  # method -> mean(method) - mean(baseline)
    interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    draws: dict[str, np.ndarray] = field(default_factory=dict)  # method -> replicate differences


def from_confusion(conf: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` of confusion matrices ``[..., K, K]`` (rows: gold, columns: predicted); 0 where undefined,
    as torchmetrics reports it. Macro F1 averages over classes, binary F1 is label 1's (GLUE's MRPC F1; two
    classes only), MCC is the multiclass (Gorodkin) form."""
    conf = np.asarray(conf, dtype=np.float64)
    total = conf.sum((-2, -1))
    correct = np.trace(conf, axis1=-2, axis2=-1)
    if metric == "accuracy":
        return np.divide(correct, total, out=np.zeros_like(total), where=total > 0)
    gold, pred = conf.sum(-1), conf.sum(-2)
    if metric == "f1":
        tp = np.diagonal(conf, axis1=-2, axis2=-1)
        denom = gold + pred
        return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0).mean(-1)
    if metric == "binary_f1":
        if conf.shape[-1] != 2:
            raise ValueError(f"metric 'binary_f1' needs two classes, got {conf.shape[-1]}: use 'f1' (macro F1)")
        denom = gold[..., 1] + pred[..., 1]
        return np.divide(2 * conf[..., 1, 1], denom, out=np.zeros_like(denom), where=denom > 0)
    if metric == "mcc":
        cov = correct * total - (gold * pred).sum(-1)
        denom = np.sqrt((total**2 - (pred**2).sum(-1)) * (total**2 - (gold**2).sum(-1)))
        return np.divide(cov, denom, out=np.zeros_like(denom), where=denom > 0)
    raise ValueError(f"unknown metric {metric!r}; valid: {list(METRICS)}")


def _columns(runs: MethodRuns, metric: str, k: int) -> np.ndarray:
    """Per-example indicators ``[N, S]`` (accuracy: correct) or ``[N, S*K*K]`` (the confusion cell of each
    seed's prediction): a resample's metric of every run is then one matrix product with the resample's counts."""
    if metric == "accuracy":
        return (runs.pred == runs.labels[None, :]).T.astype(np.float32)
    cells = runs.labels[None, :] * k + runs.pred  # [S, N]
    onehot = cells[:, :, None] == np.arange(k * k)[None, None, :]  # [S, N, K*K]
    return onehot.transpose(1, 0, 2).reshape(len(runs.labels), -1).astype(np.float32)


def _metric(sums: np.ndarray, n: int, metric: str, k: int) -> np.ndarray:
    """Metric per replicate and seed from ``_columns``' weighted sums ``[B, S]`` or ``[B, S*K*K]``."""
    if metric == "accuracy":
        return sums / n
    return from_confusion(sums.reshape(sums.shape[0], -1, k, k), metric)


def compare(methods: Mapping[str, MethodRuns], baseline: str, metric: str = "accuracy", replicates: int = 10_000,
            confidence: float = 0.95, seed: int = 0, resample_seeds: bool = True) -> Comparison:
    """Each method against ``baseline``: point difference of seed means and a two-level bootstrap interval.

    ``resample_seeds=False`` resamples dev examples only (every replicate keeps all seeds): the one-level paired
    bootstrap, which ignores seed noise (kept for comparison and tests). With one seed a method contributes no
    seed noise either way.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {list(METRICS)}")
    if baseline not in methods:
        raise ValueError(f"baseline {baseline!r} is not among the methods {sorted(methods)}")
    if replicates < 1 or not 0 < confidence < 1:
        raise ValueError(f"need replicates >= 1 and 0 < confidence < 1; got {replicates}, {confidence}")
    labels = methods[baseline].labels
    n = len(labels)
    for name, runs in methods.items():
        if not np.array_equal(runs.labels, labels):
            raise ValueError(f"method {name!r}: gold labels differ from the baseline's; the runs were not evaluated "
                             "on the same dev examples")
    k = int(max(max(r.pred.max(), r.labels.max()) for r in methods.values())) + 1
    out = Comparison(metric, baseline, confidence, replicates, resample_seeds)
    # every run's indicator columns side by side: one product per chunk of replicates scores all runs. float32 is
    # exact here: the products are sums of at most N integer counts (N < 2**24)
    columns = {name: _columns(runs, metric, k) for name, runs in methods.items()}
    names = list(columns)
    edges = np.cumsum([0, *(columns[m].shape[1] for m in names)])
    stacked = np.concatenate([columns[m] for m in names], axis=1)
    full = stacked.sum(0, keepdims=True)
    out.scores = {m: _metric(full[:, edges[i]:edges[i + 1]], n, metric, k)[0] for i, m in enumerate(names)}
    base_mean = out.scores[baseline].mean()
    out.diff = {name: float(s.mean() - base_mean) for name, s in out.scores.items()}

    rng = np.random.default_rng(seed)
    chunk = max(1, min(replicates, CHUNK_CELLS // n))
    means: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    for start in range(0, replicates, chunk):
        b = min(chunk, replicates - start)
        # one example resample per replicate (as counts per example), shared by every run of every method
        picks = rng.integers(0, n, size=(b, n), dtype=np.int32)
        weights = np.bincount((picks + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel(), minlength=b * n)
        sums = weights.reshape(b, n).astype(np.float32) @ stacked
        for i, name in enumerate(names):
            per_run = _metric(sums[:, edges[i]:edges[i + 1]], n, metric, k)  # [b, S]
            s = per_run.shape[1]
            if resample_seeds and s > 1:
                chosen = rng.integers(0, s, size=(b, s))  # seeds with replacement, independently per method
                per_run = np.take_along_axis(per_run, chosen, axis=1)
            means[name].append(per_run.mean(1))
    base = np.concatenate(means[baseline])
    tail = (1 - confidence) / 2 * 100
    for name in methods:
        draws = np.concatenate(means[name]) - base
        out.draws[name] = draws
        lo, hi = np.percentile(draws, [tail, 100 - tail])
        out.interval[name] = (float(lo), float(hi))
    return out
