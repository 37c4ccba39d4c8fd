"""The study scripts (experiments/study/*.py) loaded as modules for their tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "study"


def _script(name: str) -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location(f"study_{name}", STUDY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script's classes are built
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def grid() -> Iterator[ModuleType]:
    yield from _script("grid")


@pytest.fixture(scope="module")
def report() -> Iterator[ModuleType]:
    yield from _script("report")
