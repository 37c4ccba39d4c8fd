"""Logger choice: W&B offline exactly when there is no key (or asked), CSV, none, and bad kinds."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tmkd.pipeline.loggers import build_loggers, wandb_has_credentials, wandb_offline


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    """A HOME without ~/.netrc and no key or mode in the environment."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"


def test_no_key_means_offline(no_wandb_key):
    assert not wandb_has_credentials()
    assert wandb_offline(None) is True


def test_key_in_env_or_netrc_means_online(no_wandb_key, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_has_credentials() and wandb_offline(None) is False
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = no_wandb_key / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_has_credentials() and wandb_offline(None) is False


@pytest.mark.parametrize(("mode", "expected"), [("offline", True), ("dryrun", True), ("disabled", True),
                                                ("online", False), ("OFFLINE", True)])
def test_wandb_mode_is_honoured(no_wandb_key, monkeypatch, mode, expected):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key alone would mean online
    monkeypatch.setenv("WANDB_MODE", mode)
    assert wandb_offline(None) is expected


def test_explicit_config_wins(no_wandb_key, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_offline(True) is True
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline(False) is False


def test_none_and_csv_and_bad_kind(tmp_path):
    assert build_loggers(OmegaConf.create({"kind": "none"}), tmp_path, "r", {}) == []
    (csv,) = build_loggers(OmegaConf.create({"kind": "csv"}), tmp_path, "r", {})
    assert type(csv).__name__ == "CSVLogger"
    with pytest.raises(ValueError, match=r"unknown logger kind 'tensorboard'; valid: \['wandb', 'csv', 'none'\]"):
        build_loggers(OmegaConf.create({"kind": "tensorboard"}), tmp_path, "r", {})
