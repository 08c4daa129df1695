"""Contrastive pretraining end to end on tiny synthetic data: monitors, model selection, checkpoints, resume, seeds."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lungheart_cl.callbacks import EncoderExport, PairFallbackMonitor, RandomStateCheckpoint, SelectionCheckpoint
from lungheart_cl.checkpointing import AtomicCheckpointIO, load_pretrained
from lungheart_cl.data.datamodule import PretrainDataModule
from lungheart_cl.encoders import SmallCNN
from lungheart_cl.losses import MetadataNTXent
from lungheart_cl.pretrain import ContrastivePretraining
from lungheart_cl.views import TimeMask, ViewPipeline

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
# PhysioNet 2016 (synthetic): normal vs abnormal scored per recording, several windows per recording; on this
# data and seed the two monitors peak in different epochs, so a test can tell which one selected
HEART_DATA = {"dataset": "physionet2016", "synthetic_patients": 60, "batch_strata": []}
HEART_MONITOR = {"sample_rate": 2000, "monitor": "task_probe_auroc", "monitor_labelled_patients": 12}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _data(cache_dir, **kwargs) -> PretrainDataModule:
    return PretrainDataModule(**{"dataset": "icbhi", "cache_dir": str(cache_dir), "synthetic_patients": 24,
                                 "batch_size": 16, "num_workers": 0, "batch_strata": ["age_group", "sex"],
                                 "monitor_bank_size": 200, "stats_segments": 200, **kwargs})


def _model(**kwargs) -> ContrastivePretraining:
    return ContrastivePretraining(encoder=SmallCNN(channels=(8, 16)), views=ViewPipeline(spec=[TimeMask(0.2, 2)]),
                                  loss=MetadataNTXent(0.1, negative_keys=["age_group", "sex"]),
                                  projector_hidden_dim=32, projector_dim=16, stats_segments=200, scheme="test", **kwargs)


def _trainer(root, max_epochs: int, extra_callbacks: list[Callback] = (), **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=max_epochs, limit_train_batches=3, default_root_dir=root, accelerator="cpu",
                     logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     use_distributed_sampler=False, deterministic=True, plugins=[AtomicCheckpointIO()],
                     callbacks=[*extra_callbacks, RandomStateCheckpoint(), EncoderExport(),
                                SelectionCheckpoint(dirpath=root),
                                ModelCheckpoint(dirpath=root, filename="last")], **kwargs)


def test_fit_logs_the_monitor_checkpoints_and_exports_the_encoder(cache_dir, tmp_path):
    L.seed_everything(0)
    model, trainer = _model(), _trainer(tmp_path, 2)
    trainer.fit(model, datamodule=_data(cache_dir))
    metrics = trainer.callback_metrics
    assert 0.0 <= float(metrics["val/knn_auroc"]) <= 1.0 and 0.0 <= float(metrics["val/task_probe_auroc"]) <= 1.0
    assert 0.0 <= model.knn_auroc_init <= 1.0 and 0.0 <= model.task_probe_auroc_init <= 1.0
    assert trainer.checkpoint_callback.monitor == "val/knn_auroc"  # the default selection
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
    initial = load_pretrained(tmp_path / "encoder-init.pt")  # the random-init baseline of the same network
    assert initial.provenance["initial_weights"] and initial.provenance["knn_auroc_init"] == model.knn_auroc_init
    torch.testing.assert_close(initial.frontend.mel_mean, model.frontend.mel_mean)
    L.seed_everything(0)
    for key, value in _model().encoder.state_dict().items():  # the seeded initial weights, not trained ones
        torch.testing.assert_close(initial.encoder.state_dict()[key], value)
    assert not torch.equal(initial.encoder.state_dict()["features.0.weight"], exported.encoder.state_dict()["features.0.weight"])


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
        keys = ("train/loss_epoch", "val/knn_auroc", "val/probe_auroc", "val/task_probe_auroc")
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
@pytest.mark.parametrize("setting", ["knn", "task_probe"])
def test_seeded_runs_repeat_and_resume_continues_exactly(cache_dir, tmp_path, num_workers, setting):
    data_args, model_args = ({}, {}) if setting == "knn" else (HEART_DATA, HEART_MONITOR)

    def fit(root, *callbacks, ckpt_path=None):
        L.seed_everything(0)
        model, trainer = _model(**model_args), _trainer(root, 3, extra_callbacks=list(callbacks))
        trainer.fit(model, datamodule=_data(cache_dir, num_workers=num_workers, **data_args), ckpt_path=ckpt_path)
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
    assert resumed.task_probe_auroc_init == straight.task_probe_auroc_init
    assert resumed.monitor_patients == straight.monitor_patients
    epochs = straight_metrics.epochs
    assert all(0.0 <= epochs[e]["val/task_probe_auroc"] <= 1.0 for e in epochs)
    selected = straight.selection_metric
    best = max(epochs, key=lambda epoch: epochs[epoch][selected])  # the first maximum, as ModelCheckpoint keeps it
    assert Path(trainer.checkpoint_callback.best_model_path).name.startswith(f"epoch={best}-")
    if setting == "task_probe":
        other = max(epochs, key=lambda epoch: epochs[epoch]["val/knn_auroc"])
        assert other != best, "the monitors must peak in different epochs for this test to tell them apart"
        assert len(straight.monitor_patients) == 12
        data = trainer.datamodule
        val_rows = data.rows("val")
        recordings = sorted(set(data.manifest["recording_id"][val_rows].tolist()))
        scored = straight.last_task_probe.predictions  # scored per recording, as the task is
        assert sorted(scored.ids.tolist()) == recordings and len(recordings) < len(val_rows)


def test_wrong_sample_rate_between_model_and_data_is_refused(cache_dir, tmp_path):
    model = ContrastivePretraining(encoder=SmallCNN(channels=(8,)), sample_rate=2000)
    with pytest.raises(ValueError, match="2000 Hz.*4000 Hz"):
        _trainer(tmp_path, 1).fit(model, datamodule=_data(cache_dir))


class _FallbackFractions(Callback):
    def __init__(self):
        self.epochs: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append(float(trainer.callback_metrics["train/pair_fallback_fraction"]))


@pytest.mark.parametrize("dataset, policy, falls_back", [("physionet2016", "same_patient_different_location", True),
                                                         ("icbhi", "same_patient_different_location", False),
                                                         ("icbhi", "same_segment", False)])
def test_pairs_that_fall_back_are_logged_and_warned_through_the_trainer(cache_dir, tmp_path, caplog, dataset, policy,
                                                                        falls_back):
    """PhysioNet 2016 has one location per patient: every different-location pair falls back, so the run is plain
    SimCLR; it is logged every epoch and said once. ICBHI patients have several locations."""
    heart = dataset == "physionet2016"
    data = _data(cache_dir, pair_policy=policy, **(HEART_DATA if heart else {}))
    fractions = _FallbackFractions()
    with caplog.at_level("WARNING", logger="lungheart_cl.callbacks"):
        trainer = L.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0, default_root_dir=tmp_path,
                            accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False, use_distributed_sampler=False,
                            callbacks=[PairFallbackMonitor(), fractions])
        trainer.fit(_model(sample_rate=2000 if heart else 4000), datamodule=data)
    warnings = [r.getMessage() for r in caplog.records if "fell back" in r.getMessage()]
    assert len(fractions.epochs) == 2
    if falls_back:
        assert fractions.epochs == [1.0, 1.0]
        assert len(warnings) == 1 and f"pair policy {policy} fell back for 100% of the pairs of epoch 0" in warnings[0]
    else:
        assert all(f < 0.5 for f in fractions.epochs) and not warnings
        assert (policy == "same_segment") == all(f == 0.0 for f in fractions.epochs)


def _logged_per_epoch(metrics_csv: Path, keys: tuple[str, ...]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    with open(metrics_csv) as handle:
        for row in csv.DictReader(handle):
            for key in keys:
                if row.get(key) and row["epoch"]:
                    out.setdefault(int(row["epoch"]), {})[key] = float(row[key])
    return out


def test_the_cli_selects_the_best_encoder_on_the_chosen_monitor(cache_dir, tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(REPO))
    args = ["--config", str(REPO / "experiments" / "physionet2016" / "pretrain.yaml"), "--data.root", "null",
            "--data.synthetic_patients", "60", "--data.cache_dir", str(cache_dir), "--data.batch_size", "16",
            "--data.num_workers", "0", "--data.monitor_bank_size", "200", "--model.encoder",
            "lungheart_cl.encoders.SmallCNN", "--model.encoder.init_args.channels", "[8, 16]",
            "--model.projector_hidden_dim", "32", "--model.projector_dim", "16", "--model.stats_segments", "100",
            "--model.monitor", "task_probe_auroc", "--model.monitor_labelled_patients", "12",
            "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar", "false"]
    run = subprocess.run([sys.executable, "-m", "lungheart_cl", "pretrain", *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = tmp_path / "runs" / "pretrain" / "version_0"
    logged = _logged_per_epoch(folder / "metrics.csv", ("val/task_probe_auroc", "val/knn_auroc"))
    assert sorted(logged) == [0, 1, 2]
    assert all(0.0 <= logged[e]["val/task_probe_auroc"] <= 1.0 for e in logged)
    best = max(logged, key=lambda epoch: logged[epoch]["val/task_probe_auroc"])
    assert best != max(logged, key=lambda epoch: logged[epoch]["val/knn_auroc"]), "the monitors must disagree here"
    summary = json.loads((folder / "checkpoints" / "pretrain-summary.json").read_text())
    assert Path(summary["best_checkpoint"]).name == f"best-epoch={best:02d}.ckpt"
    assert summary["monitor"] == "val/task_probe_auroc" and summary["monitor_labelled_patients"] == 12
    assert summary["monitor_best"] == pytest.approx(logged[best]["val/task_probe_auroc"])
    assert summary["val_knn_auroc_best"] is None  # not what selected here
    exported = load_pretrained(folder / "checkpoints" / "encoder-best.pt")
    assert exported.provenance["epoch"] == best
    assert exported.provenance["task_probe_auroc_init"] == summary["monitor_before"]
    line = (f"validation recording-level probe AUROC (12 labelled patients): {summary['monitor_before']:.3f} "
            f"(random init) -> {summary['monitor_best']:.3f} (best epoch)")
    assert line in run.stdout, run.stdout[-2000:]


def test_a_front_end_the_data_module_computed_no_statistics_for_is_refused(cache_dir, tmp_path):
    with pytest.raises(ValueError, match="statistics for .*'f_min': 50.0.*'f_min': 25.0.*data.frontend"):
        _trainer(tmp_path, 1).fit(_model(f_min=25.0), datamodule=_data(cache_dir))
