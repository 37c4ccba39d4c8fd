"""``method: adapter`` through the plan runner: features computed once, the adapter learns, ensembling, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import plan_for
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tmkd.models.adapter import AdapterClassifier, load_adapter
from tmkd.models.adapter_student import AdapterStudent
from tmkd.modules.adapter import AdapterSettings, EnsembleWith, encoder_reference
from tmkd.modules.base import StageModule
from tmkd.pipeline.factory import build_datamodule, build_module, build_task
from tmkd.pipeline.runner import run_plan

TRAIN, DEV, FEATURE_BATCH = 2000, 200, 64  # the quick teacher (the frozen encoder) needs its 2000 rows, 6 epochs
SMALL = [f"data.max_train_samples={TRAIN}", f"data.max_eval_samples={DEV}", "stages.adapter.trainer.max_epochs=3",
         "logger=none",
         "trainer.enable_progress_bar=false", "report.latency=false", f"adapter.feature_batch_size={FEATURE_BATCH}"]


def metrics_of(run) -> dict:
    return json.loads((run.out_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_adapter_quick_plan_features_once_learns_ensembles_and_exports():
    plan = plan_for("experiment=adapter_quick", *SMALL)
    assert [r.name for r in plan.runs.values()] == ["encoder", "adapter"]
    run_plan(plan, report_options={"latency": False})
    encoder_run, adapter_run = plan.runs["encoder"], plan.runs["adapter"]
    got = metrics_of(adapter_run)

    # the feature pass: one encoder pass per batch of each split, for three epochs and a final validation
    expected_passes = math.ceil(TRAIN / FEATURE_BATCH) + math.ceil(DEV / FEATURE_BATCH)
    assert got["method"] == "adapter" and got["epochs"] == 3
    assert got["encoder_forward_batches"] == expected_passes
    assert got["feature_cache"] == {"hits": 0, "misses": 2} and got["feature_seconds"] > 0
    assert got["params"] == got["adapter"]["trainable_params"] < 20_000  # the adapter alone, not the encoder

    # the adapter beats the majority class (the frozen encoder is the quick fine-tuned teacher)
    config = OmegaConf.create(adapter_run.config)
    task = build_task(config)
    module, views = build_module(config, task)
    dm = build_datamodule(config, task, views)
    labels = np.asarray(dm.raw["validation"]["label"])
    majority = max(np.mean(labels == k) for k in range(task.num_labels))
    accuracy = got["best"]["val/accuracy"]
    assert accuracy >= majority + 0.1, (accuracy, majority)

    # a second run with another adapter (new hash, new folder) reads every feature from the cache
    again = plan_for("experiment=adapter_quick", *SMALL, "adapter.projection_size=16")
    assert {r.name: r.status for r in again.runs.values()} == {"encoder": "done", "adapter": "run"}
    run_plan(again, report_options={"latency": False})
    second = metrics_of(again.runs["adapter"])
    assert second["encoder_forward_batches"] == 0 and second["feature_cache"] == {"hits": 2, "misses": 0}
    assert dm.store.encoder.forward_batches == 0  # the datamodule just built read the cache as well

    # the adapter is a student of the one training module; its ensemble is a callback (an extra) of it
    assert type(module) is StageModule and isinstance(module.model, AdapterStudent)
    assert module.teachers is None and module.objective.names() == ["ce"]
    (ensemble,) = [e for e in module.extras if isinstance(e, EnsembleWith)]
    assert ensemble in module.configure_callbacks()
    # the best checkpoint back in a module: ensemble logits are the weighted mean, and match metrics.json
    state = torch.load(got["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    module.eval()
    dev = ensemble.dev_logits(module, "validation", dm)
    weight = got["ensemble"]["weight"]
    assert weight == 0.5 and got["ensemble"]["with"] == str(encoder_run.out_dir)
    torch.testing.assert_close(dev["ensemble"], weight * dev["adapter"] + (1 - weight) * dev["model"])
    for who in ("adapter", "model", "ensemble"):
        acc = float((dev[who].argmax(-1) == torch.as_tensor(labels)).float().mean())
        assert got["ensemble"][who]["val/accuracy"] == pytest.approx(acc, abs=1e-6), who
    assert got["ensemble"]["adapter"]["val/accuracy"] == pytest.approx(accuracy, abs=1e-6)

    # "model" is the fine-tuned teacher itself, run on the raw dev texts
    texts = [list(dm.raw["validation"][c]) for c in task.text_columns]
    teacher_dir = encoder_run.out_dir / "hf"
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    with torch.no_grad():
        enc = tok(*texts, truncation=True, max_length=module.model.max_length, padding=True, return_tensors="pt")
        direct = teacher(**enc).logits
    torch.testing.assert_close(dev["model"], direct, atol=1e-4, rtol=1e-4)

    # the export (a tmkd predictor in <run>/hf) predicts what the module predicts; only fp16 features differ
    export = Path(got["export"])
    assert export == adapter_run.out_dir / "hf" and load_adapter(export).encoder == str(encoder_run.out_dir.resolve())
    clf = AdapterClassifier.from_pretrained(export)
    pairs = list(zip(*texts, strict=True))
    predicted = clf.logits(pairs)
    torch.testing.assert_close(predicted, dev["adapter"], atol=2e-2, rtol=0)
    assert (predicted.argmax(-1) == dev["adapter"].argmax(-1)).float().mean() >= 0.99
    assert {o["label"] for o in clf(pairs[:20])} <= set(task.label_names)


def test_settings_and_encoder_checks(compose_cfg):
    with pytest.raises(ValueError, match="unknown adapter option"):
        AdapterSettings.from_config({"projection": 8})
    with pytest.raises(ValueError, match="ensemble_weight"):
        AdapterSettings(ensemble_weight=1.5)
    cfg = compose_cfg(["~experiment", "fragment=adapter_head_quick"])
    assert cfg.method == "adapter" and cfg.adapter.encoder is None and cfg.model.name_or_path is None
    with pytest.raises(ValueError, match="pretrained frozen encoder"):  # a tiny random model has no name to export
        encoder_reference(cfg, AdapterSettings.from_config(OmegaConf.to_container(cfg.adapter)))
    named = compose_cfg(["~experiment", "fragment=adapter_head_quick", "adapter.encoder=/some/run"])
    assert encoder_reference(named, AdapterSettings.from_config(OmegaConf.to_container(named.adapter))) == "/some/run"


def test_span_adapters_refuse_distillation_before_loading_the_encoder(compose_cfg):
    for option in ("adapter.distill=true", "adapter.ensemble_with=/some/run"):
        cfg = compose_cfg(["experiment=adapter_squad_v2", option])
        with pytest.raises(ValueError, match="not supported for span"):
            build_module(cfg, build_task(cfg))
