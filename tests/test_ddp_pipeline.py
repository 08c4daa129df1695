"""The whole pretrain -> finetune path under 2-process DDP on CPU (gloo), through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "lungheart_cl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
       "--trainer.enable_progress_bar", "false", "--data.synthetic_patients", "24", "--data.num_workers", "0"]


def test_pretrain_then_finetune_under_ddp(tmp_path):
    pretrain = _cli(tmp_path, "pretrain", "--config", str(REPO / "experiments/pretrain_lung_default.yaml"), *DDP,
                    "--trainer.max_epochs", "2", "--data.batch_size", "8", "--model.stats_segments", "100")
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    summary = json.loads(next(tmp_path.glob("runs/**/pretrain-summary.json")).read_text())
    assert 0 <= summary["val_knn_auroc_before"] <= 1 and 0 <= summary["val_knn_auroc_best"] <= 1
    encoder = Path(tmp_path / summary["encoder_best"])
    assert encoder.is_file()

    finetune = _cli(tmp_path, "finetune", "--config", str(REPO / "experiments/finetune_lung_default.yaml"), *DDP,
                    "--model.checkpoint", str(encoder), "--trainer.max_epochs", "2", "--data.label_fraction", "1.0",
                    "--model.bootstrap_samples", "50", "--model.results_dir", "results")
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    results = list((tmp_path / "results").glob("*.json"))
    assert len(results) == 1  # written once, by rank 0
    payload = json.loads(results[0].read_text())
    assert payload["mode"] == "linear" and payload["n_scored"] == payload["data"]["test_segments"]
    assert payload["pretrained"]["checkpoint"] == str(encoder)
