"""A stage on unlabelled text (task.train_labelled=false): teachers' soft targets only, no label ever read, and
every gold-label objective refused with the setting named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from tmkd.data import STUDENT, TaskDataModule, get_task
from tmkd.data.synthetic import generate
from tmkd.distill.aggregators import build_aggregator
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.models import ModelSpec, build_classifier
from tmkd.modules import FineTuneModule, OptimConfig
from tmkd.modules.distill import DistillConfig, check_label_free, distillation_module
from tmkd.pipeline.factory import build_module, build_task

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}
QNLI_UNLABELLED = get_task("qnli", train_labelled=False, max_length=48)


def write_qnli(root: Path, train_labels: str) -> Path:
    """QNLI-shaped files of synthetic words; the train labels are real, garbage, flipped or absent."""
    folder = root / "glue" / "qnli"
    folder.mkdir(parents=True)
    for split, n, seed in (("train", 96, 0), ("validation", 48, 1)):
        rows = generate(2, n, seed, 0.0)
        df = pd.DataFrame({"question": [r["first"] for r in rows], "sentence": [r["second"] for r in rows],
                           "label": [r["label"] for r in rows], "idx": range(n)})
        if split == "train" and train_labels == "garbage":
            df["label"] = ["zzz", "", "7", "-3"] * (n // 4)  # not even numbers
        elif split == "train" and train_labels == "flipped":
            df["label"] = 1 - df["label"]
        elif split == "train" and train_labels == "absent":
            df = df.drop(columns="label")
        df.to_parquet(folder / f"{split}.parquet", index=False)
    return root


@pytest.fixture(scope="module")
def teacher_dirs(tmp_path_factory) -> list[Path]:
    """Two random tiny teachers (labelling needs no trained teacher), the second with its own tokenizer."""
    out = []
    for seed, tok in ((1, "synthetic"), (2, "synthetic:7")):
        pl.seed_everything(seed)
        model, tokenizer = build_classifier(ModelSpec(tiny=TINY, tokenizer=tok), QNLI_UNLABELLED)
        folder = tmp_path_factory.mktemp(f"teacher{seed}")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        out.append(folder)
    return out


def distil(teacher_dirs: list[Path], data_dir: Path, cache_dir: Path, heads: bool = False,
           aggregator: str = "mean"):
    pl.seed_everything(0)
    student, tok = build_classifier(ModelSpec(tiny=TINY), QNLI_UNLABELLED)
    members = []
    for i, path in enumerate(teacher_dirs):
        model, t_tok = build_classifier(ModelSpec(name_or_path=str(path)), QNLI_UNLABELLED)
        members.append(Teacher(f"t{i}", model, t_tok, 1.0, str(path)))
    ensemble = TeacherEnsemble(members, QNLI_UNLABELLED)
    ensemble.assign_views(STUDENT, tok)
    module = distillation_module(student, QNLI_UNLABELLED, OptimConfig(lr=2e-3), ensemble,
                                 DistillConfig(alpha=1.0, cache=True, cache_dir=str(cache_dir)),
                                 build_aggregator(aggregator), per_teacher_heads=heads)
    dm = TaskDataModule(QNLI_UNLABELLED, {STUDENT: tok}, data_dir=str(data_dir), batch_size=16)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    return module, dm, trainer


def test_unlabelled_training_never_reads_a_label(teacher_dirs, tmp_path):
    cache = tmp_path / "soft_targets"
    runs = {}
    for labels in ("real", "garbage", "flipped", "absent"):
        module, dm, trainer = distil(teacher_dirs, write_qnli(tmp_path / labels, labels), cache)
        runs[labels] = (module, dm, trainer)
    module, dm, trainer = runs["real"]
    assert "label" not in dm.raw["train"].column_names and "labels" not in dm.encoded["train"].column_names
    assert "labels" not in next(iter(dm.train_dataloader())) and "labels" in next(iter(dm.val_dataloader()[0]))
    assert "train/kd" in trainer.logged_metrics and "train/ce" not in trainer.logged_metrics
    # the teachers label the train split once (2 teachers x train + validation)
    assert module.teachers.store.misses == 4
    reference = module.model.state_dict()
    for labels in ("garbage", "flipped", "absent"):
        other = runs[labels][0]
        store = other.teachers.store
        assert store.hits == 4 and store.misses == 0  # same texts, same soft-target cache entries
        for name, value in other.model.state_dict().items():
            assert torch.equal(value, reference[name]), f"{labels} labels changed {name}"


def test_many_to_many_trains_on_unlabelled_text_too(teacher_dirs, tmp_path):
    _, _, trainer = distil(teacher_dirs, write_qnli(tmp_path, "absent"), tmp_path / "c", heads=True)
    assert torch.isfinite(trainer.logged_metrics["train/loss"]) and "train/ce" not in trainer.logged_metrics


def test_gold_label_objectives_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"distill.alpha=0.5 .* train_labelled=false .* set distill.alpha=1.0"):
        check_label_free(QNLI_UNLABELLED, DistillConfig(alpha=0.5))
    with pytest.raises(ValueError, match=r"aggregator=confidence with measure=gold .* aggregator.measure=entropy"):
        check_label_free(QNLI_UNLABELLED, DistillConfig(alpha=1.0), build_aggregator("confidence"))
    with pytest.raises(ValueError, match=r"aggregator=best .* train_labelled=false"):
        check_label_free(QNLI_UNLABELLED, DistillConfig(alpha=1.0), build_aggregator("best"))
    check_label_free(QNLI_UNLABELLED, DistillConfig(alpha=1.0), build_aggregator("confidence", measure="entropy"))
    check_label_free(get_task("qnli"), DistillConfig(alpha=0.5), build_aggregator("best"))  # labelled: all fine
    model, _ = build_classifier(ModelSpec(tiny=TINY), QNLI_UNLABELLED)
    with pytest.raises(ValueError, match=r"method=finetune trains on gold labels.*train_labelled=false"):
        FineTuneModule(model, QNLI_UNLABELLED)


@pytest.mark.parametrize(("overrides", "message"), [
    (["experiment=finetune_quick"], r"method=finetune trains on gold labels, but task 'synth_pair' has "
                                    r"train_labelled=false"),
    (["~experiment", "fragment=adapter_head_quick"], r"method=adapter trains on gold labels"),
    (["experiment=m_o_1_quick"], r"distill.alpha=0.5 puts weight 0.5 on the gold-label CE"),
])
def test_a_run_config_using_gold_labels_on_unlabelled_text_fails_before_any_model_loads(compose_cfg, overrides,
                                                                                         message):
    cfg = compose_cfg([*overrides, "+task.train_labelled=false"])  # a TaskSpec field the yaml does not list
    with pytest.raises(ValueError, match=message):
        build_module(cfg, build_task(cfg))


def test_the_study_configs_say_unlabelled_and_soft_targets_only(compose_cfg):
    stage1 = compose_cfg(["experiment=tmkd_qnli_stage1"])
    assert build_task(stage1).train_labelled is False and stage1.distill.alpha == 1.0
    assert stage1.method == "many_to_one" and stage1.task.derived.source_split == "train"
    assert stage1.distill.teachers[0].run.experiment == "finetune_qnli"
    control = compose_cfg(["experiment=control_qnli"])
    assert control.stages.stage1.overrides == ["method=finetune", "task.train_labelled=true"]
    assert control.stages.stage2 == compose_cfg(["experiment=tmkd_qnli"]).stages.stage2  # the same stage 2


@pytest.mark.slow
def test_a_tiny_unlabelled_stage_end_to_end_through_the_plan():
    from tmkd.cli import prepare_argv
    from tmkd.pipeline import manifest
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import build_plan
    from tmkd.pipeline.runner import run_plan

    overrides = prepare_argv(["experiment=m_o_1_quick", "+task.train_labelled=false", "distill.alpha=1.0",
                              "data.max_train_samples=200", "data.max_eval_samples=100", "trainer.max_epochs=1",
                              "logger=csv", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
                              "report.latency=false"])
    plan = build_plan(compose_run(overrides), overrides)
    run_plan(plan)
    stage = plan.runs[plan.final]
    found = manifest.read(stage.out_dir)
    assert found["status"] == "done" and "val/accuracy" in found["metrics"]  # chosen on the labelled dev split
    logged = pd.read_csv(next(stage.out_dir.glob("csv/**/metrics.csv")))
    assert "train/kd" in logged.columns and "train/ce" not in logged.columns
