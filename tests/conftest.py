"""Shared fixtures: isolated caches and output folders, offline W&B / hub, and Hydra config composition.

Nothing a test does may touch the user's ~/.cache/tmkd, ./checkpoints, the datasets cache or W&B servers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One set of caches per session (the synthetic data is generated and tokenised once)."""
    root = tmp_path_factory.mktemp("caches")
    hf_datasets = root / "hf_datasets"
    mp = pytest.MonkeyPatch()
    mp.setenv("TMKD_CACHE_DIR", str(root / "tmkd"))
    mp.setenv("TMKD_CHECKPOINTS", str(root / "checkpoints"))
    mp.setenv("HF_DATASETS_CACHE", str(hf_datasets))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.delenv("TMKD_DATA_DIR", raising=False)
    # Both libraries read these at import time, and the test modules are imported before this fixture runs.
    import datasets.config
    import huggingface_hub.constants

    mp.setattr(datasets.config, "HF_DATASETS_CACHE", hf_datasets)
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    yield root
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy machine (2 cores, a training run beside
    the tests) two threads spin against each other: one thread trains the quickstart ~10x faster there."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _per_test_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run outputs per test; no data folder from the caller's shell."""
    monkeypatch.setenv("TMKD_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.delenv("TMKD_DATA_DIR", raising=False)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """``compose_cfg(overrides, output_dir=None)``: configs/train.yaml composed as ``@hydra.main`` would.

    HydraConfig is set (so ``${hydra:runtime.output_dir}`` and ``${hydra:runtime.choices.experiment}``
    resolve) and the ``hydra`` node removed, as in the config a Hydra task function receives.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import tmkd.pipeline.compose  # noqa: F401  (registers tmkd's config resolvers, as `python -m tmkd.run` does)

    def _compose(overrides: list[str] | None = None, output_dir: Path | None = None) -> DictConfig:
        out = output_dir or tmp_path / "run"
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides or []), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def hf_cached(repo_id: str, filenames: tuple[str, ...] = ("config.json", "tokenizer.json", "model.safetensors")
              ) -> bool:
    """Whether the HF hub cache holds these files of ``repo_id`` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return all(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)


@pytest.fixture
def minilm() -> str:
    """The MiniLM hub id, or a skip when it is not in the local HF cache (tests never download)."""
    if not hf_cached(MINILM):
        pytest.skip(f"{MINILM} is not in the HF cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}); "
                    "run ../shared/tools/seed-hf-cache to enable this test")
    return MINILM


@pytest.fixture(scope="session")
def tok():
    """The synthetic tasks' tokenizer (seed 0)."""
    from tmkd.models.tokenizers import synthetic_tokenizer

    return synthetic_tokenizer()



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """End-to-end (``slow``) tests first, in their collected order: pytest-xdist hands tests out in this order, so the
    long ones start early and the short ones fill the gaps, instead of a long test starting last and leaving one
    worker alone at the end (longest-first scheduling)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
