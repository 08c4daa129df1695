"""Pretraining learns: on the same batches and views, the logged loss of a run falls below that of the same
run with learning disabled (lr 0), through the Trainer and its CSV log.

A falling loss alone would not show it: on this tiny data the loss of the fixed random network also falls
from the first epoch to the last (the batches differ), so the run is compared with its lr-0 twin.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

from lungheart_cl.data.datamodule import PretrainDataModule
from lungheart_cl.encoders import SmallCNN
from lungheart_cl.losses import MetadataNTXent
from lungheart_cl.pretrain import ContrastivePretraining
from lungheart_cl.views import TimeMask, ViewPipeline

os.environ.setdefault("WANDB_MODE", "disabled")
EPOCHS = 4


def _epoch_losses(cache_dir: Path, root: Path, lr: float) -> list[float]:
    """train/loss_epoch per epoch from the CSV log of a seeded run (no validation: only the loss is read)."""
    L.seed_everything(0)
    data = PretrainDataModule(dataset="icbhi", cache_dir=str(cache_dir), synthetic_patients=24, batch_size=16,
                              num_workers=0, batch_strata=["age_group", "sex"], monitor_bank_size=200,
                              stats_segments=200)
    model = ContrastivePretraining(encoder=SmallCNN(channels=(8, 16)), views=ViewPipeline(spec=[TimeMask(0.2, 2)]),
                                   loss=MetadataNTXent(0.1, negative_keys=["age_group", "sex"]), projector_hidden_dim=32,
                                   projector_dim=16, stats_segments=200, scheme="test", lr=lr, monitor_probe_c=1.0)
    trainer = L.Trainer(max_epochs=EPOCHS, limit_train_batches=3, limit_val_batches=0, default_root_dir=root,
                        accelerator="cpu", logger=CSVLogger(root, name="log"), enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        use_distributed_sampler=False, deterministic=True)
    trainer.fit(model, datamodule=data)
    with open(root / "log" / "version_0" / "metrics.csv") as handle:
        return [float(row["train/loss_epoch"]) for row in csv.DictReader(handle) if row.get("train/loss_epoch")]


def test_pretraining_lowers_the_loss_below_its_untrained_twin_on_the_same_batches(tmp_path):
    trained = _epoch_losses(tmp_path / "cache", tmp_path / "trained", lr=1e-3)
    frozen = _epoch_losses(tmp_path / "cache", tmp_path / "frozen", lr=0.0)
    assert len(trained) == len(frozen) == EPOCHS
    assert trained[0] == pytest.approx(frozen[0], rel=0.05)  # the same batches, barely trained after warmup steps
    # measured: 1.72 -> 1.09 trained, 1.73 -> 1.25 frozen; the runs are deterministic, so 5 % is headroom for
    # floating-point differences between machines only
    assert trained[-1] < trained[0] and trained[-1] < 0.95 * frozen[-1], (trained, frozen)
