"""A PNG heat map of a density report: what survived, per layer, at a glance (for W&B / the run folder)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tmkd.prune.pruner import DensityReport


def heatmap_png(density_report: DensityReport | Mapping[str, Any], path: str | Path) -> Path:
    """Draw rows "heads kept", "attention density" and "FFN density" against encoder layers, each cell coloured
    by its fraction and annotated (``7/12``, ``0.43``). ``density_report``: a :class:`DensityReport` or its
    ``as_dict()``. Returns ``path``. Needs matplotlib (imported here, so the rest of tmkd.prune does not)."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global backend / figure state touched

    report = density_report if isinstance(density_report, DensityReport) else DensityReport.from_dict(density_report)
    if not report.layers:
        raise ValueError("density report has no layers")
    rows = ["heads kept", "attention density", "FFN density"]
    values = np.array([
        [ld.heads_kept / ld.heads_total if ld.heads_total else 0.0 for ld in report.layers],
        [ld.attention_density for ld in report.layers],
        [ld.ffn_density for ld in report.layers],
    ])
    labels = [
        [f"{ld.heads_kept}/{ld.heads_total}" for ld in report.layers],
        [f"{ld.attention_density:.2f}" for ld in report.layers],
        [f"{ld.ffn_density:.2f}" for ld in report.layers],
    ]
    n = len(report.layers)
    fig = Figure(figsize=(max(4.0, 0.8 * n + 2.5), 2.8))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n), [str(ld.layer) for ld in report.layers])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("encoder layer")
    ax.set_title(f"kept per layer (overall density {report.overall:.3f})")
    for r in range(len(rows)):
        for c in range(n):
            ax.text(c, r, labels[r][c], ha="center", va="center", fontsize=8,
                    color="white" if values[r, c] < 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
