"""W&B never blocks: offline unless logged in, and WANDB_MODE always wins."""

from __future__ import annotations

from lungheart_cl import tracking
from lungheart_cl.tracking import OfflineFirstWandbLogger


def test_offline_when_not_logged_in(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(tracking, "wandb_logged_in", lambda: False)
    assert OfflineFirstWandbLogger(save_dir=str(tmp_path))._offline


def test_online_when_logged_in(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(tracking, "wandb_logged_in", lambda: True)
    assert not OfflineFirstWandbLogger(save_dir=str(tmp_path))._offline


def test_disabled_mode_is_respected_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(tracking, "wandb_logged_in", lambda: True)
    logger = OfflineFirstWandbLogger(save_dir=str(tmp_path))
    logger.log_metrics({"x": 1.0})
    logger.experiment.finish()
    assert not (tmp_path / "wandb").exists()
    import os

    assert os.environ["WANDB_MODE"] == "disabled"  # not rewritten to "dryrun"


def test_logged_in_detection_reads_the_environment(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_logged_in()
