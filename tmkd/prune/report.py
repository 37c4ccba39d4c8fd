"""The pruning report of a run: ``prune_report.json``, ``prune_report.md``, ``heatmap.png`` and the W&B table.

:class:`tmkd.modules.pruning.PruneCallback` builds the report (densities, heads kept, sizes, dev metrics and CPU
latency of the pruned export against the dense starting model); this module only sizes models and writes it out.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger
from torch import nn

from tmkd.prune.heatmap import heatmap_png
from tmkd.prune.pruner import DensityReport, encoder_layers

log = logging.getLogger(__name__)

REPORT_MD = "prune_report.md"
REPORT_JSON = "prune_report.json"
HEATMAP = "heatmap.png"


def model_sizes(model: nn.Module) -> dict[str, Any]:
    """Parameters, encoder linear weights, heads and safetensors bytes (what ``save_pretrained`` writes)."""
    encoder = sum(lin.weight.numel() for layer in encoder_layers(model)
                  for lin in (*layer.attention().values(), layer.intermediate, layer.output))
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors"))
    heads = [layer.num_heads for layer in encoder_layers(model)]
    return {"params": sum(p.numel() for p in model.parameters()), "encoder_linear_weights": encoder,
            "size_bytes": size, "heads": sum(heads)}


def write_report(report: dict[str, Any], out_dir: Path, loggers: Iterable[Any] = ()) -> None:
    """``prune_report.json``, ``prune_report.md`` and ``heatmap.png`` in ``out_dir``; each W&B logger among
    ``loggers`` gets the final densities, speed-ups, the per-layer table and the heat map."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str) + "\n")
    heatmap = None
    try:
        heatmap = heatmap_png(report["density"], out_dir / HEATMAP)
    except ImportError:  # matplotlib is optional
        log.warning("prune: matplotlib missing, no %s", HEATMAP)
    (out_dir / REPORT_MD).write_text(report_markdown(report, heatmap is not None))
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return
    import wandb  # only when a W&B logger exists (keeps wandb off the import path otherwise)

    payload: dict[str, Any] = {f"prune/final/{k.removeprefix('prune/')}": v
                               for k, v in DensityReport.from_dict(report["density"]).flat().items()}
    for b, s in (report.get("latency") or {}).get("speedup", {}).items():
        payload[f"prune/final/speedup_b{b}"] = s
    columns = ["layer", "attention_density", "heads_kept", "ffn_density"]
    payload["prune/report"] = wandb.Table(columns=columns, data=[[d[c] for c in columns]
                                                                 for d in report["density"]["layers"]])
    if heatmap is not None:
        payload["prune/heatmap"] = wandb.Image(str(heatmap))
    for lg in wandb_loggers:
        lg.experiment.log(payload)


def report_markdown(report: dict[str, Any], heatmap: bool = True) -> str:
    """The pruning report as Markdown (per-layer table, totals, dense vs pruned)."""
    density = report["density"]
    lines = [f"# Pruning report ({report['mask']}, block {report['block_size']})", "",
             f"Target density: attention {report['target']['attention']:.3f}, FFN {report['target']['ffn']:.3f}; "
             f"final fine-tune fraction {report['final_finetune_fraction']}.", ""]
    before = report.get("density_before_fill")
    if before:
        lines += [f"Encoder linear weights kept at the end of the schedule (before the fill): "
                  f"{before['overall']:.4f}", ""]
    lines += ["| layer | attention density | heads kept | FFN density | FFN units kept |", "|---|---|---|---|---|"]
    for d in density["layers"]:
        lines.append(f"| {d['layer']} | {d['attention_density']:.3f} | {d['heads_kept']}/{d['heads_total']} | "
                     f"{d['ffn_density']:.3f} | {d['ffn_units_kept']}/{d['ffn_units_total']} |")
    dense, pruned = report["dense"], report["pruned"]
    metrics = report.get("metrics") or [report["metric"]]
    lines += ["", f"Encoder linear weights kept (exported model): {density['overall']:.4f}", "",
              "| model | " + " | ".join(metrics) + " | params | encoder linear weights | heads | size (MB) |",
              "|---|" + "---|" * len(metrics) + "---|---|---|---|"]
    for name, row in (("dense (start)", dense), ("pruned (export)", pruned)):
        scores = {**(row.get("scores") or {}), report["metric"]: row.get("value")}
        values = " | ".join(f"{scores[m]:.4f}" if scores.get(m) is not None else "-" for m in metrics)
        size = f"{row['size_bytes'] / 2**20:.2f}" if row.get("size_bytes") else "-"
        lines.append(f"| {name} | {values} | {row.get('params', '-')} | {row.get('encoder_linear_weights', '-')} | "
                     f"{row.get('heads', '-')} | {size} |")
    latency = report.get("latency")
    if latency:
        env = latency["pruned"]["env"]
        inputs = latency.get("inputs")
        what = (f"{env['rows']} dev rows" if not inputs else
                f"the first {inputs['rows']} {inputs['split']} rows, one sequence of ({', '.join(inputs['columns'])}) "
                f"per row truncated to {inputs['max_length']} tokens, forward pass only")
        lines += ["", f"CPU latency ({env['threads']} thread(s), {env['cpu']}, torch {env['torch']}; {what}):", "",
                  "| batch | dense ms | pruned ms | speed-up |", "|---|---|---|---|"]
        for b, s in latency["speedup"].items():
            lines.append(f"| {b} | {latency['dense']['batches'][b]['ms_per_batch']:.2f} | "
                         f"{latency['pruned']['batches'][b]['ms_per_batch']:.2f} | {s:.2f}x |")
    if heatmap:
        lines += ["", f"![heads and FFN kept per layer]({HEATMAP})"]
    return "\n".join(lines) + "\n"
