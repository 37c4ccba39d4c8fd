"""Fixtures for the search tests: the sweep files, a checkpoints folder per test, and a subprocess environment.

The quick experiments' teachers (configs/teachers/quick.yaml) are runs of the plan: the first trial trains them
(cut, like the student, to a few batches by SHORT_RUN) and later trials reuse them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from tmkd.search.sweeps import SWEEP_DIR, load_sweep, sweep_files

SWEEPS = {p.stem: p for p in sweep_files()}
QUICK_SWEEP = "m_o_1_quick"
# appended to a quick trial's command: one short epoch on a slice of the synthetic task, no HF export
SHORT_RUN = ["trainer.max_epochs=1", "data.max_train_samples=256", "data.max_eval_samples=128",
             "trainer.enable_progress_bar=false", "report.latency=false"]
RUN_TIMEOUT = 900  # seconds; CPU-sized, but the machine may be shared


@pytest.fixture(scope="session")
def sweeps() -> dict[str, dict]:
    assert SWEEPS, f"no sweep files in {SWEEP_DIR}"
    return {name: load_sweep(path) for name, path in SWEEPS.items()}


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    """A fresh checkpoints folder: fresh runs and a fresh soft-target cache."""
    ck = tmp_path / "ck"
    ck.mkdir()
    return ck


@pytest.fixture
def short_run() -> list[str]:
    return list(SHORT_RUN)


@pytest.fixture
def child_env() -> Callable[..., dict[str, str]]:
    """``child_env(checkpoints, **extra)``: the environment of a child ``tmkd.run`` (see :func:`subprocess_env`)."""
    return subprocess_env


@pytest.fixture(scope="session")
def logged_names() -> Callable[[str], set[str]]:
    """``logged_names(task)``: what StageModule logs per validation epoch (see :func:`validation_log_names`)."""
    return validation_log_names


def subprocess_env(checkpoints: Path, **extra: str) -> dict[str, str]:
    """The test session's environment (offline W&B and hub, temp caches) for a child ``tmkd.run``; ``python`` on
    PATH is this interpreter, as the W&B agent runs ``/usr/bin/env python``."""
    env = dict(os.environ)
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               TMKD_CHECKPOINTS=str(checkpoints), WANDB_MODE="offline", WANDB_SILENT="true",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    return env


def validation_log_names(task_name: str) -> set[str]:
    """The metric names the fine-tune module logs at the end of a validation epoch for ``task_name``.

    Taken from the module itself (its ``log`` calls are recorded), not from a copy of its naming rules. A QA task
    is validated on a few rows of its synthetic twin (same kind and version, so the same names: the real data is
    not needed), through the real validation steps, as post-processing needs the windows and the questions.
    """
    import torch

    from tmkd.data.datamodule import TaskDataModule
    from tmkd.data.tasks import get_task
    from tmkd.models.build import ModelSpec, build_classifier
    from tmkd.modules.base import FineTuneModule

    task = get_task(task_name)
    tiny = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8,
            "max_position_embeddings": 16}
    names: list[str] = []
    if task.kind == "qa":
        twin = get_task("synth_qa_v2" if task.version_2 else "synth_qa")
        model, tokenizer = build_classifier(ModelSpec(tiny={**tiny, "max_position_embeddings": twin.max_length}),
                                            twin)
        module = FineTuneModule(model, twin)
        datamodule = TaskDataModule(twin, {"student": tokenizer}, max_train_samples=4, max_eval_samples=4)
        datamodule.setup()
        module.log = lambda name, *args, **kwargs: names.append(name)  # type: ignore[method-assign]
        module._trainer = SimpleNamespace(sanity_checking=False, datamodule=datamodule, global_step=0)
        with torch.no_grad():
            for batch in datamodule.val_dataloader()[0]:
                module.validation_step(batch, 0)
    else:
        module = FineTuneModule(build_classifier(ModelSpec(tiny=tiny), task)[0], task)
        module.log = lambda name, *args, **kwargs: names.append(name)  # type: ignore[method-assign]
        module._trainer = SimpleNamespace(sanity_checking=False, datamodule=None, global_step=0)
        for evaluator in module.val_metrics:  # one batch of two rows, as validation_step hands it over
            evaluator.update(torch.eye(task.num_labels)[:2], {"labels": torch.tensor([0, 1])})
    module.on_validation_epoch_end()
    return set(names)
