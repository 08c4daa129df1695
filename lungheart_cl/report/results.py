"""Report results: read the results JSONs, average each cell over seeds, and the published values.

A cell is a (dataset, task, scheme, mode, labelled subset): a label fraction, or a label budget
(``data.label_budget``). Rows are sorted in one stable report order (`sort_rows`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lungheart_cl.modes import MODES

log = logging.getLogger(__name__)

RESULT_FIELDS = ("dataset", "task", "scheme", "mode", "label_fraction", "seed", "metrics")
# The baseline schemes (listed after the others) and how the figures draw them.
BASELINE_STYLES = {
    "random_init": {"color": "#8c8c8c", "linestyle": "--", "marker": "v"},
    "supervised_scratch": {"color": "#2b2b2b", "linestyle": "--", "marker": "s"},
    "supervised_full_pool": {"color": "#5a5a5a", "linestyle": "-.", "marker": "D"},
    "baseline_logistic_on_logmel": {"color": "#b0b0b0", "linestyle": ":", "marker": "^"},
}
METRIC_NAMES = {"auroc": "AUROC", "macc": "MAcc", "f1": "F1", "icbhi_score": "ICBHI score",
                "weighted_accuracy": "Weighted accuracy"}
PUBLISHED_CSV = "soni2022_published_auroc.csv"
PUBLISHED_DATASETS = {"icbhi2017": "icbhi"}  # the study's dataset names -> ours
PUBLISHED_LEVELS = {"physionet2016": "recording", "icbhi": "segment"}
PUBLISHED_LABEL = "Soni et al. 2022"


@dataclass(frozen=True)
class Row:
    """One cell of the report: a metric for a (dataset, task, scheme, mode, labelled subset) over seeds; the
    subset is a label fraction, or a label budget (``label_fraction`` None)."""

    dataset: str
    task: str
    level: str
    scheme: str
    mode: str
    label_fraction: float | None
    metric: str
    mean: float
    std: float  # sample standard deviation across seeds (ddof=1); nan with fewer than two seeds
    n: int  # number of seeds (0 for published rows: the study's repeat count per cell is not given)
    ci_low: float  # mean over seeds of the per-run 95% CI bounds
    ci_high: float
    values: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()
    source: str = "ours"  # or "published"
    label_budget: int | None = None  # labelled training patients, for a budget run

    @property
    def key(self) -> tuple[str, str, str, str, float | None, int | None]:
        return self.dataset, self.task, self.scheme, self.mode, self.label_fraction, self.label_budget

    @property
    def axis(self) -> str:
        """What the x axis counts: ``budget`` (labelled patients) or ``fraction`` (of the training patients)."""
        return "fraction" if self.label_budget is None else "budget"

    @property
    def x(self) -> float:
        return float(self.label_fraction if self.label_budget is None else self.label_budget)


@dataclass(frozen=True)
class ResultScan:
    """What ``scan_results`` found: result payloads, and the JSON files it left out with the reason."""

    results: list[dict]
    broken: list[tuple[Path, str]] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ loading
def scan_results(runs_dir: str | Path, split: str = "test") -> ResultScan:
    """Read every ``*.json`` under ``runs_dir``; results files are those with a ``run`` and ``metrics`` scored on
    ``split`` (test, or val for the validation-only runs of ``finetune --test false``; others count as other)."""
    results, broken, other = [], [], []
    for path in sorted(Path(runs_dir).rglob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            broken.append((path, f"unreadable JSON ({error})"))
            continue
        if not (isinstance(payload, dict) and "run" in payload and "metrics" in payload) or \
                payload.get("split", "test") != split:
            other.append(path)  # e.g. pretrain-summary.json, W&B metadata, the other split's results
            continue
        problem = _result_problem(payload)
        if problem:
            broken.append((path, problem))
        else:
            results.append({**payload, "path": str(path)})
    return ResultScan(results, broken, other)


def _result_problem(payload: dict) -> str | None:
    """Why a results-like payload cannot be aggregated, or None when it can."""
    missing = [name for name in RESULT_FIELDS if name not in payload]
    if missing:
        return f"results file missing {', '.join(missing)}"
    metrics = payload["metrics"]
    if not isinstance(metrics, dict) or not all(isinstance(m, dict) and "value" in m for m in metrics.values()):
        return "'metrics' is not a mapping of {value, ci_low, ci_high}"
    try:
        budget = label_budget(payload)
        if budget is None:
            float(payload["label_fraction"])
        int(payload["seed"])
        [float(m["value"]) for m in metrics.values()]
    except (TypeError, ValueError, AttributeError):
        return "label_fraction (or data.label_budget), seed or a metric value is not a number"
    return None


def label_budget(result: dict) -> int | None:
    """The run's label budget (the data summary's ``label_budget``), None for a label-fraction run."""
    budget = (result.get("data") or {}).get("label_budget")
    return None if budget is None else int(budget)


def cell_key(result: dict) -> tuple[str, str, str, str, float | None, int | None]:
    """(dataset, task, scheme, mode, label fraction, label budget): the runs whose seeds a cell averages."""
    budget = label_budget(result)
    fraction = None if budget is not None else float(result["label_fraction"])
    return result["dataset"], result["task"], result["scheme"], result["mode"], fraction, budget


def log_skipped(scan: ResultScan) -> None:
    """Warn about each broken file; count the JSON files that are not results."""
    for path, reason in scan.broken:
        log.warning("skipped %s: %s", path, reason)
    if scan.other:
        log.info("skipped %d JSON files that are not results (e.g. %s)", len(scan.other), scan.other[0].name)


def load_results(runs_dir: str | Path) -> list[dict]:
    """Results payloads under ``runs_dir`` (recursive); broken files are logged as warnings and left out."""
    scan = scan_results(runs_dir)
    log_skipped(scan)
    return scan.results


# -------------------------------------------------------------------------------------- aggregation
def _finite_mean(values: Iterable[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def latest_per_seed(results: Sequence[dict]) -> list[dict]:
    """One result per (cell, seed): a re-run replaces the earlier one instead of counting as a new seed."""
    latest: dict[tuple, dict] = {}
    for result in results:
        key = (*cell_key(result), int(result["seed"]))
        if key in latest:
            log.warning("two results for %s seed %d; keeping the later one", key[:-1], key[-1])
            if str(result.get("finished", "")) < str(latest[key].get("finished", "")):
                continue
        latest[key] = result
    return list(latest.values())


def aggregate_results(results: Sequence[dict], metric: str = "auroc") -> list[Row]:
    """Mean, std and count across seeds, mean CI bounds and per-seed values for every cell with ``metric``."""
    groups: dict[tuple, list[dict]] = {}
    for result in latest_per_seed(results):
        entry = result["metrics"].get(metric)
        if entry is None or not math.isfinite(float(entry["value"])):
            continue  # the metric is not defined for this run's task (or was nan, e.g. one class in test)
        groups.setdefault(cell_key(result), []).append(result)
    rows = [_aggregate_cell(key, sorted(runs, key=lambda r: int(r["seed"])), metric) for key, runs in groups.items()]
    return sort_rows(rows)


def _aggregate_cell(key: tuple, runs: list[dict], metric: str) -> Row:
    entries = [run["metrics"][metric] for run in runs]
    values = np.asarray([float(e["value"]) for e in entries])
    levels = sorted({str(run.get("level", "")) for run in runs})
    dataset, task, scheme, mode, fraction, budget = key
    return Row(dataset, task, level="/".join(levels), scheme=scheme, mode=mode, label_fraction=fraction, metric=metric,
               mean=float(values.mean()), std=float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
               n=len(values), ci_low=_finite_mean(e.get("ci_low", float("nan")) for e in entries),
               ci_high=_finite_mean(e.get("ci_high", float("nan")) for e in entries),
               values=tuple(values.tolist()), seeds=tuple(int(run["seed"]) for run in runs), label_budget=budget)


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    """Stable report order: dataset, task, mode (in `MODES` order), schemes before baselines,
    scheme, fractions before budgets, label fraction or budget."""
    def order(row: Row) -> tuple:
        mode = MODES.index(row.mode) if row.mode in MODES else len(MODES)
        baseline = row.scheme in BASELINE_STYLES
        return row.dataset, row.task, mode, row.mode, baseline, row.scheme, row.axis != "fraction", row.x, row.source
    return sorted(rows, key=order)


# ---------------------------------------------------------------------------------------- published
def published_results(dataset: str, task: str | None = None) -> list[Row]:
    """The study's AUROC and 95% CI as report rows (``icbhi2017`` -> ``icbhi``).

    Its supervised-from-scratch model is our ``scratch`` mode, so that row's mode is ``scratch``;
    every other ``eval`` (linear / finetune) is kept as the mode.
    """
    dataset = PUBLISHED_DATASETS.get(dataset, dataset)
    text = resources.files("lungheart_cl.resources").joinpath(PUBLISHED_CSV).read_text()
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        ours = PUBLISHED_DATASETS.get(record["dataset"], record["dataset"])
        if ours != dataset or (task is not None and record["task"] != task):
            continue
        auroc, half = float(record["auroc"]), float(record["ci95_half_width"])
        mode = "scratch" if record["scheme"] == "supervised_scratch" else record["eval"]
        rows.append(Row(ours, record["task"], PUBLISHED_LEVELS.get(ours, ""), record["scheme"], mode,
                        float(record["label_fraction"]), "auroc", auroc, float("nan"), 0, auroc - half,
                        auroc + half, source="published"))
    return sort_rows(rows)
