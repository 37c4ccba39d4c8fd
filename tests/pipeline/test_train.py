"""End to end: ``tmkd.pipeline.train.run`` on composed configs (tiny models, CPU, offline)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import transformers
from _helpers import write_glue_pair
from omegaconf import OmegaConf

from tmkd.data import get_task, load_splits
from tmkd.pipeline.train import run

pytestmark = pytest.mark.slow

QUIET = ["trainer.enable_progress_bar=false"]
# A plumbing run: a few batches, one epoch, no export (the quickstart test covers learning and export).
SHORT = [*QUIET, "data.max_train_samples=48", "data.max_eval_samples=32", "data.batch_size=16",
         "trainer.max_epochs=1", "checkpoint.export=false"]


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_a_tiny_finetune_learns_and_exports_a_usable_model(compose_cfg, tmp_path):
    out = tmp_path / "finetune_quick"
    cfg = compose_cfg(["experiment=finetune_quick", "logger=none", *QUIET], output_dir=out)
    assert cfg.experiment_name == "finetune_quick" and cfg.paths.output_dir == str(out)

    score = run(cfg)["best"]["val/accuracy"]

    metrics = read_metrics(out)
    assert score == pytest.approx(metrics["best"]["val/accuracy"])
    assert score >= 0.65, f"quickstart val accuracy {score:.3f}: the tiny model did not learn the synthetic task"
    assert metrics["experiment"] == "finetune_quick" and metrics["method"] == "finetune"
    assert metrics["task"] == "synth_pair" and metrics["train_examples"] == 2000
    assert metrics["epochs"] == cfg.trainer.max_epochs == 6
    assert 0 < metrics["params"] < 200_000
    assert (out / "checkpoints" / "best.ckpt").is_file()
    assert Path(metrics["best_checkpoint"]) == out / "checkpoints" / "best.ckpt"
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["tmkd_best"]["val/accuracy"] == pytest.approx(score)

    saved = OmegaConf.load(out / "config.yaml")
    assert saved.experiment_name == "finetune_quick" and saved.paths.output_dir == str(out)
    assert saved.trainer.max_epochs == 6 and saved.task.name == "synth_pair"
    assert "${" not in (out / "config.yaml").read_text()  # saved resolved

    # the export is the best checkpoint, and plain transformers can serve it
    export = out / "hf"
    assert metrics["export"] == str(export)
    pipe = transformers.pipeline("text-classification", model=str(export), device="cpu")
    task = get_task("synth_pair", synthetic=OmegaConf.to_container(cfg.task.synthetic))
    val = load_splits(task)["validation"]
    first = val[0]
    (pred,) = pipe([{"text": first["sentence1"], "text_pair": first["sentence2"]}])
    assert pred["label"] in task.label_names
    preds = pipe([{"text": a, "text_pair": b} for a, b in zip(val["sentence1"], val["sentence2"], strict=True)],
                 batch_size=100)
    accuracy = sum(p["label"] == task.label_names[y] for p, y in zip(preds, val["label"], strict=True)) / len(val)
    assert accuracy == pytest.approx(score, abs=0.01)


@pytest.fixture
def wandb_without_key(tmp_path, monkeypatch):
    """No WANDB_MODE, no key, a HOME without ~/.netrc; any W&B run left active is finished afterwards."""
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    yield
    if wandb.run is not None:
        wandb.finish()


def test_wandb_logger_runs_offline_without_an_api_key(compose_cfg, tmp_path, wandb_without_key):
    out = tmp_path / "wandb_run"
    cfg = compose_cfg(["logger=wandb", "run_name=offline-test", *SHORT], output_dir=out)
    assert cfg.logger.offline is None  # nothing forces offline: it must follow from the missing key

    score = run(cfg)["best"]["val/accuracy"]

    assert 0.0 <= score <= 1.0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, sorted(p.name for p in (out / "wandb").iterdir())
    assert any(runs[0].glob("*.wandb"))
    assert read_metrics(out)["run_name"] == "offline-test"


def test_each_run_in_one_process_gets_its_own_wandb_run(compose_cfg, tmp_path, wandb_without_key):
    for name in ("first", "second"):
        run(compose_cfg(["logger=wandb", f"run_name={name}", *SHORT], output_dir=tmp_path / name))
    assert len(list((tmp_path / "second" / "wandb").glob("offline-run-*"))) == 1


def test_csv_logger_writes_metrics_csv(compose_cfg, tmp_path):
    out = tmp_path / "csv_run"
    cfg = compose_cfg(["logger=csv", "trainer.log_every_n_steps=1", *SHORT], output_dir=out)
    run(cfg)
    files = list(out.rglob("metrics.csv"))
    assert len(files) == 1
    with files[0].open() as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    assert {"val/accuracy", "train/loss", "best/val/accuracy"} <= columns
    logged = [float(r["val/accuracy"]) for r in rows if r.get("val/accuracy")]
    assert logged and all(0.0 <= v <= 1.0 for v in logged)
    assert not (out / "hf").exists()  # checkpoint.export=false


def test_finetune_on_local_rte_parquet(compose_cfg, tmp_path):
    data = write_glue_pair(tmp_path / "data", "rte", n_train=80, n_eval=40)
    out = tmp_path / "rte_run"
    cfg = compose_cfg(["experiment=finetune_rte", "model=tiny", "model.tokenizer=synthetic", "trainer=cpu",
                       f"data.dir={data}", "logger=none", "trainer.max_epochs=2", "data.batch_size=16", *QUIET],
                      output_dir=out)
    assert cfg.experiment_name == "finetune_rte" and cfg.task.name == "rte"

    score = run(cfg)["best"]["val/accuracy"]

    metrics = read_metrics(out)
    assert metrics["task"] == "rte" and metrics["train_examples"] == 80 and metrics["epochs"] == 2
    assert 0.0 <= score <= 1.0
    saved = OmegaConf.load(out / "config.yaml")
    assert saved.data.dir == str(data)
    exported = transformers.AutoConfig.from_pretrained(out / "hf")
    assert exported.id2label == {0: "entailment", 1: "not_entailment"}
    assert exported.num_hidden_layers == 2  # the tiny model, not the experiment's MiniLM


@pytest.mark.parametrize("experiment", ["finetune_quick", "finetune_quick_qa_v2"])
def test_a_best_last_epoch_is_not_validated_twice(compose_cfg, tmp_path, monkeypatch, experiment):
    """When the best checkpoint is the model validated last (here: one epoch), its scores and QA files are those of
    that validation: no second dev pass, and the same numbers a fresh validation of best.ckpt gives."""
    import pytorch_lightning as pl

    from tmkd.pipeline.factory import build_datamodule, build_module, build_task

    passes = []
    validate = pl.Trainer.validate
    monkeypatch.setattr(pl.Trainer, "validate", lambda self, *a, **k: passes.append(1) or validate(self, *a, **k))
    out = tmp_path / "run"
    cfg = compose_cfg([f"experiment={experiment}", "logger=none", *SHORT], output_dir=out)
    metrics = run(cfg)
    assert passes == []
    assert {"val/f1", "val/exact"} <= set(metrics["best"]) if "qa" in experiment else "val/accuracy" in metrics["best"]

    task = build_task(cfg)  # the check: validate best.ckpt in a fresh module
    module, tokenizers = build_module(cfg, task)
    state = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (fresh,) = validate(trainer, module, datamodule=build_datamodule(cfg, task, tokenizers), verbose=False)
    assert metrics["best"] == pytest.approx({k: v for k, v in fresh.items() if "_best" not in k}, abs=1e-5)
    if "qa" in experiment:
        assert json.loads((out / "predictions.json").read_text()) == module.eval_outputs()["predictions.json"]
