"""heatmap_png writes a real PNG of the density report."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")
from PIL import Image

from tmkd.prune import DensityReport, LayerDensity, Pruner, PruningConfig, heatmap_png


def test_heatmap_writes_a_png(make_model, tmp_path):
    pruner = Pruner(make_model(), PruningConfig(block_size=16, target_density=0.5, total_steps=4, warmup_steps=0,
                                                cooldown_steps=1, score_init="uniform", score_init_scale=1.0))
    pruner.attach().step(4)
    report = pruner.density_report()
    flat = report.flat()  # logger form
    assert flat["prune/overall_density"] == report.overall and "prune/layer1/heads_kept" in flat
    out = heatmap_png(report, tmp_path / "plots" / "density.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
    again = heatmap_png(report.as_dict(), tmp_path / "from_dict.png")  # the logged / JSON form works too
    assert again.stat().st_size > 1000


def test_heatmap_needs_layers(tmp_path):
    with pytest.raises(ValueError, match="no layers"):
        heatmap_png(DensityReport(layers=[], overall=1.0), tmp_path / "x.png")
    report = DensityReport(layers=[LayerDensity(0, 0.0, 0, 12, 0.0, 0, 1536)], overall=0.0)
    assert heatmap_png(report, tmp_path / "empty_layer.png").exists()  # a fully pruned layer still draws
