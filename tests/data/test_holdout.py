"""data.holdout: a seeded held-out part of train replaces the dev splits (choose settings without the dev set)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tmkd.data import DataError, get_task, load_splits
from tmkd.data.holdout import HOLDOUT_SPLIT, Holdout, HoldoutError, group_by, holdout_rows, holdout_task
from tmkd.data.loading import split_fingerprint
from tmkd.data.synthetic_qa import generate_qa
from tmkd.pipeline import manifest
from tmkd.pipeline.distill_factory import warn_teacher_holdout
from tmkd.pipeline.report import scored_on

SYNTH = get_task("synth_pair")  # 2000 train rows, labels 0/1
TENTH = Holdout(0.1, 0)


def ids(ds) -> list[int]:
    return list(ds["idx"])


def test_the_split_depends_on_fraction_and_holdout_seed_only_and_partitions_train():
    full = load_splits(SYNTH)[SYNTH.train_split]
    a = load_splits(SYNTH, seed=1, holdout=TENTH)
    b = load_splits(SYNTH, seed=7, holdout=TENTH)  # another run seed: the same rows held out
    assert set(a) == {"train", HOLDOUT_SPLIT}  # the dev split is gone
    assert ids(a[HOLDOUT_SPLIT]) == ids(b[HOLDOUT_SPLIT]) and ids(a["train"]) == ids(b["train"])
    held, kept = set(ids(a[HOLDOUT_SPLIT])), set(ids(a["train"]))
    assert not held & kept and held | kept == set(ids(full))
    assert len(held) == 200
    assert list(a[HOLDOUT_SPLIT]["row_id"]) == list(range(200))  # soft-target caches index rows by row_id
    other_seed = load_splits(SYNTH, holdout=Holdout(0.1, 1))[HOLDOUT_SPLIT]
    assert set(ids(other_seed)) != held
    assert set(ids(load_splits(SYNTH, holdout=Holdout(0.2, 0))[HOLDOUT_SPLIT])) != held


def test_caps_apply_after_the_cut_train_cap_to_train_prime_eval_cap_to_the_held_out_part():
    uncapped = load_splits(SYNTH, holdout=TENTH)
    capped = load_splits(SYNTH, max_train_samples=300, max_eval_samples=50, seed=3, holdout=TENTH)
    assert len(capped["train"]) == 300 and set(ids(capped["train"])) <= set(ids(uncapped["train"]))
    assert ids(capped[HOLDOUT_SPLIT]) == ids(uncapped[HOLDOUT_SPLIT])[:50]  # the head: the same for any run seed
    # a train cap never changes which rows are held out
    assert ids(load_splits(SYNTH, max_train_samples=100, holdout=TENTH)[HOLDOUT_SPLIT]) == ids(uncapped[HOLDOUT_SPLIT])


def test_classification_is_stratified_by_label():
    train = load_splits(SYNTH)["train"]
    ds = train.select([i for i in range(len(train)) if train[i]["label"] == 0 or i % 5 == 0])  # unbalanced labels
    per_label = Counter(ds["label"])
    _, held = holdout_rows(ds, SYNTH, Holdout(0.25, 4))
    got = Counter(ds.select(held)["label"])
    assert got == {label: round(0.25 * n) for label, n in per_label.items()}
    assert group_by(ds, SYNTH) == "label"


def write_local_train_only(root: Path, task) -> Path:
    """The synthetic task's train rows as a local data folder with no dev file at all."""
    rows = load_splits(task)["train"].remove_columns("row_id").to_pandas()
    folder = root / task.name
    folder.mkdir(parents=True)
    rows.to_parquet(folder / "train.parquet", index=False)
    return root


def test_the_dev_split_is_never_read(tmp_path):
    root = write_local_train_only(tmp_path / "data", SYNTH)
    local = dataclasses.replace(SYNTH, synthetic=None, local_path=None)
    with pytest.raises(DataError, match="validation"):
        load_splits(local, root)  # without holdout the dev file is required ...
    out = load_splits(local, root, holdout=TENTH)  # ... with it, it is not even looked for
    assert len(out[HOLDOUT_SPLIT]) == 200 and len(out["train"]) == 1800


def qa_rows(n_contexts: int, per_context: int, titles: int | None) -> pd.DataFrame:
    """``per_context`` questions on each of ``n_contexts`` paragraphs; ``titles`` articles (None: one title)."""
    rows = []
    for c, row in enumerate(generate_qa(n_contexts, seed=3, unanswerable=0.0)):
        for q in range(per_context):
            rows.append({**row, "id": f"c{c}-q{q}", "question": f"{row['question']} ({q})",
                         "title": f"article {c % titles}" if titles else "one title"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("titles", [None, 7])
def test_qa_holds_out_whole_articles_or_paragraphs_so_no_context_is_on_both_sides(tmp_path, titles):
    task = dataclasses.replace(get_task("synth_qa"), synthetic=None, local_path="qa")
    folder = tmp_path / "qa"
    folder.mkdir()
    qa_rows(60, 3, titles).to_parquet(folder / "train.parquet", index=False)
    out = load_splits(task, tmp_path, holdout=Holdout(0.2, 0))
    train, held = out["train"], out[HOLDOUT_SPLIT]
    assert len(train) + len(held) == 180 and 36 <= len(held) < 180
    assert not set(train["context"]) & set(held["context"])
    assert not set(train["id"]) & set(held["id"])
    assert group_by(held, task) == ("title" if titles else "context")
    if titles:
        assert not set(train["title"]) & set(held["title"])


def test_a_cut_that_leaves_either_part_empty_is_refused():
    task = get_task("synth_qa")
    ds = load_splits(task, max_train_samples=5)["train"]
    one_paragraph = ds.map(lambda r: {"context": "same"}).select([0])
    with pytest.raises(HoldoutError, match="non-empty"):
        holdout_rows(one_paragraph, task, TENTH)


@pytest.mark.parametrize("node, message", [
    ({"fraction": 0}, "in (0, 1)"), ({"fraction": 1.0}, "in (0, 1)"), ({"fraction": "a"}, "in (0, 1)"),
    ({"fraction": 0.1, "seed": 1.5}, "integer"), ({"fraction": 0.1, "sede": 1}, "unknown data.holdout key"),
    (0.1, "mapping"),
])
def test_bad_settings_name_the_problem(node, message):
    with pytest.raises(HoldoutError, match=re.escape(message)):
        Holdout.from_config(node)


def test_off_is_null_and_the_task_keeps_its_dev_splits():
    assert Holdout.from_config(None) is None and Holdout.from_config({"fraction": None, "seed": 3}) is None
    assert holdout_task(get_task("mnli"), None).eval_splits == ("validation_matched", "validation_mismatched")
    held = holdout_task(get_task("mnli"), TENTH)
    assert held.eval_splits == (HOLDOUT_SPLIT,) and held.split_prefix(HOLDOUT_SPLIT) == "val"  # keys stay val/*


def test_the_run_identity_follows_fraction_and_seed_and_is_unchanged_when_off():
    base = {"seed": 1, "data": {"batch_size": 8}}

    def digest(holdout):
        return manifest.config_hash(manifest.identity({"seed": 1, "data": {"batch_size": 8, "holdout": holdout}}))

    off = digest({"fraction": None, "seed": 0})
    assert off == digest({"fraction": None, "seed": 5}) == manifest.config_hash(manifest.identity(base))
    hashes = {digest({"fraction": 0.1, "seed": 0}), digest({"fraction": 0.2, "seed": 0}),
              digest({"fraction": 0.1, "seed": 1}), off}
    assert len(hashes) == 4


def test_held_out_and_train_prime_parts_get_their_own_soft_target_cache_entries():
    """Soft-target cache keys hold the split's content hash, so train' and the held-out part get entries of their
    own, never the full train split's (or another cut's) tensor; rows they share are reused by content
    (tests/distill/test_targets_reuse.py)."""
    full = load_splits(SYNTH)
    cut, again, other = (load_splits(SYNTH, holdout=h) for h in (TENTH, TENTH, Holdout(0.1, 1)))
    prints = [split_fingerprint(ds, SYNTH) for ds in
              (full["train"], full["validation"], cut["train"], cut[HOLDOUT_SPLIT], other["train"])]
    assert len(set(prints)) == len(prints)
    assert split_fingerprint(again["train"], SYNTH) == prints[2]  # the same cut hits the same entries


def test_teacher_runs_of_a_plan_get_the_same_holdout():
    from tmkd.cli import prepare_argv
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import build_plan

    overrides = prepare_argv(["experiment=m_o_1_quick", "data.holdout.fraction=0.1"])
    plan = build_plan(compose_run(overrides), overrides)
    assert len(plan.runs) > 1
    for run in plan.runs.values():
        assert run.config["data"]["holdout"] == {"fraction": 0.1, "seed": 0}, run.name
    plain = build_plan(compose_run(prepare_argv(["experiment=m_o_1_quick"])), ["experiment=m_o_1_quick"])
    assert not {r.hash for r in plan.runs.values()} & {r.hash for r in plain.runs.values()}


def test_teachers_named_by_folder_are_checked_or_warned_about(tmp_path, caplog):
    def teacher_run(name: str, holdout: dict | None) -> str:
        folder = tmp_path / name
        (folder / "hf").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"data": {"holdout": holdout}}), folder / "config.yaml")
        return str(folder)

    same = teacher_run("same", {"fraction": 0.1, "seed": 0})
    specs = [{"name": "same", "name_or_path": same}, {"name": "export", "name_or_path": same + "/hf"}]
    assert warn_teacher_holdout(specs, TENTH) == []
    assert warn_teacher_holdout([{"name": "x", "name_or_path": "someone/hub-model"}], None) == []
    other = teacher_run("other", {"fraction": 0.1, "seed": 2})
    full = teacher_run("full", None)
    with caplog.at_level("WARNING"):
        warnings = warn_teacher_holdout([{"name": "other", "name_or_path": other},
                                         {"name": "full", "name_or_path": full},
                                         {"name": "hub", "name_or_path": "someone/hub-model"}], TENTH)
    assert len(warnings) == 3 and all("held-out rows" in w for w in warnings)
    assert all(w in caplog.text for w in warnings)


def test_reports_say_where_the_scores_come_from():
    assert scored_on({"eval": "dev"}) == scored_on({}) == "dev set"
    text = scored_on({"eval": "holdout", "holdout": {"fraction": 0.1, "seed": 0, "rows": 200}})
    assert text == "held-out part of train (10%, seed 0, 200 rows), not the dev set"


@pytest.mark.slow
@pytest.mark.parametrize("experiment, key, by", [("finetune_quick", "val/accuracy", "label"),
                                                 ("finetune_quick_qa_v2", "val/f1", "context")])
def test_a_tiny_run_validates_on_the_held_out_part_and_records_it(compose_cfg, tmp_path, experiment, key, by):
    from tmkd.pipeline.train import run

    out = tmp_path / "run"
    cfg = compose_cfg([f"experiment={experiment}", "data.holdout.fraction=0.2", "data.max_train_samples=64",
                       "data.batch_size=16", "trainer.max_epochs=1", "logger=none", "report.latency=false",
                       "threads=1", "checkpoint.export=false", "trainer.enable_progress_bar=false"], output_dir=out)
    metrics = run(cfg)
    assert key in metrics["best"]  # keys unchanged: sweeps and Optuna keep working
    data = json.loads((out / "metrics.json").read_text())["data"]
    assert data["eval"] == HOLDOUT_SPLIT and set(data["rows"]) == {"train", HOLDOUT_SPLIT}
    assert data["holdout"] == {"fraction": 0.2, "seed": 0, "rows": 400, "train_rows": 64, "by": by,
                               "note": "held-out part of train (20%, seed 0), not the dev set"}
    assert metrics["train_examples"] >= 64  # QA counts windows


@pytest.mark.slow
def test_a_distillation_plan_holds_out_the_same_rows_for_teachers_and_student_and_says_so(caplog):
    from tmkd.cli import prepare_argv
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import build_plan
    from tmkd.pipeline.runner import run_plan

    overrides = prepare_argv(["experiment=m_o_1_quick", "data.holdout.fraction=0.2", "data.max_train_samples=48",
                              "data.max_eval_samples=64", "trainer.max_epochs=1", "logger=none",
                              "report.latency=false", "trainer.enable_progress_bar=false", "checkpoint.export=true"])
    plan = build_plan(compose_run(overrides), overrides)
    with caplog.at_level("WARNING"):
        run_plan(plan)
    assert "held-out rows" not in caplog.text  # the planned teachers trained with the same holdout
    for run in plan.runs.values():
        data = json.loads((run.out_dir / "metrics.json").read_text())["data"]
        assert data["eval"] == HOLDOUT_SPLIT and data["holdout"]["fraction"] == 0.2, run.name
    where = "held-out part of train (20%, seed 0, 64 rows), not the dev set"
    assert where in (plan.experiment_dir / "report.md").read_text()
    assert where in (plan.experiment_dir / "student" / "README.md").read_text()


def test_report_latency_texts_come_from_the_held_out_part_when_the_dev_set_is_off_limits(tmp_path):
    from tmkd.deploy.latency import load_texts

    root = write_local_train_only(tmp_path / "data", SYNTH)
    texts = load_texts(dataclasses.replace(SYNTH, synthetic=None), root, rows=5, holdout=TENTH)
    held = load_splits(SYNTH, holdout=TENTH)[HOLDOUT_SPLIT].select(range(5))
    assert texts == list(zip(held["sentence1"], held["sentence2"], strict=True))
    with pytest.raises(DataError, match="validation"):
        load_texts(dataclasses.replace(SYNTH, synthetic=None), root, rows=5)
