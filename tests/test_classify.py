"""The downstream classifier: modes, checkpoint compatibility, selection on validation, results JSON."""

from __future__ import annotations

import json
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lungheart_cl.callbacks import RandomStateCheckpoint, ResumableModelCheckpoint
from lungheart_cl.checkpointing import AtomicCheckpointIO, CheckpointError, export_encoder
from lungheart_cl.classify import Classifier, resolve_checkpoint
from lungheart_cl.data.datamodule import ClassificationDataModule
from lungheart_cl.encoders import ResNet18Encoder, SmallCNN
from lungheart_cl.frontend import LogMelFrontend
from lungheart_cl.views import time_mask

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    frontend = LogMelFrontend(4000)
    frontend.set_statistics(torch.full((64,), -5.0), torch.full((64,), 2.0))
    path = tmp_path_factory.mktemp("enc") / "encoder-best.pt"
    return export_encoder(SmallCNN(channels=(8, 16)), frontend, path, {"scheme": "unit_test"})


def _data(cache_dir, fraction=1.0) -> ClassificationDataModule:
    return ClassificationDataModule(dataset="icbhi", cache_dir=str(cache_dir), synthetic_patients=24, batch_size=32,
                                    num_workers=0, label_fraction=fraction)


def _fit_and_test(model, data, root):
    trainer = L.Trainer(max_epochs=3, default_root_dir=root, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        use_distributed_sampler=False,
                        callbacks=[ModelCheckpoint(dirpath=root, monitor="val/auroc", mode="max")])
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, ckpt_path="best", weights_only=True)
    return trainer


def test_linear_probe_writes_results_with_patient_cluster_cis(cache_dir, exported, tmp_path):
    model = Classifier(mode="linear", checkpoint=str(exported), results_dir=str(tmp_path), bootstrap_samples=200)
    frozen = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainer = _fit_and_test(model, _data(cache_dir, 0.5), tmp_path / "run")
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, frozen[key])  # the encoder never moved, BN statistics included
    results = json.loads((tmp_path / "icbhi-healthy_vs_disease-unit_test-linear-lf0.5-seed0.json").read_text())
    assert results["scheme"] == "unit_test" and results["mode"] == "linear" and results["label_fraction"] == 0.5
    auroc = results["metrics"]["auroc"]
    assert auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"]
    assert results["n_patients"] == trainer.datamodule.summary()["test_patients"]
    assert results["best_val_auroc"] is not None and results["selected_checkpoint"].endswith(".ckpt")
    assert results["pretrained"]["checkpoint"] == str(exported)
    picture = tmp_path / "icbhi-healthy_vs_disease-unit_test-linear-lf0.5-seed0-embeddings.png"
    assert picture.is_file() and picture.stat().st_size > 10_000  # label, age group, sex, location, device panels


def test_finetune_moves_the_encoder_and_scratch_needs_no_checkpoint(cache_dir, exported, tmp_path):
    model = Classifier(mode="finetune", checkpoint=str(exported), results_dir=str(tmp_path), bootstrap_samples=50)
    before = torch.cat([p.detach().flatten().clone() for p in model.encoder.parameters()])
    _fit_and_test(model, _data(cache_dir), tmp_path / "ft")
    after = torch.cat([p.detach().flatten() for p in model.encoder.parameters()])
    assert not torch.allclose(before, after)
    scratch = Classifier(mode="scratch", encoder=SmallCNN(channels=(8,)), results_dir=str(tmp_path),
                         bootstrap_samples=50)
    _fit_and_test(scratch, _data(cache_dir), tmp_path / "scratch")
    assert (tmp_path / "icbhi-healthy_vs_disease-supervised_scratch-scratch-lf1-seed0.json").is_file()


def test_mode_and_checkpoint_combinations_are_checked(exported):
    with pytest.raises(ValueError, match="needs a pretrained checkpoint"):
        Classifier(mode="finetune")
    with pytest.raises(ValueError, match="from random weights"):
        Classifier(mode="scratch", checkpoint=str(exported))


def test_incompatible_checkpoints_name_the_file_and_the_mismatch(exported, tmp_path):
    with pytest.raises(CheckpointError, match="ResNet18Encoder"):
        Classifier(mode="linear", checkpoint=str(exported), encoder=ResNet18Encoder())
    with pytest.raises(CheckpointError, match="pretrained on 4000 Hz.*2000 Hz"):
        Classifier(mode="linear", checkpoint=str(exported), sample_rate=2000)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        Classifier(mode="linear", checkpoint=str(garbage))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.ckpt: not a lungheart-cl"):
        Classifier(mode="linear", checkpoint=str(foreign))
    payload = torch.load(exported, weights_only=True)
    payload["encoder_state"].pop(next(iter(payload["encoder_state"])))
    torch.save(payload, tmp_path / "truncated.pt")
    with pytest.raises(CheckpointError, match="truncated.pt: weights do not fit"):
        Classifier(mode="linear", checkpoint=str(tmp_path / "truncated.pt"))


def test_latest_without_any_pretraining_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="make pretrain"):
        Classifier(mode="linear", checkpoint="latest")


def test_latest_is_the_newest_make_pretrain_encoder_not_a_sweeps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "runs" / "pretrain" / "version_3" / "checkpoints" / "encoder-best.pt"
    sweeps = tmp_path / "runs" / "paper_embedded" / "pretrain" / "x" / "checkpoints" / "encoder-best.pt"
    for path in (mine, sweeps):  # the sweep's is written last, so it is the newest file under runs/
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (1_000 + len(str(path)), 1_000 + len(str(path))))
    assert sweeps.stat().st_mtime > mine.stat().st_mtime
    assert resolve_checkpoint("latest") == str(mine.relative_to(tmp_path))
    assert resolve_checkpoint(None) is None


def test_an_encoder_pretrained_on_test_patients_is_refused(cache_dir, tmp_path):
    data = _data(cache_dir)
    data.setup("fit")
    test_patient = data.split.patients(data.manifest, "test")[0]
    frontend = LogMelFrontend(4000)
    frontend.set_statistics(torch.zeros(64), torch.ones(64))
    provenance = {"data": {"dataset": "icbhi", "pool_patients": [test_patient]}}
    path = export_encoder(SmallCNN(channels=(8,)), frontend, tmp_path / "leaky.pt", provenance)
    model = Classifier(mode="linear", checkpoint=str(path), results_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match=f"leaky.pt: pretrained on 1 patient.*{test_patient}"):
        _fit_and_test(model, _data(cache_dir), tmp_path / "run")


class _Interrupted(Exception):
    pass


class _InterruptAtEpoch1(Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            raise _Interrupted


class _EpochMetrics(Callback):
    def __init__(self):
        self.epochs: dict[int, tuple[float, float]] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        self.epochs[trainer.current_epoch] = (float(metrics["train/loss"]), float(metrics["val/auroc"]))


def test_resumed_finetuning_with_views_and_workers_repeats_the_uninterrupted_run(cache_dir, exported, tmp_path):
    def fit(root, *callbacks, ckpt_path=None):
        L.seed_everything(0)
        model = Classifier(mode="finetune", checkpoint=str(exported), views=time_mask(), results_dir=str(tmp_path),
                           bootstrap_samples=50)
        data = ClassificationDataModule(dataset="icbhi", cache_dir=str(cache_dir), synthetic_patients=24,
                                        batch_size=32, num_workers=2)
        trainer = L.Trainer(max_epochs=3, default_root_dir=root, accelerator="cpu", logger=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            use_distributed_sampler=False, plugins=[AtomicCheckpointIO()],
                            callbacks=[*callbacks, RandomStateCheckpoint(),
                                       ResumableModelCheckpoint(dirpath=root, monitor="val/auroc", mode="max"),
                                       ModelCheckpoint(dirpath=root, filename="last")])
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return model

    straight_metrics, resumed_metrics = _EpochMetrics(), _EpochMetrics()
    straight = fit(tmp_path / "a", straight_metrics)
    with pytest.raises(_Interrupted):
        fit(tmp_path / "b", _InterruptAtEpoch1())
    resumed = fit(tmp_path / "b", resumed_metrics, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert sorted(resumed_metrics.epochs) == [1, 2]
    for epoch in (1, 2):
        assert resumed_metrics.epochs[epoch] == straight_metrics.epochs[epoch], epoch
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
