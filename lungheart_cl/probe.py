"""Logistic-regression probe on frozen features, its C chosen by patient-grouped cross-validation.

What pretraining buys is measured against a random-init probe; a probe that is badly regularised
for a tiny label set muddies that comparison. This one is scikit-learn's `LogisticRegression` in a
`StandardScaler` pipeline (class_weight balanced; multinomial for more than two classes),
with C chosen from a fixed grid by cross-validation that holds out whole patients of the labelled
set, and nothing else: validation and test patients never enter it.

The choices, and why:
  * Grid: 13 values of C, 1e-4 to 1e2 in half-decade steps. At 1e-4 standardised features barely
    move the logits (close to a class-mean-difference direction); at 1e2 the fit is nearly
    unregularised. Ties go to the smaller C (np.argmax takes the first), the more regularised model.
  * Solver: two classes, Newton steps with a Cholesky solve of the features x features Hessian
    ("newton-cholesky"): a few iterations whatever the conditioning, and frozen CNN features are
    badly conditioned (condition number ~1e9 for SmallCNN on PhysioNet 2016), where lbfgs needs
    hundreds (13 values of C on 3,000 windows: 5 s against 61 s). More classes: lbfgs, since the
    multinomial Hessian is (classes x features) squared.
  * Folds: `StratifiedGroupKFold` over patients, as many folds as the rarest class has patients,
    at most 5, fewer when a split would leave a training fold with a single class; with fewer than
    two usable folds there is nothing to cross-validate and C falls back to 1.0 (scikit-learn's
    default), recorded as ``cv_auroc: None``.
  * Score: the AUROC of each held-out fold at the task's scoring level (window scores averaged per
    recording or patient, as validation and test are scored), averaged over folds; a fold with a
    single class at that level has no AUROC and is left out of the mean. The task level is what the
    comparison reports, so it is what C should maximise. Not the AUROC of the pooled out-of-fold
    scores: that ranks units scored by different fold models against each other, so each model's own
    offset enters the score (most when strong regularisation leaves little signal), and the offsets
    anti-correlate with the held-out class mix; the per-fold mean compares units of one fold only.
    With a handful of patients per fold either estimate is noisy, and so is the chosen C.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 2, 13))
MAX_FOLDS = 5
FALLBACK_C = 1.0
MAX_ITER = 2000
ABSENT_CLASS_LOGIT = -1e4  # a class without labelled examples: probability 0, as the fitted model has no such class

Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ProbeFit:
    """The fitted pipeline (scaler + logistic regression on every labelled window) and how C was chosen."""

    pipeline: Pipeline
    c: float
    cv_auroc: float | None  # None: too few patients per class to cross-validate
    folds: int
    c_grid: tuple[float, ...]
    cv_scores: tuple[float | None, ...]
    patients: int
    segments: int
    class_weight: str | None

    def summary(self) -> dict:
        """JSON-safe record of the fit, for the results JSON and the checkpoint."""
        return {"C": self.c, "cv_auroc": self.cv_auroc, "folds": self.folds, "c_grid": list(self.c_grid),
                "cv_auroc_per_C": list(self.cv_scores), "cv_patients": self.patients, "cv_segments": self.segments,
                "class_weight": self.class_weight}


def logistic_regression(c: float, labels: np.ndarray, class_weight: str | None = "balanced",
                        warm_start: bool = False) -> LogisticRegression:
    """The probe's estimator for these training labels (solver as in the module docstring)."""
    solver = "newton-cholesky" if len(np.unique(labels)) == 2 else "lbfgs"
    return LogisticRegression(C=c, class_weight=class_weight, solver=solver, max_iter=MAX_ITER, warm_start=warm_start)


def patient_folds(labels: np.ndarray, groups: np.ndarray, max_folds: int = MAX_FOLDS, seed: int = 0) -> Folds:
    """Patient-grouped, class-stratified folds of the labelled windows (see the module docstring);
    [] when the rarest class has fewer than two patients or no split keeps two classes in training."""
    present = np.unique(labels)
    rarest = min(len(np.unique(groups[labels == c])) for c in present)
    for n in range(min(max_folds, rarest), 1, -1):
        splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(len(labels)), labels, groups))
        if all(len(np.unique(labels[train])) >= 2 for train, _ in folds):
            return folds
    return []


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: Folds, c_grid: tuple[float, ...],
                              num_classes: int, class_weight: str | None) -> np.ndarray:
    """(len(c_grid), windows, num_classes): each window's probabilities from the model of its held-out fold.

    Per fold the scaler is fitted once and C walks up the grid with warm starts (the regularisation
    path); a class absent from a training fold gets probability 0 there."""
    probs = np.zeros((len(c_grid), len(labels), num_classes))
    for train, held in folds:
        scaler = StandardScaler().fit(features[train])
        x_train, x_held = scaler.transform(features[train]), scaler.transform(features[held])
        model = logistic_regression(c_grid[0], labels[train], class_weight, warm_start=True)
        for i, c in enumerate(c_grid):
            model.set_params(C=c).fit(x_train, labels[train])
            probs[i][np.ix_(held, model.classes_)] = model.predict_proba(x_held)
    return probs


def fit_logistic_probe(features: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                       score: Callable[[np.ndarray, np.ndarray], float], num_classes: int,
                       c_grid: tuple[float, ...] = DEFAULT_C_GRID, max_folds: int = MAX_FOLDS,
                       class_weight: Literal["balanced"] | None = "balanced", seed: int = 0) -> ProbeFit:
    """Choose C by patient-grouped CV on the labelled windows only, then fit on all of them.

    Args:
        features / labels / groups: one row per labelled window; groups = its patient.
        score: (probabilities (m, num_classes), window positions (m,)) of held-out windows -> their
            AUROC at the task's scoring level (NaN when undefined).
    """
    features = np.asarray(features, dtype=np.float64)
    c_grid = tuple(sorted(float(c) for c in c_grid))
    folds = patient_folds(labels, groups, max_folds, seed)
    scores: list[float | None] = [None] * len(c_grid)
    c, cv_auroc = FALLBACK_C, None
    if folds:
        probs = out_of_fold_probabilities(features, labels, folds, c_grid, num_classes, class_weight)
        per_fold = np.asarray([[score(p[held], held) for _, held in folds] for p in probs], dtype=float)
        defined = np.isfinite(per_fold).any(axis=1)
        values = np.full(len(c_grid), np.nan)
        values[defined] = np.nanmean(per_fold[defined], axis=1)
        scores = [float(v) if np.isfinite(v) else None for v in values]
        if defined.any():
            best = int(np.nanargmax(values))  # the first maximum: ties go to the smaller C
            c, cv_auroc = c_grid[best], float(values[best])
    pipeline = make_pipeline(StandardScaler(), logistic_regression(c, labels, class_weight)).fit(features, labels)
    return ProbeFit(pipeline, c, cv_auroc, len(folds), c_grid, tuple(scores), len(np.unique(groups)), len(labels),
                    class_weight)


def linear_head_weights(pipeline: Pipeline, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, weight, bias) such that softmax(weight @ ((x - mean) / std) + bias) equals the
    pipeline's `predict_proba(x)`, over all `num_classes` columns.

    Two fitted classes: logits [0, w.x + b] at their columns (softmax of that is the sigmoid);
    more: the multinomial coefficients. Classes the fit never saw get weight 0 and a very negative
    bias, i.e. probability 0."""
    scaler, model = pipeline[0], pipeline[-1]
    dim = len(scaler.mean_)
    weight = np.zeros((num_classes, dim))
    bias = np.full(num_classes, ABSENT_CLASS_LOGIT)
    classes = model.classes_.astype(int)
    if len(classes) == 2:
        weight[classes[1]], bias[classes[1]], bias[classes[0]] = model.coef_[0], model.intercept_[0], 0.0
    else:
        weight[classes], bias[classes] = model.coef_, model.intercept_
    return scaler.mean_, scaler.scale_, weight, bias
