"""Contrastive pretraining end to end on a tiny synthetic ICBHI: monitor, checkpoints, resume, seeds."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lungheart_cl.callbacks import EncoderExport, RandomStateCheckpoint, ResumableModelCheckpoint
from lungheart_cl.checkpointing import AtomicCheckpointIO, load_pretrained
from lungheart_cl.data.datamodule import PretrainDataModule
from lungheart_cl.encoders import SmallCNN
from lungheart_cl.losses import MetadataNTXent
from lungheart_cl.pretrain import ContrastivePretraining
from lungheart_cl.views import time_mask

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _data(cache_dir, **kwargs) -> PretrainDataModule:
    return PretrainDataModule(**{"dataset": "icbhi", "cache_dir": str(cache_dir), "synthetic_patients": 24,
                                 "batch_size": 16, "num_workers": 0, "batch_strata": ["age_group", "sex"],
                                 "monitor_bank_size": 200, **kwargs})


def _model() -> ContrastivePretraining:
    return ContrastivePretraining(encoder=SmallCNN(channels=(8, 16)), views=time_mask(),
                                  loss=MetadataNTXent(0.1, negative_keys=["age_group", "sex"]),
                                  projector_hidden_dim=32, projector_dim=16, stats_segments=200, scheme="test")


def _trainer(root, max_epochs: int, extra_callbacks: list[Callback] = (), **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=max_epochs, limit_train_batches=3, default_root_dir=root, accelerator="cpu",
                     logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     use_distributed_sampler=False, deterministic=True, plugins=[AtomicCheckpointIO()],
                     callbacks=[*extra_callbacks, RandomStateCheckpoint(), EncoderExport(),
                                ResumableModelCheckpoint(dirpath=root, monitor="val/knn_auroc", mode="max"),
                                ModelCheckpoint(dirpath=root, filename="last")], **kwargs)


def test_fit_logs_the_monitor_checkpoints_and_exports_the_encoder(cache_dir, tmp_path):
    L.seed_everything(0)
    model, trainer = _model(), _trainer(tmp_path, 2)
    trainer.fit(model, datamodule=_data(cache_dir))
    metrics = trainer.callback_metrics
    assert 0.0 <= float(metrics["val/knn_auroc"]) <= 1.0
    assert 0.0 <= model.knn_auroc_init <= 1.0
    assert torch.isfinite(metrics["train/loss_epoch"])
    assert bool(model.frontend.fitted)
    for name in ("last.ckpt", "encoder-best.pt", "encoder-last.pt", "pretrain-summary.json"):
        assert (tmp_path / name).is_file(), name
    exported = load_pretrained(tmp_path / "encoder-last.pt")
    assert exported.provenance["scheme"] == "test"
    assert exported.encoder.config == model.encoder.config
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(exported.encoder.state_dict()[key], value)
    torch.testing.assert_close(exported.frontend.mel_mean, model.frontend.mel_mean)
    from_checkpoint = load_pretrained(tmp_path / "last.ckpt")  # the Lightning checkpoint works too
    assert from_checkpoint.encoder.config == model.encoder.config


class PairRecorder(Callback):
    """The (anchor, partner) rows of every training batch, per epoch, as the model receives them."""

    def __init__(self):
        self.epochs: dict[int, list[tuple[int, int]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pairs = zip(batch["index"].tolist(), batch["partner_index"].tolist())
        self.epochs.setdefault(trainer.current_epoch, []).extend(pairs)


def test_every_epoch_draws_new_batches_and_partners_through_the_trainer(cache_dir, tmp_path):
    L.seed_everything(0)
    recorder = PairRecorder()
    data = _data(cache_dir, pair_policy="same_patient", num_workers=2)
    trainer = L.Trainer(max_epochs=3, limit_val_batches=0, default_root_dir=tmp_path, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        use_distributed_sampler=False, callbacks=[recorder])
    trainer.fit(_model(), datamodule=data)
    epochs = [recorder.epochs[e] for e in range(3)]
    assert all(len(pairs) == len(epochs[0]) > 0 for pairs in epochs)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert epochs[a] != epochs[b]  # batch order differs
        assert sorted(epochs[a]) != sorted(epochs[b])  # and so do the partners drawn for the same anchors
    anchors = [sorted(a for a, _ in pairs) for pairs in epochs]
    assert len(set(anchors[0])) == len(anchors[0])  # each pool row once per epoch


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.encoder.parameters()])


class EpochMetrics(Callback):
    """The monitored values of every epoch, as the checkpoint callback sees them."""

    def __init__(self):
        self.epochs: dict[int, dict[str, float]] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        keys = ("train/loss_epoch", "val/knn_auroc", "val/probe_auroc")
        self.epochs[trainer.current_epoch] = {k: float(trainer.callback_metrics[k]) for k in keys}


class Interrupted(Exception):
    pass


class Interrupt(Callback):
    """Stops the run as epoch 1 starts, after epoch 0's checkpoints were written (as a kill would)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            raise Interrupted


# with workers through the CLI by default (test_checkpointing.py); here too with `make test-slow`
@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_seeded_runs_repeat_and_resume_continues_exactly(cache_dir, tmp_path, num_workers):
    def fit(root, *callbacks, ckpt_path=None):
        L.seed_everything(0)
        model, trainer = _model(), _trainer(root, 3, extra_callbacks=list(callbacks))
        trainer.fit(model, datamodule=_data(cache_dir, num_workers=num_workers), ckpt_path=ckpt_path)
        return model, trainer

    straight_metrics = EpochMetrics()
    straight, _ = fit(tmp_path / "a", straight_metrics)
    if num_workers == 0:
        again_metrics = EpochMetrics()
        again, _ = fit(tmp_path / "b", again_metrics)
        torch.testing.assert_close(_weights(straight), _weights(again))  # repeatable on CPU
        assert again_metrics.epochs == straight_metrics.epochs

    with pytest.raises(Interrupted):
        fit(tmp_path / "c", Interrupt())
    resumed_metrics = EpochMetrics()
    resumed, trainer = fit(tmp_path / "c", resumed_metrics, ckpt_path=str(tmp_path / "c" / "last.ckpt"))
    assert trainer.global_step == 9
    assert sorted(resumed_metrics.epochs) == [1, 2]
    for epoch in (1, 2):  # the same loss and monitor as the uninterrupted run, epoch by epoch
        assert resumed_metrics.epochs[epoch] == straight_metrics.epochs[epoch], epoch
    assert torch.equal(_weights(resumed), _weights(straight))
    assert resumed.knn_auroc_init == straight.knn_auroc_init  # from the checkpoint, not recomputed
    best = max(straight_metrics.epochs, key=lambda epoch: straight_metrics.epochs[epoch]["val/knn_auroc"])
    assert Path(trainer.checkpoint_callback.best_model_path).name.startswith(f"epoch={best}-")


def test_wrong_sample_rate_between_model_and_data_is_refused(cache_dir, tmp_path):
    model = ContrastivePretraining(encoder=SmallCNN(channels=(8,)), sample_rate=2000)
    with pytest.raises(ValueError, match="2000 Hz.*4000 Hz"):
        _trainer(tmp_path, 1).fit(model, datamodule=_data(cache_dir))
