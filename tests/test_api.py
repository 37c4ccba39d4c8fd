"""The Python API (tmkd.api): the README example runs, in-memory data trains as files do, the command line's checks
and messages apply, and a plan built in Python is the one ``python -m tmkd.run`` builds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset
from omegaconf import OmegaConf
from test_import import HEAVY, imported_after

import tmkd
from tmkd.cli import UsageError, prepare_argv
from tmkd.data.sources import DataError
from tmkd.data.synthetic import generate
from tmkd.data.tasks import get_task
from tmkd.models.build import ModelSpec, build_model
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 128}
# one short epoch of a tiny model on one thread, nothing logged: seconds per run
QUICK = ["threads=1", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none",
         "report.enabled=false"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def frame(n: int, seed: int) -> pd.DataFrame:
    """RTE-shaped rows (sentence1, sentence2, label) of the synthetic pair task."""
    rows = generate(num_labels=2, n=n, seed=seed, noise=0.1)
    return pd.DataFrame({"sentence1": [r["first"] for r in rows], "sentence2": [r["second"] for r in rows],
                         "label": [r["label"] for r in rows]})


def rte_files(root: Path, train: pd.DataFrame, dev: pd.DataFrame) -> Path:
    """The rows as RTE's files under a data folder (``data.dir``): ``glue/rte/{train,validation}.parquet``."""
    folder = root / "glue" / "rte"
    folder.mkdir(parents=True)
    train.to_parquet(folder / "train.parquet", index=False)
    dev.to_parquet(folder / "validation.parquet", index=False)
    return root


def tiny_teacher(folder: Path, seed: int) -> Path:
    """An (untrained) tiny RTE classifier saved as a HF folder: a teacher given by path."""
    import torch

    torch.manual_seed(seed)
    model, tokenizer = build_model(ModelSpec(tiny=TINY), get_task("rte"))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def same_weights(a, b) -> bool:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def cli_error(args: list[str]) -> str:
    """The message ``python -m tmkd.run <args>`` fails with, run in this process as tmkd.run's app runs it (argv
    checked, composed, planned, run), without the interpreter start-up per case."""
    try:
        overrides = prepare_argv(args)
        run_experiment(OmegaConf.create(compose_run(overrides)), overrides)
    except (UsageError, ValueError) as err:
        return str(err)
    raise AssertionError(f"the command line accepted {args}")


def test_import_tmkd_stays_light_and_names_the_api():
    loaded = imported_after("import tmkd; assert {'distil', 'Distiller', 'plan', 'run_plan'} <= set(dir(tmkd))")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert tmkd.distil is tmkd.api.distil and tmkd.TaskSpec is get_task("rte").__class__
    with pytest.raises(AttributeError, match="no attribute 'distiller'"):
        tmkd.distiller  # noqa: B018 (the attribute access is the test)


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path):
    script = ROOT / "experiments" / "python_api.py"
    readme = (ROOT / "README.md").read_text()
    code = script.read_text().split('"""', 2)[2].strip()  # the example without its docstring
    assert code in readme, "README's Python API example differs from experiments/python_api.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "student: {'val/accuracy'" in done.stdout and "stage2: {'val/accuracy'" in done.stdout
    assert (tmp_path / "student" / "config.json").is_file() and (tmp_path / "two_stage" / "report.md").is_file()


@pytest.mark.slow
def test_in_memory_dataset_and_dataframe_train_as_the_same_rows_in_files(tmp_path):
    train, dev = frame(96, seed=0), frame(48, seed=1)
    data_dir = rte_files(tmp_path / "data", train, dev)
    common = {"student": {"tiny": TINY}, "task": "rte", "method": "finetune", "seed": 3, "overrides": QUICK}
    from_df = tmkd.distil(train=train, eval=dev, output_dir=tmp_path / "df", **common)
    from_ds = tmkd.distil(train=Dataset.from_pandas(train), eval=Dataset.from_pandas(dev), output_dir=tmp_path / "ds",
                          **common)
    from_lists = tmkd.distil(train=train.to_dict("list"), eval=dev.to_dict("list"), output_dir=tmp_path / "dict",
                             **common)
    from_files = tmkd.distil(**{**common, "overrides": [*QUICK, f"data.dir={data_dir}"]},
                             output_dir=tmp_path / "files")
    assert from_df.metrics == from_ds.metrics == from_lists.metrics == from_files.metrics
    assert same_weights(from_df.model, from_files.model)  # same rows, same order, same steps
    assert from_df.details["train_examples"] == 96 and from_df.details["data"]["source"] == "in memory (Python API)"
    assert from_files.details["data"]["source"] == str(data_dir)
    exported = from_df.export(tmp_path / "export")
    assert (exported / "config.json").is_file() and (exported / "tokenizer.json").is_file()


@pytest.mark.slow
def test_in_memory_teachers_distil_as_the_same_teachers_in_folders(tmp_path):
    train, dev = frame(64, seed=0), frame(32, seed=1)
    folders = [tiny_teacher(tmp_path / f"t{i}", seed=i) for i in range(2)]
    pairs = [build_model(ModelSpec(name_or_path=str(f)), get_task("rte")) for f in folders]
    common = {"student": {"tiny": TINY}, "task": "rte", "train": train, "eval": dev, "aggregator": "mean",
              "alpha": 0.5, "temperature": 2.0, "overrides": QUICK}
    by_path = tmkd.distil(teachers=[str(f) for f in folders], output_dir=tmp_path / "paths", **common)
    in_memory = tmkd.distil(teachers=pairs, output_dir=tmp_path / "pairs", **common)
    assert by_path.metrics == in_memory.metrics and same_weights(by_path.model, in_memory.model)
    assert by_path.details["method"] == "many_to_one"


def test_in_memory_splits_are_checked_as_files_are(tmp_path):
    """Missing columns and labels outside the label set fail before anything trains, naming the column / value."""
    train, dev = frame(16, seed=0), frame(8, seed=1)
    with pytest.raises(DataError, match=r"rte/train: missing column\(s\) \['sentence2'\]"):
        tmkd.Distiller(student={"tiny": TINY}, task="rte", method="finetune", train=train.drop(columns="sentence2"),
                       eval=dev, overrides=QUICK)
    bad = dev.assign(label=[5] * len(dev))
    with pytest.raises(DataError, match=r"rte/validation: label value\(s\) \[5\] outside the label set"):
        tmkd.Distiller(student={"tiny": TINY}, task="rte", method="finetune", train=train, eval=bad,
                       overrides=QUICK)
    with pytest.raises(DataError, match=r"in-memory data must be a datasets\.Dataset, a pandas DataFrame"):
        tmkd.Distiller(student={"tiny": TINY}, task="rte", method="finetune", train=[1, 2], eval=dev,
                       overrides=QUICK)


def test_a_bad_column_fails_with_the_command_lines_message(tmp_path):
    train, dev = frame(16, seed=0), frame(8, seed=1)
    no_col = train.drop(columns="sentence2")
    data_dir = rte_files(tmp_path / "data", no_col, dev)
    cli = cli_error(["experiment=finetune_quick", "task=rte", f"data.dir={data_dir}", *QUICK])
    with pytest.raises(DataError) as api:
        tmkd.Distiller(student="tiny", task="rte", method="finetune", train=no_col, eval=dev,
                       overrides=QUICK)
    assert str(api.value) == cli and "missing column(s) ['sentence2']" in cli


def test_an_unknown_aggregator_fails_with_the_command_lines_message():
    done = subprocess.run([sys.executable, "-m", "tmkd.run", "experiment=m_o_1_quick", "aggregator=median"],
                          env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    cli = done.stderr.strip().removeprefix("tmkd: error: ")
    with pytest.raises(UsageError) as api:
        tmkd.Distiller(student="tiny", teachers=["x"], task="synth_pair", aggregator="median")
    assert str(api.value) == cli and cli.startswith("unknown aggregator 'median'; valid aggregator names:")


@pytest.mark.parametrize(("settings", "method", "teachers", "message"), [
    (["+task.train_labelled=false", "distill.alpha=0.5"], "many_to_one", 1, "distill.alpha=0.5 puts weight 0.5 on"),
    ([], "one_to_one", 2, "one_to_one takes exactly one teacher, got 2"),
])
def test_distillation_checks_fail_with_the_command_lines_message(tmp_path, settings, method, teachers, message):
    train, dev = frame(16, seed=0), frame(8, seed=1)
    data_dir = rte_files(tmp_path / "data", train, dev)
    folders = [tiny_teacher(tmp_path / f"t{i}", seed=i) for i in range(teachers)]
    listed = ",".join(f"{{name:t{i},name_or_path:{f}}}" for i, f in enumerate(folders))
    cli = cli_error(["experiment=finetune_quick", f"method={method}", "task=rte", f"data.dir={data_dir}",
                     f"distill.teachers=[{listed}]", *settings, *QUICK])
    with pytest.raises(ValueError) as api:
        tmkd.Distiller(student="tiny", teachers=[str(f) for f in folders], task="rte", train=train, eval=dev,
                       method=method, overrides=[*settings, *QUICK])
    assert str(api.value) == cli and message in cli


def test_a_plan_built_in_python_is_the_one_the_command_line_builds(tmp_path):
    args = [f"paths.checkpoints={tmp_path}", "trainer.max_epochs=1", "--stages.stage1.optim.lr", "0.01"]
    done = subprocess.run([sys.executable, "-m", "tmkd.run", "experiment=quickstart", "plan=true", *args,
                           f"hydra.run.dir={tmp_path / 'hydra'}"], env=env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the table's rows: run, role, status, needs, folder (<checkpoints>/runs/<experiment>/<run>-<hash8>)
    rows = re.findall(r"^\s+(\S+)\s+(?:teacher|stage): \S+\s.*\s(\S+-[0-9a-f]{8})$", done.stdout, re.M)
    plan = tmkd.plan("quickstart", overrides=args)
    assert [(name, str(run.out_dir)) for name, run in plan.runs.items()] == rows
    assert len(rows) == 8 and plan.final == "stage2" and plan.runs["stage1"].config["optim"]["lr"] == 0.01
    assert plan.describe() in done.stdout  # the table `plan=true` prints, line for line


def test_a_plan_of_stages_given_in_python_matches_the_same_plan_from_an_experiment(tmp_path):
    """``tmkd.plan(stages=...)`` plans the stages as an experiment that declares them: same runs, same hashes."""
    quickstart = tmkd.plan("quickstart")
    stages = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "experiment" / "quickstart.yaml"))["stages"]
    mine = tmkd.plan(stages=stages, name="my_quickstart")
    assert [(n, r.hash) for n, r in mine.runs.items()] == [(n, r.hash) for n, r in quickstart.runs.items()]
    assert mine.experiment == "my_quickstart" and mine.experiment_dir == tmp_path / "checkpoints" / "my_quickstart"
    with pytest.raises(ValueError, match="needs a name"):
        tmkd.plan(stages=stages)


def test_a_task_given_as_a_spec_is_the_task_the_run_builds():
    """A new TaskSpec is registered under its name; a changed copy of a registered one reaches the run's config."""
    new = tmkd.TaskSpec("api_triple", ("first", "second"), ("a", "b", "c"), max_length=32)
    rows = {"first": ["x y", "y z", "z x"], "second": ["x", "y", "z"], "label": [0, 1, 2]}
    built = tmkd.Distiller(student="tiny", task=new, method="finetune", train=rows, eval=rows, overrides=QUICK)
    assert built.built.task == new and built.config["optimized_metric"] == "val/accuracy"
    assert built.built.datamodule.raw["train"]["label"] == [0, 1, 2]
    shorter = get_task("rte").with_overrides(max_length=40)
    built = tmkd.Distiller(student="tiny", task=shorter, method="finetune", train=frame(8, 0), eval=frame(4, 1),
                           overrides=QUICK)
    assert built.config["task"] == {"name": "rte", "max_length": 40} and built.built.task == shorter
