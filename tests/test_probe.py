"""The logistic probe: patient-grouped folds that adapt to tiny label sets, C chosen by them, and head folding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lungheart_cl.metrics import binary_metrics, multiclass_metrics
from lungheart_cl.probe import (DEFAULT_C_GRID, FALLBACK_C, fit_logistic_probe, linear_head_weights,
                                patient_folds)


def _patients(per_class: list[int], windows: int = 6, dim: int = 8, shift: float = 1.0, seed: int = 0):
    """Windows of patients whose class moves the feature mean (class c: + c * shift on feature c)."""
    rng = np.random.default_rng(seed)
    features, labels, groups = [], [], []
    for c, count in enumerate(per_class):
        for p in range(count):
            x = rng.normal(size=(windows, dim)) + rng.normal(scale=0.3, size=dim)  # a patient's own offset
            x[:, c % dim] += shift * (c + 1)
            features.append(x)
            labels += [c] * windows
            groups += [f"c{c}p{p}"] * windows
    return np.concatenate(features), np.asarray(labels), np.asarray(groups)


def _window_auroc(labels):
    def score(probs, windows):
        metrics = binary_metrics if probs.shape[1] == 2 else multiclass_metrics
        return metrics(probs, labels[windows])["auroc"]
    return score


def _head_probs(pipeline, features, num_classes):
    mean, std, weight, bias = (torch.as_tensor(v, dtype=torch.float32) for v in linear_head_weights(pipeline, num_classes))
    x = (torch.as_tensor(features, dtype=torch.float32) - mean) / std
    return (x @ weight.T + bias).softmax(-1).double().numpy()


def test_folds_hold_out_whole_patients_and_adapt_to_the_rarest_class():
    _, labels, groups = _patients([12, 3])
    folds = patient_folds(labels, groups, max_folds=5)
    assert len(folds) == 3  # the rarer class has 3 patients
    held = [set(groups[h]) for _, h in folds]
    assert set().union(*held) == set(groups) and sum(map(len, held)) == len(set(groups))  # a partition of patients
    for train, held_out in folds:
        assert not set(groups[train]) & set(groups[held_out])
        assert set(labels[train]) == {0, 1}
    _, labels, groups = _patients([12, 30])
    assert len(patient_folds(labels, groups, max_folds=5)) == 5
    _, labels, groups = _patients([12, 1])
    assert patient_folds(labels, groups) == []  # one patient of a class: nothing to cross-validate


def test_c_is_chosen_by_cv_and_falls_back_when_it_cannot_be():
    features, labels, groups = _patients([10, 10], shift=1.5)
    fit = fit_logistic_probe(features, labels, groups, _window_auroc(labels), 2)
    assert fit.folds == 5 and fit.patients == 20 and fit.segments == len(labels)
    assert fit.c in DEFAULT_C_GRID and fit.cv_auroc == max(s for s in fit.cv_scores if s is not None)
    assert fit.c == fit.c_grid[fit.cv_scores.index(fit.cv_auroc)]  # the first maximum: the smaller C on ties
    assert fit.pipeline[-1].C == fit.c and fit.pipeline[-1].class_weight == "balanced"
    summary = fit.summary()
    assert summary["C"] == fit.c and summary["cv_auroc"] == fit.cv_auroc and len(summary["cv_auroc_per_C"]) == 13
    features, labels, groups = _patients([10, 1])
    lonely = fit_logistic_probe(features, labels, groups, _window_auroc(labels), 2)
    assert (lonely.c, lonely.cv_auroc, lonely.folds) == (FALLBACK_C, None, 0)


def test_the_cv_score_tells_a_real_signal_from_shuffled_labels():
    features, labels, groups = _patients([10, 10], shift=3.0)
    strong = fit_logistic_probe(features, labels, groups, _window_auroc(labels), 2)
    shuffled = np.random.default_rng(1).permutation(labels)
    noise = fit_logistic_probe(features, shuffled, groups, _window_auroc(shuffled), 2)
    assert strong.cv_auroc > noise.cv_auroc


@pytest.mark.parametrize("per_class,num_classes", [([8, 5], 2), ([6, 5, 4, 3], 4), ([6, 0, 4, 3], 4),
                                                        ([5, 0, 0, 4], 4)])
def test_the_folded_head_gives_predict_proba(per_class, num_classes):
    features, labels, groups = _patients(per_class, dim=6)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=0.7, class_weight="balanced", max_iter=2000))
    pipeline.fit(features, labels)
    probs = _head_probs(pipeline, features, num_classes)
    expected = np.zeros_like(probs)
    expected[:, pipeline[-1].classes_] = pipeline.predict_proba(features)  # an absent class: probability 0
    np.testing.assert_allclose(probs, expected, atol=1e-5)
