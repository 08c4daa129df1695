"""Clinical metrics at the task's level, with patient-cluster bootstrap confidence intervals.

Segment probabilities are first aggregated to the level the task is scored at (cycle, recording
or patient); the bootstrap then resamples *patients* with replacement, because segments of one
patient are correlated and resampling them as if independent gives intervals that are too narrow.
Each task carries its metric function (`Task.score`); a dataset's own score (the ICBHI score, the
CirCor weighted accuracy) is defined in its source module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_stat_scores, multiclass_auroc

if TYPE_CHECKING:
    from lungheart_cl.data.tasks import Task

MetricFn = Callable[[np.ndarray, np.ndarray], dict[str, float]]


@dataclass(frozen=True)
class Predictions:
    """Class probabilities at the scoring level, with the patient each row belongs to."""

    probs: np.ndarray  # (n, num_classes)
    labels: np.ndarray  # (n,)
    patients: np.ndarray  # (n,) cluster ids for the bootstrap
    ids: np.ndarray  # (n,) segment row / recording id / patient id

    def to_json(self) -> dict[str, list]:
        """{"ids", "patients", "labels", "probs"} as plain Python lists, one entry per scored unit."""
        return {"ids": self.ids.tolist(), "patients": self.patients.tolist(),
                "labels": np.asarray(self.labels, dtype=np.int64).tolist(),
                "probs": np.asarray(self.probs, dtype=np.float64).tolist()}

    @classmethod
    def from_json(cls, payload: dict[str, list]) -> Predictions:
        """The inverse of `to_json` (e.g. a results JSON's ``test_predictions``)."""
        return cls(np.asarray(payload["probs"], dtype=np.float64), np.asarray(payload["labels"], dtype=np.int64),
                   np.asarray(payload["patients"]), np.asarray(payload["ids"]))


def aggregate(probs: np.ndarray, labels: np.ndarray, rows: np.ndarray, manifest: dict, level: str) -> Predictions:
    """Average segment probabilities per recording or patient (the study's PhysioNet protocol: window
    scores averaged per recording). A group whose segments disagree on the label is an error."""
    patients = manifest["patient_id"][rows]
    if level == "segment":
        return Predictions(probs, labels, patients, np.asarray(rows))
    column = {"recording": "recording_id", "patient": "patient_id"}[level]
    keys = manifest[column][rows]
    unique, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse)
    group_probs = np.zeros((len(unique), probs.shape[1]))
    np.add.at(group_probs, inverse, probs)
    group_probs /= counts[:, None]
    group_labels = np.full(len(unique), -1)
    group_labels[inverse] = labels
    if (group_labels[inverse] != labels).any():
        raise ValueError(f"segments of one {level} carry different labels; cannot score at the {level} level")
    group_patients = np.empty(len(unique), dtype=patients.dtype)
    group_patients[inverse] = patients
    return Predictions(group_probs, group_labels, group_patients, unique)


def auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Binary AUROC of class 1, or the macro one-vs-rest AUROC over the classes present; NaN with one class."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    scores, target = torch.from_numpy(probs).float(), torch.from_numpy(labels).long()
    if probs.shape[1] == 2:
        return float(binary_auroc(scores[:, 1], target))
    present = np.unique(labels)  # macro over classes present in this (re)sample
    return float(multiclass_auroc(scores, target, num_classes=probs.shape[1], average=None)[present].mean())


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUROC, accuracy, sensitivity (abnormal class recall), specificity, F1, MAcc = (Se + Sp) / 2; a ratio
    whose denominator is 0 (e.g. sensitivity without positives) is NaN."""
    # class 1 at probability >= threshold, decided here in float64: torchmetrics thresholds with > on float32
    predicted = torch.from_numpy(probs[:, 1] >= threshold).long()
    tp, fp, tn, fn, _ = (float(v) for v in binary_stat_scores(predicted, torch.from_numpy(labels).long()))
    se = tp / (tp + fn) if tp + fn else float("nan")
    sp = tn / (tn + fp) if tn + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"auroc": auroc(probs, labels), "accuracy": (tp + tn) / len(labels), "sensitivity": se,
            "specificity": sp, "f1": f1, "macc": (se + sp) / 2}


def multiclass_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"auroc": auroc(probs, labels), "accuracy": float((probs.argmax(1) == labels).mean())}


def default_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metrics of a task that declares none: `binary_metrics` for two classes, else `multiclass_metrics`."""
    return binary_metrics(probs, labels) if probs.shape[1] == 2 else multiclass_metrics(probs, labels)


def cluster_bootstrap(metric_fn: MetricFn, predictions: Predictions, num_samples: int = 1000, level: float = 0.95,
                      seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile CI of every metric, resampling patients (clusters) with replacement."""
    clusters, inverse = np.unique(predictions.patients, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(clusters))]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(num_samples):
        chosen = rng.integers(0, len(clusters), len(clusters))
        index = np.concatenate([members[c] for c in chosen])
        for name, value in metric_fn(predictions.probs[index], predictions.labels[index]).items():
            draws.setdefault(name, []).append(value)
    alpha = (1 - level) / 2
    return {name: (float(np.nanquantile(v, alpha)), float(np.nanquantile(v, 1 - alpha)))
            for name, v in draws.items() if np.isfinite(v).any()}


def segment_bootstrap(metric_fn: MetricFn, predictions: Predictions, num_samples: int = 1000, level: float = 0.95,
                      seed: int = 0) -> dict[str, tuple[float, float]]:
    """The naive interval (the original study's): every scored item resampled independently."""
    independent = Predictions(predictions.probs, predictions.labels, np.arange(len(predictions.labels)),
                              predictions.ids)
    return cluster_bootstrap(metric_fn, independent, num_samples, level, seed)


def evaluate(task: Task, predictions: Predictions, num_samples: int = 1000, level: float = 0.95,
             seed: int = 0) -> dict[str, dict[str, float]]:
    """Point estimate and patient-cluster bootstrap CI of every metric of the task."""
    point = task.score(predictions.probs, predictions.labels)
    intervals = cluster_bootstrap(task.score, predictions, num_samples, level, seed) if num_samples else {}
    return {name: {"value": value, "ci_low": intervals.get(name, (float("nan"),) * 2)[0],
                   "ci_high": intervals.get(name, (float("nan"),) * 2)[1]} for name, value in point.items()}
