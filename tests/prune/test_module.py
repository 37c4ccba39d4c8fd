"""The pruning add-on (``prune`` node, PruneCallback) through the plan runner: prune_quick end to end, its export,
report, density and resume; and pruning a many-to-many stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from _helpers import plan_for
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification

import tmkd.prune  # noqa: F401  (registers tmkd_pruned_bert with the Auto classes)
from tmkd.data.tasks import get_task
from tmkd.modules.pruning import PruneCallback
from tmkd.pipeline.addons import build_addons
from tmkd.pipeline.factory import build_module, build_task
from tmkd.pipeline.runner import run_plan
from tmkd.prune import PruningConfig, TmkdPrunedBertForSequenceClassification
from tmkd.prune.config import PruneSettings
from tmkd.prune.masks import topk_count
from tmkd.prune.report import report_markdown

SMALL = ["data.max_train_samples=256", "data.max_eval_samples=96", "logger=none",
         "trainer.enable_progress_bar=false", "report.latency=false"]


def test_settings_from_node_reject_unknown_keys_and_bad_fractions() -> None:
    s = PruneSettings.from_node({"mask": "sigmoid", "target_density": 0.3, "score_lr": 0.05,
                                 "final_finetune_fraction": 0.1}, {"latency": False, "batch_sizes": [1]})
    assert s.pruning == PruningConfig(mask="sigmoid", target_density=0.3)
    assert (s.score_lr, s.final_finetune_fraction, s.latency, s.batch_sizes) == (0.05, 0.1, False, (1,))
    with pytest.raises(ValueError, match="unknown prune keys"):
        PruneSettings.from_node({"target_densty": 0.3})
    with pytest.raises(ValueError, match=r"prune\.method is now prune\.mask"):
        PruneSettings.from_node({"method": "sigmoid"})
    with pytest.raises(ValueError, match="final_finetune_fraction"):
        PruneSettings.from_node({"final_finetune_fraction": 1.0})


@pytest.mark.slow
def test_prune_quick_end_to_end_export_report_and_density() -> None:
    plan = plan_for("experiment=prune_quick", *SMALL, "trainer.max_epochs=3",
                    "stages.pruned.prune.final_finetune_fraction=0.34", "stages.pruned.prune.dense_eval=true")
    assert [r.name for r in plan.selected()][-1] == "pruned"
    results = run_plan(plan)
    run_dir = plan.runs["pruned"].out_dir
    metrics = results["pruned"]
    assert metrics["method"] == "many_to_one"
    report = json.loads((run_dir / "prune_report.json").read_text())
    assert report == json.loads(json.dumps(metrics["prune"], default=str))

    # the density at the end of the schedule (before the fill) is the target, to the block, in every matrix
    before = report["density_before_fill"]
    cfg = json.loads(json.dumps(plan.runs["pruned"].config["prune"]))
    target, block = cfg["target_density"], cfg["block_size"]
    hidden, units = 64, 128
    attn_blocks = (hidden // block) ** 2
    for layer in before["layers"]:
        assert layer["attention_density"] == pytest.approx(topk_count(target, attn_blocks) / attn_blocks)
        assert layer["ffn_units_kept"] == topk_count(target, units)
    assert before["overall"] == pytest.approx(target, abs=1.0 / attn_blocks)

    # the export is the compacted model: fewer parameters, layer shapes of what survived
    hf = run_dir / "hf"
    config = json.loads((hf / "config.json").read_text())
    assert config["model_type"] == "tmkd_pruned_bert"
    model = AutoModelForSequenceClassification.from_pretrained(hf).eval()
    assert isinstance(model, TmkdPrunedBertForSequenceClassification)
    dense = BertForSequenceClassification.from_pretrained(plan.runs["dense"].out_dir / "hf")
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters())
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    final = report["density"]["layers"]
    for i, layer in enumerate(model.bert.encoder.layer):
        assert layer.attention.self.query.weight.shape == (final[i]["heads_kept"] * 32, hidden)
        assert layer.intermediate.dense.weight.shape == (final[i]["ffn_units_kept"], hidden)
        assert final[i]["ffn_units_kept"] == topk_count(target, units)  # the fill keeps FFN units as they were
    assert report["pruned"]["params"] < report["dense"]["params"]
    assert report["pruned"]["value"] == pytest.approx(metrics["best"]["val/accuracy"])
    assert report["dense"]["value"] is not None
    assert (run_dir / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "heads kept" in (run_dir / "prune_report.md").read_text()

    # the best checkpoint was chosen among epochs with the final structure; it loads with the pipeline
    ckpt = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["tmkd_prune"]["filled"]
    clf = transformers.pipeline("text-classification", model=str(hf), device="cpu")
    assert clf([{"text": "a b", "text_pair": "c"}])[0]["label"] in model.config.label2id

    # the exported model computes what the masked model computed (the best checkpoint, loaded into the module)
    module = _pruned_module(_run_config(run_dir), ckpt)
    tok = AutoTokenizer.from_pretrained(hf)
    enc = tok(["a b c d", "e f"], ["g h", "i j k l m"], padding=True, return_tensors="pt")
    with torch.no_grad():
        masked = module.model(**enc).logits
        exported = model(**enc).logits
    torch.testing.assert_close(exported, masked, atol=1e-4, rtol=0)


def _run_config(run_dir: Path):
    from omegaconf import OmegaConf

    return OmegaConf.load(run_dir / "config.yaml")


def _pruned_module(run_cfg, ckpt):
    """The run's module with its pruning attached and the checkpoint loaded (filled masks made on the way)."""
    task = build_task(run_cfg)
    module, _ = build_module(run_cfg, task)
    [callback] = build_addons(run_cfg, task, module)
    assert isinstance(callback, PruneCallback)
    callback.attach(module)
    module.load_state_dict(ckpt["state_dict"])
    assert callback.pruner.filled == ckpt["tmkd_prune"]["filled"]
    return module.eval()


@pytest.mark.slow
def test_resume_from_a_filled_checkpoint(tmp_path: Path) -> None:
    """last.ckpt of an attached, filled module has parametrized keys; Lightning restores it into a fresh module
    (attached in setup, filled in on_load_checkpoint) and the run ends with the same metrics."""
    from omegaconf import open_dict

    from tmkd.pipeline.train import run

    plan = plan_for("fragment=prune_quick_stage", *SMALL, "trainer.max_epochs=2",
                    "prune.final_finetune_fraction=0.5", "prune.dense_eval=false")
    first = run_plan(plan)["main"]
    run_dir = plan.runs["main"].out_dir
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["tmkd_prune"]["filled"]
    assert any(k.endswith("parametrizations.weight.original") for k in last["state_dict"])
    assert any(k.endswith("parametrizations.weight.0.fixed") for k in last["state_dict"])

    cfg = _run_config(run_dir)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "resumed")
    resumed = run(cfg, ckpt_path=run_dir / "checkpoints" / "last.ckpt")
    assert resumed["best"]["val/accuracy"] == pytest.approx(first["best"]["val/accuracy"])
    assert resumed["prune"]["density"] == first["prune"]["density"]
    assert resumed["params"] == first["params"]


def test_report_markdown_lists_layers_and_speedup() -> None:
    layers = [{"layer": 0, "attention_density": 0.5, "heads_kept": 1, "heads_total": 2, "ffn_density": 0.25,
               "ffn_units_kept": 32, "ffn_units_total": 128}]
    batch = {"ms_per_batch": 2.0}
    env = {"threads": 1, "cpu": "cpu", "torch": "2", "rows": 8}
    md = report_markdown({
        "mask": "topk", "block_size": 16, "target": {"attention": 0.25, "ffn": 0.25}, "final_finetune_fraction": 0.2,
        "density": {"layers": layers, "overall": 0.3}, "density_before_fill": {"layers": layers, "overall": 0.25},
        "metric": "val/accuracy", "pruned": {"value": 0.8, "params": 10, "size_bytes": 2**20, "heads": 1},
        "dense": {"value": 0.9, "params": 20, "size_bytes": 2**21, "heads": 2},
        "latency": {"dense": {"batches": {"1": {"ms_per_batch": 4.0}}, "env": env},
                    "pruned": {"batches": {"1": batch}, "env": env}, "speedup": {"1": 2.0}},
    }, heatmap=False)
    assert "| 0 | 0.500 | 1/2 | 0.250 | 32/128 |" in md
    assert "| 1 | 4.00 | 2.00 | 2.00x |" in md
    assert get_task("synth_pair").main_metric == "accuracy"


@pytest.mark.slow
@pytest.mark.parametrize(("experiment", "method", "extra"), [
    ("m_o_m_quick", "many_to_many", ["distill.use_teachers=[tiny_s1,tiny_s2]"]),
    ("finetune_quick", "finetune", []),
])
def test_prune_add_on_prunes_any_method(experiment: str, method: str, extra: list[str]) -> None:
    """`+prune=default` on a stage of another method prunes it: the scores are their own optimizer group, the
    density reaches the target, and the export is the compacted model computing what the masked module predicted
    (for many-to-many: the mean of its per-teacher heads, folded into one classifier)."""
    plan = plan_for(f"experiment={experiment}", "+prune=default", "prune.block_size=16", "prune.target_density=0.5",
                    "prune.final_finetune_fraction=0.5", "prune.dense_eval=false", "prune.score_lr=0.02",
                    "data.max_train_samples=64", "data.max_eval_samples=32", "trainer.max_epochs=2", *extra,
                    "logger=none", "trainer.enable_progress_bar=false", "report.latency=false")
    metrics = run_plan(plan, report=False)["main"]
    run_dir = plan.runs["main"].out_dir
    assert metrics["method"] == method
    report = metrics["prune"]
    assert report == json.loads((run_dir / "prune_report.json").read_text())
    assert report["density_before_fill"]["overall"] == pytest.approx(0.5, abs=0.1)

    ckpt = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["tmkd_prune"]["filled"]
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert len(groups) == 3 and (groups[-1]["initial_lr"], groups[-1]["weight_decay"]) == (0.02, 0.0)

    hf = run_dir / "hf"
    exported = AutoModelForSequenceClassification.from_pretrained(hf).eval()
    assert isinstance(exported, TmkdPrunedBertForSequenceClassification)
    assert metrics["params"] == sum(p.numel() for p in exported.parameters())
    module = _pruned_module(_run_config(run_dir), ckpt)
    tok = AutoTokenizer.from_pretrained(hf)
    enc = tok(["a b c d", "e f"], ["g h", "i j k l m"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(exported(**enc).logits, module(dict(enc)), atol=1e-4, rtol=0)
