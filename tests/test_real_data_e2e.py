"""The real recordings in ../shared/data through pretrain -> finetune -> report (tiny settings, slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lungheart_cl.lightning_cli import run_lightning_cli
from lungheart_cl.report import write_report

os.environ.setdefault("WANDB_MODE", "disabled")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--data.num_workers", "0",
        "--model.encoder", "lungheart_cl.encoders.SmallCNN", "--model.encoder.init_args.channels", "[8, 16]"]
# dataset -> (folder under shared/data, task, extra arguments for such a small subset)
CASES = {
    "icbhi": ("icbhi", "crackle", ["--data.split", "random", "--data.batch_size", "16"]),
    "physionet2016": ("physionet2016", "normal_vs_abnormal", ["--data.batch_size", "32",
                                                              "--trainer.limit_train_batches", "4"]),
    "circor2022": ("circor2022", "murmur", ["--data.batch_size", "16", "--data.val_fraction", "0.34",
                                            "--data.test_fraction", "0.34"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(CASES))
def test_real_subset_runs_end_to_end_and_reports(dataset, shared_data, tmp_path, monkeypatch):
    folder, task, extra = CASES[dataset]
    monkeypatch.chdir(tmp_path)
    common = ["--data.root", str(shared_data / folder), "--data.task", task, "--data.cache_dir", str(tmp_path / "c"),
              *TINY, *extra]
    run_lightning_cli("pretrain", ["--config", str(EXPERIMENTS / dataset / "pretrain.yaml"),
                                   "--config", str(EXPERIMENTS / "schemes" / "time_mask.yaml"),
                                   "--model.stats_segments", "200", *common])
    summary = json.loads(next(tmp_path.glob("runs/**/pretrain-summary.json")).read_text())
    run_lightning_cli("finetune", ["--config", str(EXPERIMENTS / dataset / "finetune.yaml"),
                                   "--model.checkpoint", summary["encoder_best"], "--data.label_fraction", "1.0",
                                   "--model.results_dir", "results", "--model.bootstrap_samples", "50", *common])
    results = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    assert len(results) == 1 and results[0]["dataset"] == dataset and results[0]["scheme"] == "time_mask"
    markdown = write_report(tmp_path / "results", tmp_path / "report")
    assert "time_mask" in markdown.read_text()
    assert list((tmp_path / "report").glob("*.png"))
