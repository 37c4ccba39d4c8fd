"""Classification metrics by name (a task's ``metrics``), backed by torchmetrics: one collection per eval split."""

from __future__ import annotations

from collections.abc import Callable

from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassMatthewsCorrCoef

METRICS: dict[str, Callable[[int], Metric]] = {
    "accuracy": lambda n: MulticlassAccuracy(num_classes=n, average="micro"),
    "f1": lambda n: MulticlassF1Score(num_classes=n, average="macro"),
    "mcc": lambda n: MulticlassMatthewsCorrCoef(num_classes=n),
}


def build_metrics(names: tuple[str, ...] | list[str], num_classes: int) -> MetricCollection:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {sorted(METRICS)}")
    return MetricCollection({n: METRICS[n](num_classes) for n in names})
