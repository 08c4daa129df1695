"""Metrics against scikit-learn and hand-computed cases; the patient-cluster bootstrap's coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import f1_score, roc_auc_score

from lungheart_cl.data.sources import get_spec
from lungheart_cl.data.sources.circor2022 import murmur_metrics
from lungheart_cl.data.sources.icbhi import icbhi_metrics
from lungheart_cl.metrics import (
    Predictions,
    aggregate,
    binary_metrics,
    cluster_bootstrap,
    evaluate,
    segment_bootstrap,
)


def _probs(p1: np.ndarray) -> np.ndarray:
    return np.stack([1 - p1, p1], 1)


@pytest.mark.parametrize("seed", range(3))
def test_binary_auroc_and_f1_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(0.3 * labels + rng.random(300) * 0.8, 0, 1)
    scores[:20] = 0.5  # ties
    metrics = binary_metrics(_probs(scores), labels)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert metrics["f1"] == pytest.approx(f1_score(labels, scores >= 0.5), abs=1e-9)


def test_multiclass_auroc_is_the_macro_one_vs_rest_of_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4)) + np.eye(4)[labels] * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert icbhi_metrics(probs, labels)["auroc"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-5)


def test_sensitivity_specificity_and_macc_by_hand():
    labels = np.asarray([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    predicted = np.asarray([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1])  # TP 3, FN 1, FP 1, TN 5
    metrics = binary_metrics(_probs(predicted), labels)
    assert metrics["sensitivity"] == pytest.approx(3 / 4)
    assert metrics["specificity"] == pytest.approx(5 / 6)
    assert metrics["macc"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert metrics["accuracy"] == pytest.approx(8 / 10)


def test_the_threshold_is_inclusive_in_float64_and_undefined_ratios_are_nan():
    # 0.5 is abnormal; 0.5 - 1e-12 is not, though it rounds to 0.5 in float32 (torchmetrics thresholds
    # float32 with >, which would get both wrong)
    labels = np.asarray([1, 1, 0, 0])
    metrics = binary_metrics(_probs(np.asarray([0.5, 0.5 - 1e-12, 0.5 - 1e-12, 0.1])), labels)
    assert (metrics["sensitivity"], metrics["specificity"], metrics["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    only_normal = binary_metrics(_probs(np.asarray([0.7, 0.2, 0.1])), np.zeros(3, dtype=np.int64))
    assert np.isnan(only_normal["sensitivity"]) and np.isnan(only_normal["auroc"]) and np.isnan(only_normal["macc"])
    assert only_normal["specificity"] == pytest.approx(2 / 3) and only_normal["f1"] == 0.0
    assert only_normal["accuracy"] == pytest.approx(2 / 3)


def test_icbhi_score_by_hand():
    # classes: 0 normal, 1 crackle, 2 wheeze, 3 both
    labels = np.asarray([0, 0, 0, 0, 1, 1, 2, 3, 3, 2])
    predicted = np.asarray([0, 0, 1, 3, 1, 2, 2, 3, 0, 3])
    probs = np.eye(4)[predicted] * 0.7 + 0.075
    metrics = icbhi_metrics(probs, labels)
    assert metrics["specificity"] == pytest.approx(2 / 4)  # normal cycles predicted normal
    assert metrics["sensitivity"] == pytest.approx(3 / 6)  # abnormal cycles with the exact class: 1, 2, 3 -> 3 of 6
    assert metrics["icbhi_score"] == pytest.approx((2 / 4 + 3 / 6) / 2)


def test_an_abnormal_cycle_predicted_as_another_abnormal_class_is_not_sensitive():
    labels = np.asarray([1, 2, 3])
    probs = np.eye(4)[[2, 3, 1]]  # every abnormal cycle called abnormal, never the right kind
    assert icbhi_metrics(probs, labels)["sensitivity"] == 0.0


def test_circor_weighted_accuracy_by_hand():
    labels = np.asarray([1, 1, 2, 0, 0, 0])  # present, present, unknown, absent x3
    predicted = np.asarray([1, 0, 2, 0, 0, 1])
    expected = (5 * 1 + 3 * 1 + 1 * 2) / (5 * 2 + 3 * 1 + 1 * 3)
    assert murmur_metrics(np.eye(3)[predicted], labels)["weighted_accuracy"] == pytest.approx(expected)


def test_recording_level_scores_average_windows_and_reject_mixed_labels():
    manifest = {"recording_id": np.asarray(["a", "a", "b", "b", "b"]),
                "patient_id": np.asarray(["p1", "p1", "p2", "p2", "p2"])}
    probs = _probs(np.asarray([0.2, 0.4, 0.9, 0.7, 0.8]))
    scored = aggregate(probs, np.asarray([0, 0, 1, 1, 1]), np.arange(5), manifest, "recording")
    np.testing.assert_allclose(scored.probs[:, 1], [0.3, 0.8])
    assert scored.labels.tolist() == [0, 1] and scored.patients.tolist() == ["p1", "p2"]
    with pytest.raises(ValueError, match="different labels"):
        aggregate(probs, np.asarray([0, 1, 1, 1, 1]), np.arange(5), manifest, "recording")


def test_evaluate_reports_value_and_interval_for_every_metric():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    predictions = Predictions(_probs(np.clip(0.4 * labels + 0.6 * rng.random(200), 0, 1)), labels,
                              (np.arange(200) // 5).astype(str), np.arange(200))
    results = evaluate(get_spec("physionet2016").task("normal_vs_abnormal"), predictions, num_samples=200)
    assert set(results) == {"auroc", "accuracy", "sensitivity", "specificity", "f1", "macc"}
    for value in results.values():
        assert value["ci_low"] <= value["value"] <= value["ci_high"]


# ---------------------------------------------------------------- bootstrap coverage
def _fast_auroc(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mann-Whitney AUROC (exact, with ties): fast enough for thousands of resamples."""
    positive = labels == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return {"auroc": float("nan")}
    ranks = rankdata(probs[:, 1])
    return {"auroc": float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))}


def _simulate(rng: np.random.Generator, patients: int, segments: int) -> Predictions:
    """Scores with a strong per-patient random effect: segments of a patient are correlated."""
    labels = np.repeat(rng.permutation(np.arange(patients) % 2), segments)
    patient_effect = np.repeat(rng.normal(0, 1.0, patients), segments)
    scores = 0.8 * labels + patient_effect + rng.normal(0, 0.3, patients * segments)
    probs = 1 / (1 + np.exp(-scores))
    return Predictions(_probs(probs), labels, np.repeat(np.arange(patients), segments), np.arange(len(labels)))


def test_patient_cluster_bootstrap_covers_at_the_nominal_rate_and_is_wider():
    rng = np.random.default_rng(1)
    population = _simulate(rng, 4000, 20)  # the estimand: segment-level AUROC of the whole population
    truth = _fast_auroc(population.probs, population.labels)["auroc"]
    cluster_hits, segment_hits, cluster_width, segment_width = [], [], [], []
    for replicate in range(120):
        sample = _simulate(rng, 40, 20)
        cluster = cluster_bootstrap(_fast_auroc, sample, num_samples=300, seed=replicate)["auroc"]
        segment = segment_bootstrap(_fast_auroc, sample, num_samples=300, seed=replicate)["auroc"]
        cluster_hits.append(cluster[0] <= truth <= cluster[1])
        segment_hits.append(segment[0] <= truth <= segment[1])
        cluster_width.append(cluster[1] - cluster[0])
        segment_width.append(segment[1] - segment[0])
    assert 0.86 <= np.mean(cluster_hits) <= 0.99  # nominal 0.95 (percentile bootstrap, 40 patients)
    assert np.mean(segment_hits) < 0.75  # treating correlated segments as independent under-covers
    assert np.mean(cluster_width) > 1.8 * np.mean(segment_width)


@pytest.mark.parametrize("dataset, task, metric", [("icbhi", "icbhi_4class", "icbhi_score"),
                                                   ("circor2022", "murmur_3class", "weighted_accuracy"),
                                                   ("icbhi", "crackle", "macc"), ("circor2022", "murmur", "macc")])
def test_each_task_scores_with_its_own_metric(dataset, task, metric):
    """The metric travels with the task: a dataset's own score where it declares one, else the binary metrics."""
    chosen = get_spec(dataset).task(task)
    labels = np.arange(60) % chosen.num_classes
    probs = np.full((60, chosen.num_classes), 0.1)
    probs[np.arange(60), labels] = 0.9
    assert metric in evaluate(chosen, Predictions(probs, labels, np.arange(60).astype(str), np.arange(60)),
                              num_samples=0)
