"""The whole pretrain -> finetune path under 2-process DDP on CPU (gloo), through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join([str(REPO), str(cwd)]))
    return subprocess.run([sys.executable, "-m", "lungheart_cl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
       "--trainer.enable_progress_bar", "false", "--data.synthetic_patients", "24", "--data.num_workers", "0"]


# Written into the run's folder (on the subprocesses' PYTHONPATH): each rank's training batches, per epoch.
PAIR_RECORDER = """
import json
from lightning.pytorch.callbacks import Callback

class PairRecorder(Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append({"epoch": trainer.current_epoch, "anchors": batch["index"].tolist(),
                             "partners": batch["partner_index"].tolist(),
                             "strata": list(zip(batch["meta"]["age_group"].tolist(), batch["meta"]["sex"].tolist()))})

    def on_train_end(self, trainer, pl_module):
        with open(f"pairs-rank{trainer.global_rank}.json", "w") as handle:
            json.dump(self.batches, handle)
"""


def _check_rank_batches(tmp_path: Path, epochs: int, batch_size: int, strata_per_batch: int) -> None:
    """Ranks draw disjoint batches of the stratified composition, and every epoch draws new ones."""
    ranks = [json.loads((tmp_path / f"pairs-rank{r}.json").read_text()) for r in range(2)]
    by_epoch = [[[b for b in batches if b["epoch"] == e] for e in range(epochs)] for batches in ranks]
    for epoch in range(epochs):
        mine, theirs = ({a for b in by_epoch[r][epoch] for a in b["anchors"]} for r in range(2))
        assert mine and not mine & theirs, f"ranks share anchors in epoch {epoch}"
        assert len(by_epoch[0][epoch]) == len(by_epoch[1][epoch])
    for rank in range(2):
        pairs = [sorted((a, p) for b in by_epoch[rank][e] for a, p in zip(b["anchors"], b["partners"]))
                 for e in range(epochs)]
        assert len({tuple(p) for p in pairs}) == epochs, f"rank {rank} replays an epoch"
        batches = [b for e in range(epochs) for b in by_epoch[rank][e]]
        assert all(len(b["anchors"]) == batch_size for b in batches)
        # a batch is strata_per_batch single-stratum chunks, except the chunks of pooled leftovers
        few = [len({tuple(s) for s in b["strata"]}) <= strata_per_batch for b in batches]
        assert sum(few) >= len(few) / 2, "batches lost their metadata-stratified composition"


def test_pretrain_then_finetune_under_ddp(tmp_path):
    (tmp_path / "pair_recorder.py").write_text(PAIR_RECORDER)
    recorder = json.dumps([{"class_path": "pair_recorder.PairRecorder"}])
    pretrain = _cli(tmp_path, "pretrain", "--config", str(REPO / "experiments/pretrain_lung_default.yaml"), *DDP,
                    "--trainer.max_epochs", "3", "--data.batch_size", "8", "--model.stats_segments", "100",
                    "--data.pair_policy", "same_patient", "--trainer.callbacks+", recorder)
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    _check_rank_batches(tmp_path, epochs=3, batch_size=8, strata_per_batch=2)
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
