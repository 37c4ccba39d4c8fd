"""``method: adapter`` on a QA task: a span adapter on streamed states, trained through the QA fine-tune path."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tmkd.cli import prepare_argv
from tmkd.data import get_task
from tmkd.models.adapter import load_adapter, load_encoder
from tmkd.models.adapter_student import SpanAdapterStudent
from tmkd.models.adapter_teacher import AdapterForQuestionAnswering, find_adapter_export, load_adapter_teacher
from tmkd.models.build import ModelSpec, build_classifier
from tmkd.modules.base import StageModule
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.factory import build_datamodule, build_module, build_task
from tmkd.pipeline.plan import build_plan
from tmkd.pipeline.runner import run_plan

SMALL = ["data.max_train_samples=200", "data.max_eval_samples=60", "trainer.max_epochs=2", "logger=none",
         "trainer.enable_progress_bar=false", "report.latency=false", "data.batch_size=16"]


def _tiny_qa_encoder(tmp_path: Path) -> Path:
    model, tok = build_classifier(ModelSpec(tiny={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                                  "intermediate_size": 64, "max_position_embeddings": 128}),
                                  get_task("synth_qa"))
    folder = tmp_path / "encoder"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_quick_span_adapter_trains_only_the_adapter_and_exports_a_qa_teacher(tmp_path):
    encoder_dir = _tiny_qa_encoder(tmp_path)
    original = load_encoder(str(encoder_dir)).state_dict()  # the pooler a QA model lacks: zeroed
    overrides = prepare_argv(["fragment=adapter_head_quick_qa", f"adapter.encoder={encoder_dir}", *SMALL])
    plan = build_plan(compose_run(overrides), overrides)
    run_plan(plan, report=False)
    (run,) = plan.runs.values()
    got = json.loads((run.out_dir / "metrics.json").read_text())
    assert got["method"] == "adapter" and got["task"] == "synth_qa" and got["epochs"] == 2
    assert "val/f1" in got["best"] and (run.out_dir / "predictions.json").is_file()  # the QA path's outputs
    assert got["params"] == got["adapter"]["trainable_params"] < 20_000  # the adapter alone
    assert got["adapter"]["output"] == "spans" and got["encoder_forward_batches"] > 0  # states were streamed

    # the frozen encoder's weights are what they were (in the trained checkpoint), and only the adapter was optimised
    ckpt = torch.load(got["best_checkpoint"], map_location="cpu", weights_only=True)
    prefix = "model.model.encoder.model."
    frozen = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    assert frozen.keys() == original.keys()
    assert all(torch.equal(frozen[k], original[k]) for k in original)
    config = OmegaConf.create(run.config)
    task = build_task(config)
    module, views = build_module(config, task)
    assert type(module) is StageModule and isinstance(module.model, SpanAdapterStudent)
    assert isinstance(module.model, AdapterForQuestionAnswering)  # the QA teacher wrapper: the QA path applies
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.model.adapter.") for n in trainable)
    last = torch.load(run.out_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    optimised = sum(len(g["params"]) for g in last["optimizer_states"][0]["param_groups"])
    assert optimised == len(trainable)
    adapter_state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.model.adapter.")}
    assert any(not torch.equal(v, module.state_dict()[k]) for k, v in adapter_state.items())  # it did train

    # the export is an adapter export naming the encoder; as a QA teacher it gives the trained module's logits
    export = find_adapter_export(run.out_dir)
    assert export == run.out_dir / "hf" and Path(got["export"]) == export
    assert load_adapter(export).encoder == str(encoder_dir.resolve())
    teacher, _, source = load_adapter_teacher(export, task)
    assert isinstance(teacher, AdapterForQuestionAnswering) and "adapter" in source
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    dm = build_datamodule(config, task, views)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()[0]))
    inputs = batch["inputs"][module.view]
    with torch.no_grad():
        trained = module.predict_logits(inputs)
        loaded = module.kind.from_output(teacher(**inputs), inputs)
    torch.testing.assert_close(loaded, trained)


def test_adapter_quick_qa_plans_a_qa_encoder_then_a_span_adapter_on_it():
    overrides = prepare_argv(["experiment=adapter_quick_qa", *SMALL])
    plan = build_plan(compose_run(overrides), overrides)
    encoder, adapter = plan.runs["encoder"], plan.runs["adapter"]
    assert [r.name for r in plan.runs.values()] == ["encoder", "adapter"]
    assert encoder.config["method"] == "finetune" and adapter.config["method"] == "adapter"
    assert encoder.config["task"]["name"] == adapter.config["task"]["name"] == "synth_qa"
    assert adapter.config["model"]["name_or_path"] == str(encoder.out_dir)  # the frozen encoder: the QA fine-tune
