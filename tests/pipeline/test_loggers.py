"""Logger choice: W&B offline exactly when there is no key (or asked), CSV, none, and bad kinds."""

from __future__ import annotations

from pathlib import Path

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
    assert build_loggers(OmegaConf.create({"backend": "none"}), tmp_path, "r", {}) == []
    (csv,) = build_loggers(OmegaConf.create({"backend": "csv"}), tmp_path, "r", {})
    assert type(csv).__name__ == "CSVLogger"
    with pytest.raises(ValueError, match=r"unknown logger.backend 'tensorboard'; valid: \['wandb', 'csv', 'none'\]"):
        build_loggers(OmegaConf.create({"backend": "tensorboard"}), tmp_path, "r", {})


def test_a_resumed_run_keeps_its_csv_log(tmp_path):
    """Lightning's CSVLogger deletes the metrics.csv it opens: a resumed run logs next to it instead."""
    cfg = OmegaConf.create({"backend": "csv"})
    (first,) = build_loggers(cfg, tmp_path, "r", {})
    first.log_metrics({"loss": 1.0}, step=0)
    first.save()
    before = (tmp_path / "csv" / "metrics.csv").read_text()
    (again,) = build_loggers(cfg, tmp_path, "r", {}, resume=True)
    again.log_metrics({"loss": 0.5}, step=1)
    again.save()
    assert (tmp_path / "csv" / "metrics.csv").read_text() == before
    assert "0.5" in (tmp_path / "csv" / "resume-1" / "metrics.csv").read_text()
    (fresh,) = build_loggers(cfg, tmp_path / "other", "r", {}, resume=True)  # nothing logged yet: the usual place
    assert Path(fresh.log_dir) == tmp_path / "other" / "csv"


def test_a_resumed_run_continues_its_wandb_run(no_wandb_key, tmp_path):
    cfg = OmegaConf.create({"backend": "wandb", "offline": True})
    out = tmp_path / "run"
    (first,) = build_loggers(cfg, out, "r", {"a": 1})
    run_id = first.experiment.id
    first.experiment.finish()
    assert (out / "wandb_id").read_text() == run_id
    (resumed,) = build_loggers(cfg, out, "r", {"a": 1}, resume=True)
    assert resumed.experiment.id == run_id
    resumed.experiment.finish()
    (fresh,) = build_loggers(cfg, out, "r", {"a": 1})  # not a resume: a new W&B run
    assert fresh.experiment.id != run_id
    fresh.experiment.finish()
