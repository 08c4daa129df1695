"""A run's console output: Lightning's TQDM bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from lungheart_cl import console
from lungheart_cl.console import EpochLines, EpochLoggingInterval
from lungheart_cl.lightning_cli import make_cli

os.environ.setdefault("WANDB_MODE", "disabled")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _progress_bars(tmp_path, *args: str) -> list[ProgressBar]:
    cli = make_cli("finetune", ["--config", str(EXPERIMENTS / "finetune_lung_default.yaml"),
                                "--model.checkpoint", "null", "--trainer.logger", "false",
                                "--trainer.default_root_dir", str(tmp_path), *args])
    assert [c for c in cli.trainer.callbacks if isinstance(c, EpochLoggingInterval)]
    return [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]


@pytest.mark.parametrize("terminal,expected", [(True, TQDMProgressBar), (False, EpochLines)])
def test_the_progress_bar_suits_the_output(tmp_path, monkeypatch, terminal, expected):
    monkeypatch.setattr(console, "interactive", lambda: terminal)
    assert [type(bar) for bar in _progress_bars(tmp_path)] == [expected]


def test_a_disabled_or_chosen_progress_bar_is_respected(tmp_path, monkeypatch):
    monkeypatch.setattr(console, "interactive", lambda: False)
    assert _progress_bars(tmp_path, "--trainer.enable_progress_bar", "false") == []
    chosen = _progress_bars(tmp_path, "--trainer.callbacks+", "lightning.pytorch.callbacks.TQDMProgressBar")
    assert [type(bar) for bar in chosen] == [TQDMProgressBar]
