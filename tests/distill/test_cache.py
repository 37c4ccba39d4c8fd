"""Soft-target cache: keys, fingerprints, round-trips and recovery from damaged files."""

import copy
import logging

import pytest
import torch

from tmkd.distill.cache import SoftTargetCache
from tmkd.fingerprint import cache_key, fingerprint_module


class Counter:
    """compute() stand-in that records how often the teacher pass would have run."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor, self.calls = tensor, 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return self.tensor.clone()


def test_cache_key_is_stable_order_independent_and_sensitive():
    a = cache_key(teacher="abc", split="train", max_len=128, opts={"x": [1, 2], "y": "z"})
    b = cache_key(opts={"y": "z", "x": [1, 2]}, max_len=128, split="train", teacher="abc")
    assert a == b and len(a) == 24
    assert a != cache_key(teacher="abc", split="train", max_len=256, opts={"x": [1, 2], "y": "z"})
    with pytest.raises(TypeError):
        cache_key(model=torch.nn.Linear(2, 2))


def test_fingerprint_changes_when_any_weight_changes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    same = copy.deepcopy(model)
    fp = fingerprint_module(model)
    assert fp == fingerprint_module(same)
    with torch.no_grad():
        same[1].bias[2] += 1e-6
    assert fingerprint_module(same) != fp
    assert cache_key(teacher=fingerprint_module(same)) != cache_key(teacher=fp)
    # dtype counts too: identical values in another dtype are a different teacher output.
    assert fingerprint_module(copy.deepcopy(model).double()) != fp


def test_round_trip_keeps_values_dtype_and_meta(tmp_path):
    cache = SoftTargetCache(tmp_path / "cache")
    for dtype in (torch.float32, torch.bfloat16, torch.int64):
        tensor = (torch.randn(3, 4, 5) * 10).to(dtype)
        key = cache_key(dtype=str(dtype))
        cache.save(key, tensor, meta={"teachers": ["a", "b"], "n": 4})
        loaded = cache.load(key)
        assert loaded is not None and loaded.dtype == dtype
        assert torch.equal(loaded, tensor)
        entry = cache.load_with_meta(key)
        assert entry is not None and entry[1] == {"teachers": ["a", "b"], "n": 4}
    assert not [p for p in cache.root.iterdir() if p.suffix != ".pt"], "temp files left behind"


def test_load_missing_key_returns_none(tmp_path):
    assert SoftTargetCache(tmp_path).load("nothing-here") is None


def test_get_or_compute_computes_once_across_calls_and_instances(tmp_path):
    compute = Counter(torch.arange(6.0).view(2, 3))
    first = SoftTargetCache(tmp_path).get_or_compute("k1", compute)
    second = SoftTargetCache(tmp_path).get_or_compute("k1", compute)  # e.g. the next stage/trial
    assert compute.calls == 1
    assert torch.equal(first, second) and torch.equal(first, compute.tensor)


def _damage_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_garbage(path):
    path.write_bytes(b"this is not a torch file" * 10)


def _damage_flip_tensor(path):
    payload = torch.load(path, weights_only=True)
    payload["tensor"] = payload["tensor"] + 1  # checksum no longer matches
    torch.save(payload, path)


def _damage_wrong_type(path):
    torch.save(torch.zeros(3), path)  # a bare tensor, not a cache entry


@pytest.mark.parametrize(
    "damage", [_damage_truncate, _damage_garbage, _damage_flip_tensor, _damage_wrong_type]
)
def test_damaged_file_is_warned_about_deleted_and_rebuilt(tmp_path, caplog, damage):
    cache = SoftTargetCache(tmp_path)
    compute = Counter(torch.randn(4, 3))
    cache.get_or_compute("teacher-x", compute)
    path = cache.path("teacher-x")
    damage(path)

    with caplog.at_level(logging.WARNING, logger="tmkd.distill.cache"):
        assert cache.load("teacher-x") is None
    assert not path.exists()
    assert any(str(path) in rec.getMessage() and rec.levelno == logging.WARNING for rec in caplog.records)

    # get_or_compute straight onto a damaged file: warns, recomputes, and the new file is good.
    cache.get_or_compute("teacher-x", compute)
    assert compute.calls == 2
    damage(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tmkd.distill.cache"):
        rebuilt = cache.get_or_compute("teacher-x", compute)
    assert compute.calls == 3
    assert torch.equal(rebuilt, compute.tensor)
    assert any("damaged" in rec.getMessage() for rec in caplog.records)
    loaded = cache.load("teacher-x")
    assert loaded is not None and torch.equal(loaded, compute.tensor)


def test_rejects_unsafe_keys_and_non_tensor_values(tmp_path):
    cache = SoftTargetCache(tmp_path)
    for key in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="invalid cache key"):
            cache.path(key)
    with pytest.raises(TypeError, match="compute\\(\\) must return a tensor"):
        cache.get_or_compute("k", lambda: [1, 2, 3])  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError):
        cache.save("k", torch.zeros(1), meta={"bad": object()})
    assert not list(tmp_path.iterdir()), "a failed save must not leave files behind"
