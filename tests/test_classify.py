"""The downstream classifier: modes, checkpoint compatibility, selection on validation, results JSON."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lungheart_cl import probe
from lungheart_cl.callbacks import RandomStateCheckpoint, ResumableModelCheckpoint
from lungheart_cl.checkpointing import AtomicCheckpointIO, CheckpointError, export_encoder, resolve_checkpoint
from lungheart_cl.classifier_callbacks import EmbeddingPlot, PretrainingLeakCheck, ResultsWriter
from lungheart_cl.classify import Classifier
from lungheart_cl.data.datamodule import ClassificationDataModule
from lungheart_cl.data.sources import get_spec
from lungheart_cl.encoders import ResNet18Encoder, SmallCNN
from lungheart_cl.frontend import LogMelFrontend
from lungheart_cl.metrics import Predictions
from lungheart_cl.predict import load_classifier
from lungheart_cl.views import TimeMask, ViewPipeline

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]


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


def _data(cache_dir, fraction=1.0, task=None, frontend=None) -> ClassificationDataModule:
    return ClassificationDataModule(dataset="icbhi", cache_dir=str(cache_dir), synthetic_patients=24, batch_size=32,
                                    num_workers=0, label_fraction=fraction, task=task, frontend=frontend or {})


def _fit_and_test(model, data, root):
    trainer = L.Trainer(max_epochs=3, default_root_dir=root, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        use_distributed_sampler=False,
                        callbacks=[ModelCheckpoint(dirpath=root, monitor="val/auroc", mode="max"),
                                   PretrainingLeakCheck(), EmbeddingPlot(), ResultsWriter()])
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
    _check_predictions(results, trainer.datamodule)  # val_predictions: those of the selected epoch
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
        model = Classifier(mode="finetune", checkpoint=str(exported), views=ViewPipeline(spec=[TimeMask(0.2, 2)]),
                           results_dir=str(tmp_path), bootstrap_samples=50)
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
# ------------------------------------------------------------------ logistic probe, predictions, feature store
def _features(model, data, rows) -> np.ndarray:
    return torch.cat([model.features(batch) for batch in data.iterate_rows(rows)]).numpy()


def _recomputed_auroc(results: dict, payload: dict) -> float:
    predictions = Predictions.from_json(payload)
    return get_spec(results["dataset"]).metric(results["task"])(predictions.probs, predictions.labels)["auroc"]


def _check_predictions(results: dict, data) -> None:
    """test/val predictions: one entry per scored unit, and the reported AUROCs follow from them."""
    test, val = results["test_predictions"], results["val_predictions"]
    assert set(test) == set(val) == {"ids", "patients", "labels", "probs"}
    assert len(test["ids"]) == len(set(test["ids"])) == results["n_scored"]
    assert len(set(test["patients"])) == results["n_patients"]
    assert set(test["patients"]) == set(data.split.patients(data.manifest, "test"))
    assert set(val["patients"]) == set(data.split.patients(data.manifest, "val"))
    assert test["labels"] == data.labels[np.asarray(test["ids"])].tolist()  # segment-level tasks: ids are rows
    np.testing.assert_allclose(np.asarray(test["probs"]).sum(1), 1.0, atol=1e-5)
    assert _recomputed_auroc(results, test) == pytest.approx(results["metrics"]["auroc"]["value"], abs=1e-6)
    assert _recomputed_auroc(results, val) == pytest.approx(results["best_val_auroc"], abs=1e-6)


class _RecordingFolds(StratifiedGroupKFold):
    """StratifiedGroupKFold that records the patients of every split it makes."""

    patients: list[set] = []

    def split(self, X, y=None, groups=None):
        type(self).patients.append(set(np.asarray(groups).tolist()))
        return super().split(X, y, groups)


def test_logistic_head_is_sklearns_fit_with_c_chosen_inside_the_labelled_patients(cache_dir, exported, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setattr(probe, "StratifiedGroupKFold", _RecordingFolds)
    _RecordingFolds.patients = []
    model = Classifier(mode="logistic", checkpoint=str(exported), results_dir=str(tmp_path), bootstrap_samples=100,
                       embedding_plot="none")
    frozen = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    data = _data(cache_dir, 0.5)
    trainer = _fit_and_test(model, data, tmp_path / "run")  # max_epochs=3
    assert trainer.current_epoch == 1 and trainer.global_step == 1  # one epoch; the closed-form fit is its one step
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, frozen[key])
    labelled = set(data.labelled_patients)
    held_out = set(data.split.patients(data.manifest, "val")) | set(data.split.patients(data.manifest, "test"))
    assert _RecordingFolds.patients and all(patients == labelled for patients in _RecordingFolds.patients)
    assert not labelled & held_out and len(labelled) < len(data.split.patients(data.manifest, "train"))

    results = json.loads((tmp_path / "icbhi-healthy_vs_disease-unit_test-logistic-lf0.5-seed0.json").read_text())
    chosen = results["probe"]
    assert chosen["C"] in probe.DEFAULT_C_GRID and chosen["cv_patients"] == len(labelled)
    assert chosen["cv_segments"] == len(data.labelled_rows) and chosen["level"] == "segment"
    assert chosen["cv_auroc"] == max(s for s in chosen["cv_auroc_per_C"] if s is not None)
    assert Path(results["selected_checkpoint"]).name.startswith("epoch=0-")
    _check_predictions(results, data)

    # the head is scikit-learn's fit at the chosen C, on the same features: same probabilities
    rows, val_rows = data.labelled_rows, data.rows("val")
    labels = data.labels[rows]
    reference = make_pipeline(StandardScaler(), probe.logistic_regression(chosen["C"], labels, "balanced"))
    reference.fit(_features(model, data, rows), labels)
    val_features = _features(model, data, val_rows)
    with torch.no_grad():
        head = model.head.eval()(torch.from_numpy(val_features)).softmax(-1).double().numpy()
        loaded = load_classifier(results["selected_checkpoint"]).net.head.eval()  # what `predict` rebuilds
        from_checkpoint = loaded(torch.from_numpy(val_features)).softmax(-1).double().numpy()
    np.testing.assert_allclose(head, reference.predict_proba(val_features), atol=1e-5)
    np.testing.assert_allclose(from_checkpoint, head, atol=1e-6)
    assert not (head[:, 1] > 0.5).all() and not (head[:, 1] < 0.5).all()  # a real decision, not a constant


def _logistic_run(cache_dir, tmp_path, name: str, shuffle_seed: int | None) -> float:
    """Test AUROC of a random-init logistic probe on the 4-class cycles (crackles and wheezes are in the audio)."""
    data = _data(cache_dir, task="icbhi_4class", frontend={"channel_norm": True})  # statistics for the model's front end
    data.setup("fit")
    if shuffle_seed is not None:  # labels of the labelled windows permuted: no relation to the audio is left
        rows = data.labelled_rows
        data.labels[rows] = np.random.default_rng(shuffle_seed).permutation(data.labels[rows])
        data.description = dataclasses.replace(data.description, labelled_labels=data.labels[rows])  # what models see
    L.seed_everything(0)  # the same random encoder every time (its features come from the store after the first)
    model = Classifier(mode="logistic", encoder=SmallCNN(channels=(8, 16)), channel_norm=True, task="icbhi_4class",
                       num_classes=4, results_dir=str(tmp_path / name), bootstrap_samples=0, embedding_plot="none")
    _fit_and_test(model, data, tmp_path / name)
    results = json.loads(next((tmp_path / name).glob("*.json")).read_text())
    return results["metrics"]["auroc"]["value"]


def test_logistic_probe_learns_what_shuffled_labels_cannot(cache_dir, tmp_path):
    real = _logistic_run(cache_dir, tmp_path, "real", None)
    shuffled = [_logistic_run(cache_dir, tmp_path, f"shuffled{seed}", seed) for seed in range(3)]
    assert real > max(shuffled), (real, shuffled)


def test_a_warm_feature_store_gives_identical_results_without_running_the_encoder(cache_dir, exported, tmp_path):
    store = tmp_path / "features"
    runs = {}
    for run, mode in (("cold", "logistic"), ("warm", "logistic"), ("linear", "linear")):
        L.seed_everything(0)
        model = Classifier(mode=mode, checkpoint=str(exported), results_dir=str(tmp_path / run), bootstrap_samples=50,
                           embedding_plot="none", feature_cache_dir=str(store))
        calls = []
        model.encoder.register_forward_hook(lambda *args: calls.append(1))
        _fit_and_test(model, _data(cache_dir, 0.5), tmp_path / run)
        runs[run] = len(calls), json.loads(next((tmp_path / run).glob("*.json")).read_text())
    (cold_calls, cold), (warm_calls, warm), (linear_calls, linear) = runs["cold"], runs["warm"], runs["linear"]
    assert cold_calls > 0 and warm_calls == 0 and linear_calls == 0  # the linear probe reads the same store
    assert len(list(store.glob("*.npz"))) == 1
    for key in ("test_predictions", "val_predictions", "probe", "metrics", "best_val_auroc"):
        assert warm[key] == cold[key], key
    assert set(linear["test_predictions"]["ids"]) == set(cold["test_predictions"]["ids"])


def test_logistic_mode_through_the_cli(tmp_path):
    """`lungheart-cl finetune --model.mode logistic` on the 4-class default: one epoch whatever max_epochs says,
    multinomial head, predictions that reproduce the reported AUROCs."""
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "lungheart_cl", "finetune", "--config", str(REPO / "experiments/finetune_lung_default.yaml"),
         "--model.mode", "logistic", "--model.checkpoint", "null", "--model.encoder.class_path",
         "lungheart_cl.encoders.SmallCNN", "--model.encoder.init_args.channels", "[8, 16]",
         "--data.synthetic_patients", "24", "--data.num_workers", "0", "--data.label_fraction", "1.0",
         "--model.bootstrap_samples", "50", "--model.embedding_plot", "none", "--model.results_dir", "results"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = (tmp_path / "results").glob("*.json")
    results = json.loads(path.read_text())
    assert (results["mode"], results["scheme"], results["task"]) == ("logistic", "random_init", "icbhi_4class")
    assert results["probe"]["C"] in probe.DEFAULT_C_GRID and results["probe"]["folds"] >= 2
    assert results["config"]["model"]["feature_cache_dir"] == "auto"
    assert list((tmp_path / results["data"]["cache"] / "features").glob("*.npz"))
    data = ClassificationDataModule(dataset="icbhi", cache_dir=str(tmp_path / "cache"), synthetic_patients=24,
                                    num_workers=0, task="icbhi_4class")
    data.setup("fit")
    _check_predictions(results, data)
    assert len(results["test_predictions"]["probs"][0]) == 4
    (metrics,) = (tmp_path / "runs" / "finetune").glob("*/metrics.csv")
    epochs = {row["epoch"] for row in csv.DictReader(metrics.open()) if row.get("val/auroc")}
    assert epochs == {"0"}  # validated once, although the config says max_epochs 40
