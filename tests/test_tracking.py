"""W&B never blocks: offline unless logged in, and WANDB_MODE always wins (one policy for the Lightning logger
and the report's runs); no empty run folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel

from lungheart_cl import wandb_runs
from lungheart_cl.data.splits import LabelFractionError
from lungheart_cl.tracking import OfflineFirstWandbLogger, RunFolderCSVLogger


def test_offline_when_not_logged_in(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb_runs, "wandb_logged_in", lambda: False)
    assert OfflineFirstWandbLogger(save_dir=str(tmp_path))._offline


def test_online_when_logged_in(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb_runs, "wandb_logged_in", lambda: True)
    assert not OfflineFirstWandbLogger(save_dir=str(tmp_path))._offline


def test_disabled_mode_is_respected_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(wandb_runs, "wandb_logged_in", lambda: True)
    logger = OfflineFirstWandbLogger(save_dir=str(tmp_path))
    logger.log_metrics({"x": 1.0})
    logger.experiment.finish()
    assert not (tmp_path / "wandb").exists()
    assert os.environ["WANDB_MODE"] == "disabled"  # not rewritten to "dryrun"


CASES = [  # (WANDB_MODE, logged in, mode)
    (None, False, "offline"), (None, True, "online"), ("online", False, "online"), ("offline", True, "offline"),
    ("dryrun", True, "offline"), ("disabled", True, "disabled"), ("Disabled", False, "disabled"),
]


def _environment(monkeypatch, env: str | None, logged_in: bool) -> None:
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    monkeypatch.setattr(wandb_runs, "wandb_logged_in", lambda: logged_in)


@pytest.mark.parametrize(("env", "logged_in", "expected"), CASES)
def test_one_mode_policy_for_the_logger_and_the_report_runs(monkeypatch, tmp_path, env, logged_in, expected):
    """The report's runs once read WANDB_MODE=dryrun as unset, so a logged-in user's report went online."""
    _environment(monkeypatch, env, logged_in)
    assert wandb_runs.wandb_mode() == expected
    if expected != "disabled":
        assert OfflineFirstWandbLogger(save_dir=str(tmp_path))._offline == (expected == "offline")
    import wandb

    modes = []
    monkeypatch.setattr(wandb, "init", lambda mode, **init: modes.append(mode))
    wandb_runs.start_wandb_run("test", "run", "report", tmp_path)
    assert modes == [expected]


def test_logged_in_detection_reads_the_environment(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_runs.wandb_logged_in()


def test_wandb_does_not_warn_about_the_anonymous_setting(tmp_path):
    # a fresh process: W&B prints this warning once per process, so an earlier test could hide it
    script = ("from lungheart_cl.tracking import OfflineFirstWandbLogger\n"
              f"OfflineFirstWandbLogger(save_dir={str(tmp_path)!r}).experiment.finish()\n")
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.glob("wandb/offline-run-*")) and "anonymous" not in done.stderr


class _FailingData(BoringDataModule):
    def setup(self, stage: str) -> None:
        raise LabelFractionError("label_fraction 0.001 selects no patient of class 0")


class _LoggingModel(BoringModel):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)["loss"]
        self.log("train/loss", loss)
        return loss


def _trainer(tmp_path) -> L.Trainer:
    return L.Trainer(logger=RunFolderCSVLogger(save_dir=str(tmp_path), name="finetune"), max_epochs=2,
                     limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)


def test_a_run_that_fails_its_data_checks_leaves_no_run_folder(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(LabelFractionError):
        trainer.fit(_LoggingModel(), datamodule=_FailingData())
    assert not list(tmp_path.glob("finetune/version_*"))
    trainer = _trainer(tmp_path)  # a run that trains gets version_0 and writes its metrics there
    trainer.fit(_LoggingModel(), datamodule=BoringDataModule())
    assert "train/loss" in (tmp_path / "finetune" / "version_0" / "metrics.csv").read_text()
