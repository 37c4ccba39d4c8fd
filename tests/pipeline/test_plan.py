"""The planner: which runs an experiment needs, where they go, and how overrides reach them (nothing trains)."""

from __future__ import annotations

import pytest
from _helpers import plan_for

from tmkd.pipeline import manifest
from tmkd.pipeline.plan import PlanError


def test_quickstart_plan_lists_teachers_before_the_stages_that_need_them(tmp_path):
    plan = plan_for("experiment=quickstart")
    names = list(plan.runs)
    assert names == ["nli_s1", "nli_s2", "nli_vocab7", "stage1", "tiny_s1", "tiny_s2", "tiny_vocab7", "stage2"]
    assert plan.final == "stage2"
    assert plan.runs["stage1"].needs == ["nli_s1", "nli_s2", "nli_vocab7"]
    assert plan.runs["stage2"].needs == ["stage1", "tiny_s1", "tiny_s2", "tiny_vocab7"]
    assert {r.status for r in plan.runs.values()} == {"run"}
    # stage 2 starts from stage 1's folder, and its teachers point at their runs' folders
    stage2 = plan.runs["stage2"].config
    assert stage2["model"]["name_or_path"] == str(plan.runs["stage1"].out_dir)
    assert stage2["model"]["tiny"] is None
    assert [t["name_or_path"] for t in stage2["distill"]["teachers"]] == \
        [str(plan.runs[n].out_dir) for n in ("tiny_s1", "tiny_s2", "tiny_vocab7")]
    text = plan.describe()
    for name in names:
        assert name in text
    assert "8 of 8 runs to do" in text and str(plan.experiment_dir / "report.md") in text


def test_experiment_wide_overrides_reach_every_run_and_addressed_ones_only_theirs():
    plan = plan_for("experiment=quickstart", "trainer.max_epochs=1", "data.max_train_samples=64", "seed=5",
                    "--stages.stage1.optim.lr", "0.01", "teachers.nli_s2.seed=9", "aggregator=confidence")
    for run in plan.runs.values():
        assert run.config["trainer"]["max_epochs"] == 1, run.name
        assert run.config["data"]["max_train_samples"] == 64, run.name
    lrs = {name: run.config["optim"]["lr"] for name, run in plan.runs.items()}
    assert lrs["stage1"] == 0.01 and all(lr != 0.01 for n, lr in lrs.items() if n != "stage1")
    # a teacher keeps the seed its declaration sets (an ensemble of seeds), unless addressed
    assert plan.runs["nli_s1"].config["seed"] == 1
    assert plan.runs["nli_s2"].config["seed"] == 9
    assert plan.runs["stage1"].config["seed"] == plan.runs["stage2"].config["seed"] == 5
    # other overrides reach the final stage only
    assert plan.runs["stage2"].config["distill"]["aggregator"]["name"] == "confidence"
    assert plan.runs["stage1"].config["distill"]["aggregator"]["name"] == "mean"


def test_any_trainer_argument_can_be_addressed_to_one_run_as_on_the_top_level():
    # check_val_every_n_epoch is not in configs/trainer: at the top level tmkd.cli adds Hydra's `+` for it
    plan = plan_for("experiment=quickstart", "stages.stage1.trainer.check_val_every_n_epoch=3",
                    "teachers.nli_s1.trainer.max_epochs=2")
    assert plan.runs["stage1"].config["trainer"]["check_val_every_n_epoch"] == 3
    assert "check_val_every_n_epoch" not in plan.runs["stage2"].config["trainer"]
    assert plan.runs["nli_s1"].config["trainer"]["max_epochs"] == 2
    with pytest.raises(Exception, match="max_epoch"):  # not a Trainer argument: Hydra's error, naming the key
        plan_for("experiment=quickstart", "stages.stage1.trainer.max_epoch=3")


def test_a_finished_run_with_the_same_config_is_reused_under_any_name():
    teacher = plan_for("experiment=quickstart").runs["nli_s1"]
    runs_dir = teacher.out_dir.parent
    impostor = runs_dir / f"aaa-{teacher.hash[:8]}"  # same 8 hex digits, another full hash: not the same run
    manifest.write(impostor, {"status": "done", "hash": teacher.hash[:8] + "0" * (len(teacher.hash) - 8)})
    (impostor / "metrics.json").write_text("{}")
    elsewhere = runs_dir / f"stage_name-{teacher.hash[:8]}"  # e.g. the run was a stage of another experiment
    manifest.write(elsewhere, {"status": "done", "hash": teacher.hash})
    assert plan_for("experiment=quickstart").runs["nli_s1"].out_dir == teacher.out_dir  # not done yet
    (elsewhere / "metrics.json").write_text("{}")
    again = plan_for("experiment=quickstart").runs["nli_s1"]
    assert again.out_dir == elsewhere and again.status == "done"


def test_changing_a_teacher_changes_the_folders_of_what_depends_on_it_only():
    base = plan_for("experiment=quickstart")
    changed = plan_for("experiment=quickstart", "teachers.nli_s1.optim.lr=0.002")
    differ = {n for n in base.runs if base.runs[n].out_dir != changed.runs[n].out_dir}
    assert differ == {"nli_s1", "stage1", "stage2"}
    # paths and logging are not part of a run's identity
    moved = plan_for("experiment=quickstart", "logger=csv", "trainer.enable_progress_bar=false")
    assert {n: r.hash for n, r in moved.runs.items()} == {n: r.hash for n, r in base.runs.items()}


def test_a_fine_tuned_stage_has_no_teachers_and_ignores_distillation_settings():
    plan = plan_for("experiment=quickstart", "stages.stage2.method=finetune")
    assert list(plan.runs) == ["nli_s1", "nli_s2", "nli_vocab7", "stage1", "stage2"]
    assert plan.runs["stage2"].needs == ["stage1"]
    again = plan_for("experiment=quickstart", "stages.stage2.method=finetune", "stages.stage2.distill.alpha=0.9")
    assert again.runs["stage2"].hash == plan.runs["stage2"].hash


def test_init_from_a_path_and_one_stage_selection(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    plan = plan_for("experiment=quickstart", f"stages.stage2.init_from={folder}", "stage=stage2")
    assert plan.runs["stage2"].config["model"]["name_or_path"] == str(folder)
    assert "stage1" not in plan.runs["stage2"].needs
    assert [r.name for r in plan.selected()] == ["tiny_s1", "tiny_s2", "tiny_vocab7", "stage2"]


@pytest.mark.parametrize(("args", "message"), [
    (["stages.nope.trainer.max_epochs=1"], "unknown run(s) ['stages.nope']"),
    (["teachers.stage1.seed=1"], "unknown run(s) ['teachers.stage1']"),
    (["stages.stage1.trainer.max_epoch=1"], "max_epoch"),
    (["stages.stage2.init_from=/no/such/folder"], "neither an earlier stage"),
    (["stage=stage3"], "stage='stage3' is not a stage"),
    (["nosuch.key=1"], "nosuch"),  # a section the final stage does not have either
])
def test_bad_plans_say_what_is_wrong(args, message):
    with pytest.raises(PlanError) as err:
        plan_for("experiment=quickstart", *args)
    assert message in str(err.value)


def test_identity_drops_paths_logging_and_speed_knobs():
    config = {"seed": 1, "paths": {"output_dir": "/x"}, "logger": {"backend": "csv"},
              "data": {"dir": "/d", "batch_size": 8},
              "trainer": {"max_epochs": 2, "devices": 2, "enable_progress_bar": True}}
    ident = manifest.identity(config)
    assert ident == {"seed": 1, "data": {"batch_size": 8}, "trainer": {"max_epochs": 2}}
    assert manifest.config_hash(ident) != manifest.config_hash({**ident, "seed": 2})


# --- configs that compose (issue 18) ---------------------------------------------------------------------------
def _same(a: dict, b: dict) -> dict:
    """The two resolved configs without the keys that name the invocation."""
    drop = ("experiment_name", "run_name", "paths", "logger")  # logger.group names the experiment
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if k not in drop and a.get(k) != b.get(k)}


def test_method_is_a_config_group_so_an_experiment_and_a_method_compose():
    from tmkd.pipeline.compose import compose_run

    many = compose_run(["experiment=m_o_1_rte", "method=many_to_many"])
    assert many["method"] == "many_to_many"
    assert _same(many, compose_run(["experiment=m_o_m_rte"])) == {}
    # a stage's method is chosen the same way (stages.<name>.method=...)
    plan = plan_for("experiment=quickstart", "stages.stage2.method=many_to_many")
    assert plan.runs["stage2"].config["method"] == "many_to_many" and plan.runs["stage1"].config["method"] == \
        "many_to_one"


def test_no_experiment_sets_method_as_a_plain_value():
    """A plain `method:` in an experiment would win over `method=` on the command line: experiments choose it in
    their defaults (`override /method: <name>`)."""
    import yaml

    from tmkd.pipeline.compose import CONFIG_DIR

    plain = [p.name for p in sorted((CONFIG_DIR / "experiment").glob("*.yaml")) if "method" in
             (yaml.safe_load(p.read_text()) or {})]
    assert plain == []


@pytest.mark.parametrize(("experiment", "metric"), [
    ("m_o_1_rte", "val/accuracy"), ("m_o_1_squad", "val/f1"), ("one_to_one_squad_v2", "val/f1"),
    ("finetune_quick_qa", "val/f1"),
])
def test_the_optimized_metric_is_the_tasks_main_metric(experiment, metric):
    from tmkd.pipeline.compose import compose_run

    assert compose_run([f"experiment={experiment}"])["optimized_metric"] == metric


def test_the_optimized_metric_follows_the_task_unless_set():
    from tmkd.pipeline.compose import compose_run

    assert compose_run(["experiment=finetune_quick", "task=synth_qa"])["optimized_metric"] == "val/f1"
    assert compose_run(["experiment=finetune_quick_qa", "optimized_metric=val/exact"])["optimized_metric"] == \
        "val/exact"
    plan = plan_for("experiment=quickstart", "stages.stage2.task=synth_qa", "stages.stage2.teachers=quick_qa")
    assert plan.runs["stage2"].config["optimized_metric"] == "val/f1"
    assert plan.runs["stage1"].config["optimized_metric"] == "val/accuracy"


def test_a_plan_names_a_fragment_as_a_stages_base_config():
    plan = plan_for("experiment=adapter_quick")
    adapter = plan.runs["adapter"]
    assert adapter.experiment == "adapter_head_quick" and adapter.role == "stage"
    assert adapter.overrides[:2] == ["~experiment", "fragment=adapter_head_quick"]
    assert adapter.config["method"] == "adapter" and adapter.out_dir.parent.name == "adapter_head_quick"
    assert {r.role for r in plan.runs.values()} == {"stage"}


def test_a_fragment_runs_by_itself_when_named_as_one(tmp_path):
    plan = plan_for("fragment=adapter_head_quick", f"adapter.encoder={tmp_path}")
    (run,) = plan.runs.values()
    assert plan.experiment == "adapter_head_quick" and run.config["adapter"]["encoder"] == str(tmp_path)
    assert run.config["method"] == "adapter"


@pytest.mark.parametrize("spec", [{"overrides": []}, {"experiment": "finetune_quick", "fragment": "x"}])
def test_a_stage_needs_an_experiment_or_a_fragment_not_both(spec):
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import build_plan

    top = compose_run(["experiment=quickstart"])
    top["stages"]["stage1"] = spec
    with pytest.raises(PlanError, match=r"stage 'stage1' of 'quickstart' needs its base config: an `experiment` "
                                        r"or a `fragment`"):
        build_plan(top, ["experiment=quickstart"])


def test_addressed_overrides_reach_their_run_as_written():
    plan = plan_for("experiment=quickstart", "stages.stage2.optim.lr=3e-5",
                    "stages.stage2.distill.use_teachers=[tiny_s1]", "stages.stage1.trainer.accumulate_grad_batches=2")
    stage2, stage1 = plan.runs["stage2"], plan.runs["stage1"]
    assert "optim.lr=3e-5" in stage2.overrides and stage2.config["optim"]["lr"] == 3e-5
    assert "distill.use_teachers=[tiny_s1]" in stage2.overrides
    assert [t["name"] for t in stage2.config["distill"]["teachers"]] == ["tiny_s1"]
    assert "++trainer.accumulate_grad_batches=2" in stage1.overrides
    assert stage1.config["trainer"]["accumulate_grad_batches"] == 2


def test_a_teacher_named_by_folder_replaces_its_run(tmp_path):
    # a finished teacher (e.g. trained by an earlier tmkd whose run hashes differ) is used as it is, not retrained
    folder = tmp_path / "finished" / "hf"
    folder.mkdir(parents=True)
    plan = plan_for("experiment=m_o_1_quick", f"teachers.tiny_s1.name_or_path={folder}")
    assert "tiny_s1" not in plan.runs and "tiny_s1" not in plan.runs["main"].needs
    teachers = {t["name"]: t for t in plan.runs["main"].config["distill"]["teachers"]}
    assert teachers["tiny_s1"]["name_or_path"] == str(folder) and "run" not in teachers["tiny_s1"]
    assert teachers["tiny_s2"]["name_or_path"] == str(plan.runs["tiny_s2"].out_dir)
    (folder / "model.safetensors").write_bytes(b"other weights")
    other = plan_for("experiment=m_o_1_quick", f"teachers.tiny_s1.name_or_path={folder}")
    assert other.runs["main"].hash != plan.runs["main"].hash  # the teacher's files count in the student's identity
    with pytest.raises(PlanError, match=r"name_or_path names a finished model, so \['optim.lr'\]"):
        plan_for("experiment=m_o_1_quick", f"teachers.tiny_s1.name_or_path={folder}", "teachers.tiny_s1.optim.lr=1e-3")
