"""Online evaluation of an encoder during pretraining, on validation patients: a weighted kNN (window AUROC)
and a task-level logistic probe (the AUROC at the level the task is scored, as downstream evaluation scores it).

Only the labelled training bank and the validation split are ever passed here, never the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor

from lungheart_cl.data.splits import LabelFractionError, label_budget_patients
from lungheart_cl.data.tasks import Task
from lungheart_cl.errors import ConfigError
from lungheart_cl.metrics import Predictions, aggregate
from lungheart_cl.metrics import auroc as auroc_of_probs
from lungheart_cl.probe import fit_logistic_probe, logistic_regression

# C for the task probe's cross-validation: decades over the downstream probe's range (`probe.DEFAULT_C_GRID`),
# half its values, so every validation epoch stays cheap
MONITOR_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 2, 7))


def knn_class_scores(bank: Tensor, bank_labels: Tensor, queries: Tensor, num_classes: int, k: int = 10,
                     temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """Class scores of each query from its k most cosine-similar bank items, weighted by exp(sim/T)
    (the kNN monitor of InstDisc / solo-learn). Returns (num_queries, num_classes), rows summing to 1."""
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, queries.shape[0], chunk):
        q = F.normalize(queries[start:start + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        one_hot = F.one_hot(bank_labels[idx], num_classes).float()
        votes = (weights.unsqueeze(-1) * one_hot).sum(1)
        scores.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(scores)


def auroc(scores: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """`metrics.auroc` (binary, or macro one-vs-rest over the classes present; NaN with one class) of
    (num_queries, num_classes) scores, as a tensor on their device so the epoch-end log can sync it."""
    if scores.shape[1] != num_classes:
        raise ValueError(f"scores have {scores.shape[1]} columns for {num_classes} classes")
    value = auroc_of_probs(scores.detach().float().cpu().numpy(), labels.cpu().numpy())
    return torch.tensor(value, device=scores.device)


@dataclass(frozen=True)
class TaskProbeScore:
    """A logistic probe on labelled-bank windows, scored on validation windows aggregated to the task's level."""

    auroc: float  # NaN when the validation units hold a single class
    c: float  # the inverse regularisation strength used (fixed, or chosen by patient-grouped CV)
    predictions: Predictions  # one row per validation unit (window, recording or patient)
    windows: int  # validation windows scored before aggregation
    patients: int  # labelled patients the probe was fitted on


def monitor_patients(patients: list[str], strata: dict[str, int], budget: int | None, seed: int) -> list[str]:
    """The bank patients whose windows fit the task probe: all of them (``budget`` None), or a class-stratified
    seeded label budget of them, drawn as `data.labelled_patients` draws a downstream budget."""
    if budget is None:
        return sorted(patients)
    if budget > len(patients):
        raise ConfigError(f"model.monitor_labelled_patients {budget} exceeds the {len(patients)} labelled training "
                          f"patients of the monitor bank; use at most {len(patients)} (or null for all)")
    try:
        return label_budget_patients(patients, strata, budget, seed)
    except LabelFractionError as error:
        raise ConfigError(f"model.monitor_labelled_patients {budget}: {error}") from error


def task_probe_score(bank: np.ndarray, bank_labels: np.ndarray, bank_rows: np.ndarray, val: np.ndarray,
                     val_labels: np.ndarray, val_rows: np.ndarray, manifest: dict, task: Task,
                     c: float | None = None, c_grid: tuple[float, ...] = MONITOR_C_GRID, seed: int = 0) -> TaskProbeScore:
    """Fit a standardised, class-balanced logistic regression on the bank windows (rows of `manifest`), score
    the validation windows, average them per recording or patient as the task is scored (`metrics.aggregate`)
    and return that AUROC. ``c`` None: C chosen from `c_grid` by the patient-grouped cross-validation of
    ``model.mode logistic`` (`probe.fit_logistic_probe`), scored at the task's level too."""
    bank, val = np.asarray(bank, dtype=np.float64), np.asarray(val, dtype=np.float64)
    metric = task.score

    def at_task_level(probs: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> tuple[Predictions, float]:
        predictions = aggregate(probs, labels, rows, manifest, task.level)
        return predictions, metric(predictions.probs, predictions.labels)["auroc"]

    # one BLAS thread: beside the training's torch threads, multi-threaded BLAS fits ran 10-20x slower
    # (4-class CV on 1,000 windows x 128-d, 2 busy cores: 32 s against 2.4 s)
    with threadpool_limits(limits=1, user_api="blas"):
        if c is None:
            fit = fit_logistic_probe(bank, bank_labels, manifest["patient_id"][bank_rows],
                                     lambda p, held: at_task_level(p, bank_labels[held], bank_rows[held])[1],
                                     task.num_classes, c_grid, seed=seed)
            pipeline, c = fit.pipeline, fit.c
        else:
            pipeline = make_pipeline(StandardScaler(), logistic_regression(c, bank_labels)).fit(bank, bank_labels)
    probs = np.zeros((len(val), task.num_classes))
    probs[:, pipeline.classes_] = pipeline.predict_proba(val)  # a class absent from the bank keeps probability 0
    predictions, auroc_value = at_task_level(probs, val_labels, val_rows)
    return TaskProbeScore(float(auroc_value), float(c), predictions, len(val),
                          len(np.unique(manifest["patient_id"][bank_rows])))
