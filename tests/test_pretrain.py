"""Contrastive pretraining end to end on a tiny synthetic ICBHI: monitor, checkpoints, resume, seeds."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lungheart_cl.callbacks import EncoderExport
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


def _trainer(root, max_epochs: int, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=max_epochs, limit_train_batches=3, default_root_dir=root, accelerator="cpu",
                     logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     use_distributed_sampler=False, deterministic=True, plugins=[AtomicCheckpointIO()],
                     callbacks=[ModelCheckpoint(dirpath=root, monitor="val/knn_auroc", mode="max", save_last=True),
                                EncoderExport()], **kwargs)


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


def test_seeded_runs_repeat_and_resume_continues_exactly(cache_dir, tmp_path):
    L.seed_everything(0)
    straight = _model()
    _trainer(tmp_path / "a", 2).fit(straight, datamodule=_data(cache_dir))
    L.seed_everything(0)
    again = _model()
    _trainer(tmp_path / "b", 2).fit(again, datamodule=_data(cache_dir))
    torch.testing.assert_close(_weights(straight), _weights(again))  # repeatable on CPU

    L.seed_everything(0)
    first = _model()
    _trainer(tmp_path / "c", 1).fit(first, datamodule=_data(cache_dir))
    resumed = _model()
    trainer = _trainer(tmp_path / "c", 2)
    trainer.fit(resumed, datamodule=_data(cache_dir), ckpt_path=str(tmp_path / "c" / "last.ckpt"))
    assert trainer.global_step == 6
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 6  # the schedule continued rather than restarting
    assert not torch.allclose(_weights(first), _weights(resumed))  # it trained on


def test_wrong_sample_rate_between_model_and_data_is_refused(cache_dir, tmp_path):
    model = ContrastivePretraining(encoder=SmallCNN(channels=(8,)), sample_rate=2000)
    with pytest.raises(ValueError, match="2000 Hz.*4000 Hz"):
        _trainer(tmp_path, 1).fit(model, datamodule=_data(cache_dir))
