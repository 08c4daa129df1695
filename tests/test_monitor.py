"""The pretraining monitor: the weighted kNN, its AUROC, and the task probe (scored at the task's level, on a
seeded class-stratified label budget)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lungheart_cl.data.sources import get_spec
from lungheart_cl.errors import ConfigError
from lungheart_cl.metrics import auroc as metrics_auroc
from lungheart_cl.monitor import auroc, knn_class_scores, monitor_patients, task_probe_score
from lungheart_cl.probe import logistic_regression


def _windows(recordings: int, per_recording: int, recordings_per_patient: int, seed: int):
    """Window features whose label signal is weak per window (noise) and clear once a recording's windows are
    averaged; a manifest where each patient holds ``recordings_per_patient`` recordings of one label."""
    rng = np.random.default_rng(seed)
    recording_labels = np.arange(recordings) % 2
    rows_per = np.repeat(np.arange(recordings), per_recording)
    labels = recording_labels[rows_per]
    features = rng.normal(size=(len(rows_per), 8))
    features[:, 0] += 0.6 * (2 * labels - 1) + rng.normal(0, 0.3, recordings)[rows_per]
    manifest = {"recording_id": np.asarray([f"r{r:03d}" for r in rows_per]),
                "patient_id": np.asarray([f"p{(r // (2 * recordings_per_patient)) * 2 + r % 2:03d}" for r in rows_per])}
    return features, labels, manifest


def _by_hand(probs: np.ndarray, labels: np.ndarray, keys: np.ndarray) -> tuple[int, float]:
    """(units, AUROC) of window probabilities averaged per key, written out without metrics.aggregate."""
    means, unit_labels = {}, {}
    for p, y, key in zip(probs, labels, keys):
        means.setdefault(key, []).append(p)
        unit_labels[key] = y
    units = sorted(means)
    return len(units), roc_auc_score([unit_labels[u] for u in units], [np.mean(means[u]) for u in units])


@pytest.mark.parametrize("dataset, task_name, column", [("physionet2016", "normal_vs_abnormal", "recording_id"),
                                                         ("circor2022", "murmur", "patient_id")])
def test_the_task_probe_scores_the_average_of_each_units_windows(dataset, task_name, column):
    task = get_spec(dataset).task(task_name)  # PhysioNet: windows averaged per recording; CirCor murmur: per patient
    features, labels, manifest = _windows(recordings=80, per_recording=6, recordings_per_patient=2, seed=0)
    rows = np.arange(len(labels))
    bank, val = rows[rows < 240], rows[rows >= 240]  # disjoint recordings and patients
    score = task_probe_score(features[bank], labels[bank], bank, features[val], labels[val], val, manifest, task, c=1.0)

    pipeline = make_pipeline(StandardScaler(), logistic_regression(1.0, labels[bank])).fit(features[bank], labels[bank])
    window_probs = pipeline.predict_proba(features[val])[:, 1]
    units, expected = _by_hand(window_probs, labels[val], manifest[column][val])
    assert units == len(score.predictions.labels) < score.windows == len(val)
    assert sorted(score.predictions.ids.tolist()) == sorted(set(manifest[column][val].tolist()))
    assert score.auroc == pytest.approx(expected, abs=1e-6)
    window_level = roc_auc_score(labels[val], window_probs)
    assert abs(window_level - expected) > 0.02, "the construction must tell window- from unit-level scoring"


def test_a_segment_level_task_scores_every_window_and_cv_chooses_c_from_the_grid():
    task = get_spec("icbhi").task("crackle")
    features, labels, manifest = _windows(recordings=40, per_recording=5, recordings_per_patient=1, seed=1)
    rows = np.arange(len(labels))
    bank, val = rows[rows < 120], rows[rows >= 120]
    grid = (0.01, 1.0)
    score = task_probe_score(features[bank], labels[bank], bank, features[val], labels[val], val, manifest, task,
                             c=None, c_grid=grid)
    assert len(score.predictions.labels) == score.windows == len(val)
    assert score.c in grid and score.patients == len(set(manifest["patient_id"][bank].tolist()))
    assert 0.5 < score.auroc <= 1.0


def test_the_label_budget_is_class_stratified_seeded_and_checked():
    patients = [f"p{i:02d}" for i in range(30)]
    strata = {p: int(i % 3 == 0) for i, p in enumerate(patients)}  # a third in class 1
    assert monitor_patients(patients, strata, None, seed=0) == sorted(patients)
    chosen = monitor_patients(patients, strata, 9, seed=0)
    assert len(chosen) == 9 and {strata[p] for p in chosen} == {0, 1}
    assert sum(strata[p] for p in chosen) == 3  # proportional to the class sizes
    assert chosen == monitor_patients(patients, strata, 9, seed=0)
    assert chosen != monitor_patients(patients, strata, 9, seed=1)
    with pytest.raises(ConfigError, match="model.monitor_labelled_patients 31 exceeds the 30"):
        monitor_patients(patients, strata, 31, seed=0)
    with pytest.raises(ConfigError, match="model.monitor_labelled_patients 1"):
        monitor_patients(patients, strata, 1, seed=0)


def test_the_monitor_auroc_is_the_metrics_auroc_averaging_only_the_classes_present():
    # a 3-class task whose validation windows hold classes 0 and 1 only, perfectly ranked: the absent class
    # has no AUROC, so the macro mean is 1 (averaging a 0 for it, as the monitor once did, gave 2/3)
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert float(auroc(scores, labels, 3)) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    for num_classes in (2, 4):
        probs = rng.dirichlet(np.ones(num_classes), 50).astype(np.float32)
        target = rng.integers(0, num_classes, 50)
        assert float(auroc(torch.from_numpy(probs), torch.from_numpy(target), num_classes)) == pytest.approx(
            metrics_auroc(probs, target), abs=1e-7)
    assert np.isnan(float(auroc(scores, torch.zeros(4, dtype=torch.long), 3)))  # one class: undefined


def _clusters(n: int, num_classes: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings around one random direction per class (64-d), with isotropic noise of scale `spread`."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, 64, generator=generator)
    labels = torch.arange(n) % num_classes
    return centres[labels] + spread * torch.randn(n, 64, generator=generator), labels


@pytest.mark.parametrize("num_classes", [2, 4])
def test_the_knn_monitor_scores_separable_embeddings_near_1_and_shuffled_labels_near_chance(num_classes):
    bank, bank_labels = _clusters(400, num_classes, spread=0.5, seed=0)
    val, val_labels = _clusters(400, num_classes, spread=0.5, seed=0)
    val = val + 0.1 * torch.randn(val.shape, generator=torch.Generator().manual_seed(2))  # same centres, new noise
    scores = knn_class_scores(bank, bank_labels, val, num_classes, k=10, chunk=64)
    torch.testing.assert_close(scores.sum(1), torch.ones(len(val)))
    assert float(auroc(scores, val_labels, num_classes)) > 0.99
    shuffled = bank_labels[torch.randperm(len(bank_labels), generator=torch.Generator().manual_seed(1))]
    chance = float(auroc(knn_class_scores(bank, shuffled, val, num_classes, k=10), val_labels, num_classes))
    assert abs(chance - 0.5) < 0.08  # 400 queries: the null AUROC's SD is about 0.02


def test_knn_votes_are_the_exp_similarity_weights_of_the_k_nearest_by_cosine():
    bank = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])  # scale must not matter (cosine)
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[2.0, 0.5]])
    scores = knn_class_scores(bank, labels, query, num_classes=2, k=2, temperature=0.5)
    q = query[0] / query[0].norm()
    sims = torch.stack([q @ (b / b.norm()) for b in bank])  # the two nearest: rows 1 and 0
    w0, w1 = (sims[0] / 0.5).exp(), (sims[1] / 0.5).exp()
    torch.testing.assert_close(scores[0], torch.stack([w0, w1]) / (w0 + w1))
    assert knn_class_scores(bank, labels, query, num_classes=2, k=50).shape == (1, 2)  # k capped at the bank size
