"""Pairing two methods' runs on the same labelled subsets, and a bootstrap CI of their mean difference.

A pair is one run of each method on the same labelled subset (same dataset, task, label budget or
fraction and label seed), scored on the same test set. Per labelled subset a `PairedRow` gives the number
of pairs, each method's mean, the mean paired difference b - a, how often b wins, and a percentile
bootstrap CI of the mean difference that resamples both sources of its uncertainty:

- the label draws (seeds): the pairs are resampled with replacement;
- the test patients: one resample of the test patients per bootstrap step, applied to both methods'
  predictions and to every pair scored on that test set (the same patients are in all of them, so
  their sampling error is shared by the draws, not averaged away over them).

This crossed-design bootstrap errs on the wide side: the part of a classifier's error that is
specific to one draw and one patient is counted by both resamplings (tests/test_compare.py measures
its coverage against resampling the draws alone, which falls well short).

Scores are recomputed from each run's ``test_predictions`` (``val_predictions`` for a validation-only
run; at the task's scoring level: recording for PhysioNet 2016, patient for CirCor murmur) with the
task's own metric function (`DatasetSpec.metric`). The tables and the command: `lungheart_cl.compare`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lungheart_cl.data.sources import get_spec
from lungheart_cl.metrics import MetricFn, Predictions
from lungheart_cl.modes import MODES
from lungheart_cl.report import cell_key, latest_per_seed, x_label

log = logging.getLogger(__name__)


class ComparisonError(ValueError):
    """The runs cannot be paired or scored as asked (the message names the method or the file)."""


@dataclass(frozen=True)
class Method:
    """A scheme, and the evaluation mode when the scheme was run in several."""

    scheme: str
    mode: str | None = None

    def __str__(self) -> str:
        return self.scheme if self.mode is None else f"{self.scheme}:{self.mode}"


def parse_method(text: str) -> Method:
    """``time_mask:linear`` -> Method("time_mask", "linear"); ``random_init`` -> Method("random_init")."""
    modes = MODES
    scheme, colon, mode = str(text).rpartition(":")
    if not colon:
        scheme, mode = mode, ""
    if not scheme or (colon and mode not in modes):
        raise ComparisonError(f"method {text!r} is not SCHEME or SCHEME:MODE with MODE one of {', '.join(modes)}")
    return Method(scheme, mode or None)


@dataclass(frozen=True)
class PairedRow:
    """b against a on one labelled subset (a label budget or fraction) of one dataset and task."""

    dataset: str
    task: str
    level: str
    axis: str  # "budget" (x = labelled patients) or "fraction" (x = label fraction)
    x: float
    a: str
    b: str
    metric: str
    pairs: int
    seeds: tuple[int, ...]
    labelled_patients: int | None
    mean_a: float
    mean_b: float
    mean_difference: float  # mean over pairs of (b - a)
    ci_low: float  # percentile bootstrap CI of the mean difference
    ci_high: float
    wins: int  # pairs with b > a
    losses: int  # pairs with b < a
    bootstrap_samples: int
    ci_level: float

    @property
    def ci_above_zero(self) -> bool:
        return self.ci_low > 0


# -------------------------------------------------------------------------------------------- inputs
def read_predictions(result: dict) -> Predictions:
    """A results file's per-unit predictions on its scored split (``{"ids", "patients", "labels", "probs"}``
    under ``test_predictions``, or ``val_predictions`` for a validation-only run)."""
    where = result.get("path", result.get("run"))
    name = f"{result.get('split', 'test')}_predictions"
    block = result.get(name)
    if block is None:
        raise ComparisonError(f"{where}: no {name} (a results file from before they were saved); "
                              f"run it again to compare it")
    try:
        probs = np.asarray(block["probs"], dtype=float)
        labels = np.asarray(block["labels"], dtype=np.int64)
        patients = np.asarray(block["patients"]).astype(str)
        ids = np.asarray(block["ids"]).astype(str)
    except (KeyError, TypeError, ValueError) as error:
        raise ComparisonError(f"{where}: {name} is not {{ids, patients, labels, probs}} ({error})") from None
    n = len(ids)
    if not n or probs.ndim != 2 or probs.shape[0] != n or labels.shape != (n,) or patients.shape != (n,):
        raise ComparisonError(f"{where}: {name} holds {n} ids, {len(patients)} patients, {len(labels)} "
                              f"labels and probs of shape {probs.shape}; they must agree")
    if len(set(ids.tolist())) != n:
        raise ComparisonError(f"{where}: {name} repeats ids")
    return Predictions(probs, labels, patients, ids)


def _aligned(a: dict, b: dict) -> tuple[Predictions, Predictions]:
    """Both runs' predictions in a's order; an error unless they score the same test units with the same labels
    and were trained on labelled subsets of the same size."""
    pa, pb = read_predictions(a), read_predictions(b)
    where_a, where_b = a.get("path", a.get("run")), b.get("path", b.get("run"))
    position = {unit: i for i, unit in enumerate(pb.ids.tolist())}
    if set(position) != set(pa.ids.tolist()):
        common = len(set(position) & set(pa.ids.tolist()))
        raise ComparisonError(f"{where_a} and {where_b} are scored on different test sets ({len(pa.ids)} and "
                              f"{len(pb.ids)} units, {common} in common); pairs need the same data.split and split_seed")
    index = np.asarray([position[unit] for unit in pa.ids.tolist()])
    pb = Predictions(pb.probs[index], pb.labels[index], pb.patients[index], pb.ids[index])
    if (pa.labels != pb.labels).any() or (pa.patients != pb.patients).any():
        raise ComparisonError(f"{where_a} and {where_b} give the same test units different labels or patients")
    for count in ("labelled_patients", "labelled_recordings"):
        na, nb = ((run.get("data") or {}).get(count) for run in (a, b))
        if na is not None and nb is not None and na != nb:
            raise ComparisonError(f"{where_a} and {where_b} have the same label seed but {na} and {nb} "
                                  f"{count.replace('_', ' ')}: not the same labelled subset")
    return pa, pb


# ----------------------------------------------------------------------------------------- bootstrap
def paired_bootstrap(pairs: Sequence[tuple[Predictions, Predictions]], metric_fn: MetricFn, metric: str,
                     num_samples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the mean over pairs of metric(b) - metric(a), resampling the pairs (label draws) and,
    once per step for each distinct test set, its patients (the same units for a, b and every pair on it).
    Each pair's two predictions must be aligned (same units, same order)."""
    test_sets: dict[tuple[str, ...], list[np.ndarray]] = {}
    pair_test_set = []
    for a, _ in pairs:
        key = tuple(a.ids.tolist())
        if key not in test_sets:
            _, cluster = np.unique(a.patients, return_inverse=True)
            test_sets[key] = [np.flatnonzero(cluster == c) for c in range(cluster.max() + 1)]
        pair_test_set.append(list(test_sets).index(key))
    members = list(test_sets.values())

    def score(predictions: Predictions, index: np.ndarray) -> float:
        return metric_fn(predictions.probs[index], predictions.labels[index])[metric]

    rng = np.random.default_rng(seed)
    differences = np.full(num_samples, np.nan)
    for step in range(num_samples):
        weights = np.bincount(rng.integers(0, len(pairs), len(pairs)), minlength=len(pairs))
        units = [np.concatenate([m[c] for c in rng.integers(0, len(m), len(m))]) for m in members]
        chosen = np.flatnonzero(weights)
        gaps = [score(pairs[k][1], units[pair_test_set[k]]) - score(pairs[k][0], units[pair_test_set[k]])
                for k in chosen]
        differences[step] = np.dot(weights[chosen], gaps) / weights.sum()  # nan when a resample has one class
    if not np.isfinite(differences).any():
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.nanquantile(differences, alpha)), float(np.nanquantile(differences, 1 - alpha))


# ---------------------------------------------------------------------------------------- comparison
def _runs_of(results: Sequence[dict], method: Method) -> dict[tuple, dict]:
    """The method's runs keyed by labelled subset and label seed."""
    runs = [r for r in results if r["scheme"] == method.scheme and method.mode in (None, r["mode"])]
    if not runs:
        found = ", ".join(sorted({f"{r['scheme']}:{r['mode']}" for r in results})) or "none"
        raise ComparisonError(f"no results of {method}; the results hold {found}")
    modes = sorted({r["mode"] for r in runs})
    if len(modes) > 1:
        raise ComparisonError(f"{method.scheme} was run in modes {', '.join(modes)}; name one, e.g. "
                              f"{method.scheme}:{modes[0]}")
    return {(*_subset(r), int(r["seed"])): r for r in runs}


def _subset(result: dict) -> tuple:
    dataset, task, _, _, fraction, budget = cell_key(result)
    return dataset, task, fraction, budget


def compare_methods(results: Sequence[dict], a: Method, b: Method, metric: str = "auroc", num_samples: int = 1000,
                    level: float = 0.95, seed: int = 0) -> tuple[list[PairedRow], list[str]]:
    """One row per labelled subset that both methods ran, and a note per run left unpaired."""
    results = latest_per_seed(results)
    runs_a, runs_b = _runs_of(results, a), _runs_of(results, b)
    notes = [f"{_subset_label(key)} seed {key[-1]}: {method} only (unpaired, left out)"
             for method, mine, theirs in ((a, runs_a, runs_b), (b, runs_b, runs_a))
             for key in sorted(mine.keys() - theirs.keys(), key=str)]
    subsets: dict[tuple, list[tuple]] = {}
    for key in sorted(runs_a.keys() & runs_b.keys(), key=lambda k: (k[:2], k[2] is None, k[2] or k[3], k[4])):
        subsets.setdefault(key[:-1], []).append(key)
    if not subsets:
        raise ComparisonError(f"no labelled subset (dataset, task, budget or fraction, label seed) has runs of both "
                              f"{a} and {b}")
    rows = [_paired_row(subset, [(runs_a[k], runs_b[k]) for k in keys], a, b, metric, num_samples, level, seed)
            for subset, keys in subsets.items()]
    return rows, notes


def _subset_label(key: tuple) -> str:
    dataset, task, fraction, budget = key[:4]
    return f"{dataset} {task} {x_label('fraction', fraction) if budget is None else x_label('budget', budget)}"


def _paired_row(subset: tuple, runs: list[tuple[dict, dict]], a: Method, b: Method, metric: str, num_samples: int,
                level: float, seed: int) -> PairedRow:
    dataset, task, fraction, budget = subset
    metric_fn = get_spec(dataset).metric(task)
    pairs = [_aligned(run_a, run_b) for run_a, run_b in runs]
    scores = np.asarray([[_score(metric_fn, metric, p, run) for p, run in zip(pair, both)]
                         for pair, both in zip(pairs, runs)])  # (pairs, 2): a, b
    difference = scores[:, 1] - scores[:, 0]
    low, high = paired_bootstrap(pairs, metric_fn, metric, num_samples, level, seed)
    return PairedRow(dataset, task, str(runs[0][0].get("level", "")), "fraction" if budget is None else "budget",
                     float(fraction if budget is None else budget), str(a), str(b), metric, len(pairs),
                     tuple(int(run_a["seed"]) for run_a, _ in runs), (runs[0][0].get("data") or {}).get("labelled_patients"),
                     float(scores[:, 0].mean()), float(scores[:, 1].mean()), float(difference.mean()), low, high,
                     int((difference > 0).sum()), int((difference < 0).sum()), num_samples, level)


def _score(metric_fn: MetricFn, metric: str, predictions: Predictions, result: dict) -> float:
    """The run's metric recomputed from its predictions; a warning when it disagrees with the stored value."""
    values = metric_fn(predictions.probs, predictions.labels)
    if metric not in values:
        raise ComparisonError(f"task {result['task']} has no metric {metric!r}; choose one of {', '.join(values)}")
    stored = result["metrics"].get(metric, {}).get("value")
    if stored is not None and math.isfinite(float(stored)) and abs(float(stored) - values[metric]) > 1e-3:
        log.warning("%s: %s from test_predictions is %.4f, the results file says %.4f", result.get("path"), metric,
                    values[metric], float(stored))
    return float(values[metric])
