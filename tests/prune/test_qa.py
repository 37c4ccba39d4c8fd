"""Pruning (the ``prune`` add-on) on extractive QA: compacted-export parity of start/end logits, prune_quick_qa end to
end through the plan runner (span distillation, EM / F1, report, latency, export that answers), and the prune_squad
plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _helpers import plan_for
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertForQuestionAnswering

import tmkd  # noqa: F401  (what a user imports: registers tmkd_pruned_bert with the Auto classes)
from tmkd.cli import prepare_argv
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.plan import build_plan
from tmkd.prune import Pruner, PruningConfig, TmkdPrunedBertForQuestionAnswering, compact, encoder_layers

SMALL = ["data.max_train_samples=256", "data.max_eval_samples=64", "trainer.max_epochs=3", "logger=none",
         "trainer.enable_progress_bar=false", "report.latency_rows=8", "report.batch_sizes=[1,4]"]


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _spans(model: torch.nn.Module, enc) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(**enc)
    return out.start_logits, out.end_logits


def test_pruned_qa_model_exports_to_the_same_start_end_logits(tiny_config, make_model, batch, tmp_path):
    """Masked (sparse-in-dense, then hybrid-filled) QA model == its compacted export reloaded through
    AutoModelForQuestionAnswering; dead heads and FFN units are really gone."""
    tiny_config.num_labels = 2
    model = make_model(BertForQuestionAnswering).eval()
    dense_params = _count(model)
    cfg = PruningConfig(block_size=16, target_density=0.25, total_steps=10, warmup_steps=0, cooldown_steps=0,
                        score_init="uniform", score_init_scale=1.0)
    pruner = Pruner(model, cfg).attach()
    pruner.step(10)
    for stage in ("masked", "filled"):
        if stage == "filled":
            pruner.fill()
        ref = _spans(model, batch)
        small = compact(model).eval()
        assert type(small) is TmkdPrunedBertForQuestionAnswering
        small.save_pretrained(tmp_path / stage)
        loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path / stage).eval()
        assert type(loaded) is TmkdPrunedBertForQuestionAnswering
        for got, want in zip(_spans(loaded, batch), ref, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        report = pruner.density_report()
        assert loaded.config.heads_per_layer == [d.heads_kept for d in report.layers]
        assert loaded.config.intermediate_sizes == [d.ffn_units_kept for d in report.layers]
        for layer, d in zip(encoder_layers(loaded), report.layers, strict=True):
            assert layer.query.weight.shape == (d.heads_kept * 16, 64)
            assert layer.intermediate.weight.shape == (d.ffn_units_kept, 64)
        assert _count(loaded) < dense_params
        assert sum(loaded.config.intermediate_sizes) == 2 * 32  # 25% of 128 units per layer


@pytest.mark.slow
def test_prune_quick_qa_end_to_end_report_and_export_parity() -> None:
    from tmkd.data.loading import load_splits
    from tmkd.data.tasks import get_task
    from tmkd.models.qa_answer import QuestionAnswerer
    from tmkd.pipeline.addons import build_addons
    from tmkd.pipeline.factory import build_module, build_task
    from tmkd.pipeline.runner import run_plan
    from tmkd.pipeline.train import optimized

    plan = plan_for("experiment=prune_quick_qa", *SMALL)
    assert [r.name for r in plan.selected()] == ["dense", "tiny_s1", "tiny_vocab7", "pruned"]
    results = run_plan(plan, report=False)
    run_dir = plan.runs["pruned"].out_dir
    metrics = results["pruned"]
    assert (metrics["method"], metrics["task"]) == ("many_to_one", "synth_qa")
    assert set(metrics["teachers"]) == {"tiny_s1", "tiny_vocab7"}  # distilled from both (one cross-tokenizer)
    assert optimized(metrics, plan.runs["pruned"].config["optimized_metric"]) == metrics["best"]["val/f1"]

    report = json.loads((run_dir / "prune_report.json").read_text())
    assert report == json.loads(json.dumps(metrics["prune"], default=str))
    assert (report["kind"], report["metric"], report["metrics"]) == ("qa", "val/f1", ["val/f1", "val/exact"])
    assert report["pruned"]["scores"] == pytest.approx({k: metrics["best"][k] for k in ("val/f1", "val/exact")})
    dense_f1 = results["dense"]["best"]["val/f1"]  # the dense run's own score: same evaluator, same dev rows
    assert report["dense"]["value"] == pytest.approx(dense_f1, abs=1e-4)
    assert report["dense"]["scores"]["val/exact"] == pytest.approx(results["dense"]["best"]["val/exact"], abs=1e-4)
    assert report["density_before_fill"]["overall"] == pytest.approx(0.25, abs=1.0 / 16)
    assert report["pruned"]["params"] < report["dense"]["params"]
    latency = report["latency"]
    assert set(latency["speedup"]) == {"1", "4"} and all(s > 0 for s in latency["speedup"].values())
    assert latency["inputs"]["columns"] == ["question", "context"] and latency["inputs"]["rows"] == 8
    md = (run_dir / "prune_report.md").read_text()
    assert "| model | val/f1 | val/exact |" in md and "(question, context)" in md
    assert (run_dir / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((run_dir / "predictions.json").read_text())) == 64

    # the export: a compacted QA model through AutoModelForQuestionAnswering
    hf = run_dir / "hf"
    assert json.loads((hf / "config.json").read_text())["architectures"] == ["TmkdPrunedBertForQuestionAnswering"]
    exported = AutoModelForQuestionAnswering.from_pretrained(hf).eval()
    assert isinstance(exported, TmkdPrunedBertForQuestionAnswering)
    assert metrics["params"] == _count(exported)

    # ... computing what the masked model of the best checkpoint computed
    ckpt = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["tmkd_prune"]["filled"]
    from omegaconf import OmegaConf

    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    task = build_task(run_cfg)
    module, _ = build_module(run_cfg, task)
    [callback] = build_addons(run_cfg, task, module)
    callback.attach(module)
    module.load_state_dict(ckpt["state_dict"])  # a filled checkpoint: the pruner fills first, then it loads
    assert callback.pruner.filled
    module.eval()
    rows = load_splits(get_task("synth_qa"), max_eval_samples=12)["validation"]
    tok = AutoTokenizer.from_pretrained(hf)
    enc = tok(list(rows["question"]), list(rows["context"]), truncation="only_second", max_length=64, padding=True,
              return_tensors="pt")
    for got, want in zip(_spans(exported, enc), _spans(module.model, enc), strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    ask_export = QuestionAnswerer(hf, max_length=64, doc_stride=16)
    ask_masked = QuestionAnswerer(module.model, tokenizer=tok, max_length=64, doc_stride=16)
    for r in rows:
        assert ask_export(question=r["question"], context=r["context"])["answer"] == \
            ask_masked(question=r["question"], context=r["context"])["answer"]


@pytest.mark.parametrize(("experiment", "task", "teachers"), [
    ("prune_squad", "squad", ["squad_minilm_s42", "squad_minilm_s7"]),
    ("prune_squad_v2", "squad_v2", ["squad2_minilm_s42", "squad2_minilm_s7"]),
])
def test_prune_squad_plan_trains_nothing(experiment, task, teachers, capsys, tmp_path) -> None:
    """`python -m tmkd.run experiment=prune_squad plan=true data.dir=../shared/data`, minus Hydra's entry point."""
    from tmkd.pipeline.runner import run_experiment

    overrides = prepare_argv([f"experiment={experiment}", "plan=true", "data.dir=../shared/data"])
    assert run_experiment(compose_run(overrides), overrides) is None
    shown = capsys.readouterr().out
    assert f"Plan for experiment '{experiment}'" in shown and "4 of 4 runs to do" in shown
    plan = build_plan(compose_run(overrides), overrides)
    assert list(plan.runs) == ["dense", *teachers, "pruned"] and plan.final == "pruned"
    dense, pruned = plan.runs["dense"], plan.runs["pruned"]
    assert plan.runs[teachers[0]].out_dir == dense.out_dir  # the dense stage is teacher s42's run, trained once
    assert set(pruned.needs) == {"dense", *teachers}
    cfg = pruned.config
    assert (cfg["method"], cfg["task"]["name"], cfg["optimized_metric"]) == ("many_to_one", task, "val/f1")
    assert [t["name"] for t in cfg["distill"]["teachers"]] == teachers
    assert Path(cfg["model"]["name_or_path"]).name == dense.out_dir.name  # init_from: the dense stage's run
    assert dense.config["model"]["name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (cfg["prune"]["block_size"], cfg["prune"]["target_density"]) == (32, 0.3)
    assert dense.config["task"]["name"] == task and dense.config["method"] == "finetune"
    assert not any(Path(r.out_dir).exists() for r in plan.runs.values())  # nothing trained, nothing written
