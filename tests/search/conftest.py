"""Fixtures for the search tests: the sweep files, quick teachers made once, and a subprocess environment.

The quick experiments' teachers (configs/teachers/quick.yaml) are normally trained by their recipes on the first
run (three subprocess trainings). The search tests do not test teacher training, so the session makes them once
as *untrained* tiny classifiers with the same tokenizers, saved where the recipes would put them (``hf/``
exports); tmkd.pipeline.chain then finds them and skips the recipes. Student runs are cut to a few batches.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from tmkd.search.sweeps import SWEEP_DIR, load_sweep, sweep_files

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SWEEPS = {p.stem: p for p in sweep_files()}
QUICK_SWEEP = "m_o_1_quick"
# appended to a quick trial's command: one short epoch on a slice of the synthetic task, no HF export
SHORT_RUN = ["trainer.max_epochs=1", "data.max_train_samples=256", "data.max_eval_samples=128",
             "checkpoint.export=false", "trainer.enable_progress_bar=false"]
RUN_TIMEOUT = 900  # seconds; CPU-sized, but the machine may be shared


@pytest.fixture(scope="session")
def sweeps() -> dict[str, dict]:
    assert SWEEPS, f"no sweep files in {SWEEP_DIR}"
    return {name: load_sweep(path) for name, path in SWEEPS.items()}


@pytest.fixture(scope="session")
def quick_teachers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoints folder holding the quick teacher set, untrained (see the module docstring)."""
    import torch

    from tmkd.data.tasks import get_task
    from tmkd.models.build import ModelSpec, build_classifier

    root = tmp_path_factory.mktemp("quick_teachers")
    tiny = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml").tiny)
    task = get_task("synth_pair")
    prefix = "${paths.checkpoints}/"
    for i, spec in enumerate(OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "teachers" / "quick.yaml").teachers)):
        assert spec["name_or_path"].startswith(prefix), spec
        overrides = dict(o.split("=", 1) for o in spec["recipe"]["overrides"])
        torch.manual_seed(int(overrides.get("seed", i)))
        model, tokenizer = build_classifier(ModelSpec(tiny=tiny, tokenizer=overrides.get("model.tokenizer")), task)
        out = root / spec["name_or_path"][len(prefix):] / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return root


@pytest.fixture
def checkpoints(tmp_path: Path, quick_teachers: Path) -> Path:
    """A fresh checkpoints folder (so a fresh soft-target cache) that sees the session's quick teachers."""
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "teachers").symlink_to(quick_teachers / "teachers", target_is_directory=True)
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
    """``logged_names(task)``: what ClassifierModule logs per validation epoch (see :func:`validation_log_names`)."""
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
    """The metric names ClassifierModule logs at the end of a validation epoch for ``task_name``.

    Taken from the module itself (its ``log`` calls are recorded), not from a copy of its naming rules.
    """
    import torch

    from tmkd.data.tasks import get_task
    from tmkd.models.build import ModelSpec, build_classifier
    from tmkd.modules.base import FineTuneModule

    task = get_task(task_name)
    tiny = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8,
            "max_position_embeddings": 16}
    module = FineTuneModule(build_classifier(ModelSpec(tiny=tiny), task)[0], task)
    names: list[str] = []
    module.log = lambda name, *args, **kwargs: names.append(name)  # type: ignore[method-assign]
    module._trainer = SimpleNamespace(sanity_checking=False)
    for metrics in module.val_metrics:
        metrics.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    module.on_validation_epoch_end()
    return set(names)
