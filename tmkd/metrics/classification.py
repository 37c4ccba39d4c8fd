"""Classification metrics by name (a task's ``metrics``), backed by torchmetrics: one collection per eval split."""

from __future__ import annotations

from collections.abc import Callable

from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)


def _binary_f1(num_classes: int) -> Metric:
    """F1 of the positive class (label 1), as GLUE scores MRPC and QQP (sklearn's ``f1_score``); 0 when there is
    no true or predicted positive."""
    if num_classes != 2:
        raise ValueError(f"metric 'binary_f1' is the F1 of label 1 of a two-class task, got {num_classes} classes: "
                         "use 'f1' (macro F1) instead")
    return BinaryF1Score()


METRICS: dict[str, Callable[[int], Metric]] = {
    "accuracy": lambda n: MulticlassAccuracy(num_classes=n, average="micro"),
    "f1": lambda n: MulticlassF1Score(num_classes=n, average="macro"),
    "binary_f1": _binary_f1,
    "mcc": lambda n: MulticlassMatthewsCorrCoef(num_classes=n),
}


def build_metrics(names: tuple[str, ...] | list[str], num_classes: int) -> MetricCollection:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {sorted(METRICS)}")
    return MetricCollection({n: METRICS[n](num_classes) for n in names})
