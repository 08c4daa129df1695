"""Label-efficiency reports: aggregate finetune results over seeds, compare with the published study, plot.

Every finetune run writes a results JSON (``Classifier._write_results``). This module collects them,
averages each (dataset, task, scheme, mode, labelled subset) cell over seeds, sets the numbers beside
those of Soni et al. (2022) and writes ``report.md``, ``report.csv`` and one figure per dataset/task and
kind of labelled subset: label fractions (x = fraction) or label budgets (``data.labelled_patients``;
x = number of labelled patients, on PhysioNet 2016 recordings). Both x axes are logarithmic.
Our intervals come from a patient-cluster bootstrap; the study's from a per-segment bootstrap, which
gives narrower intervals, so overlap is read with that in mind.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from lungheart_cl.tracking import wandb_logged_in

log = logging.getLogger(__name__)

_PANEL_HELP = """
Comparing label fractions in the W&B UI
---------------------------------------
Every finetune run logs its hyperparameters as the run config (flat keys such as ``mode``,
``label_fraction``, ``scheme``, ``task``) and its test metrics as ``test/<metric>``.

1. In the project's workspace, filter runs to one dataset and task (config ``task``) and one
   ``mode`` (``linear`` or ``finetune``; add ``scratch`` for the supervised baseline).
2. Group runs by ``scheme`` (the grouping button above the runs table; pass ``--model.scheme``
   when training so the config carries the name rather than null), which averages the seeds.
3. Add a panel, "Scatter plot" or "Line plot": x axis ``label_fraction`` (choose it under the
   config keys, not the step; for label-budget runs ``labelled_patients``), y axis ``test/auroc``;
   in its settings set the x axis to log scale and the group aggregation to mean with min/max or
   std-dev as the range.

Or skip the set-up: ``log_to_wandb`` logs a ``results`` Table of the aggregated cells (mean,
std, seeds, mean 95% CI, published values) and one line chart of metric vs label fraction per
dataset/task/mode (one series per scheme), plus the report's PNG figures.
"""
__doc__ = f"{__doc__ or ''}{_PANEL_HELP}"

RESULT_FIELDS = ("dataset", "task", "scheme", "mode", "label_fraction", "seed", "metrics")
MODES = ("linear", "finetune", "scratch")
PANELS = (("linear", "Linear probe"), ("logistic", "Logistic probe"), ("finetune", "Fine-tune"))
OPTIONAL_PANELS = {"logistic"}  # drawn only when some run used it
BASELINE_STYLES = {
    "random_init": {"color": "#8c8c8c", "linestyle": "--", "marker": "v"},
    "supervised_scratch": {"color": "#2b2b2b", "linestyle": "--", "marker": "s"},
    "supervised_full_pool": {"color": "#5a5a5a", "linestyle": "-.", "marker": "D"},
    "baseline_logistic_on_logmel": {"color": "#b0b0b0", "linestyle": ":", "marker": "^"},
}
SCHEME_MARKERS = ("o", "D", "^", "h", "P", "X", "<", ">", "p", "*")
METRIC_NAMES = {"auroc": "AUROC", "macc": "MAcc", "f1": "F1", "icbhi_score": "ICBHI score",
                "weighted_accuracy": "Weighted accuracy"}
PUBLISHED_CSV = "soni2022_published_auroc.csv"
PUBLISHED_DATASETS = {"icbhi2017": "icbhi"}  # the study's dataset names -> ours
PUBLISHED_LEVELS = {"physionet2016": "recording", "icbhi": "segment"}
PUBLISHED_LABEL = "Soni et al. 2022"
AXIS_NAMES = {"fraction": "label fraction (log scale)", "budget": "labelled training patients (log scale)"}


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


def _log_skipped(scan: ResultScan) -> None:
    for path, reason in scan.broken:
        log.warning("skipped %s: %s", path, reason)
    if scan.other:
        log.info("skipped %d JSON files that are not results (e.g. %s)", len(scan.other), scan.other[0].name)


def load_results(runs_dir: str | Path) -> list[dict]:
    """Results payloads under ``runs_dir`` (recursive); broken files are logged as warnings and left out."""
    scan = scan_results(runs_dir)
    _log_skipped(scan)
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
    """Stable report order: dataset, task, mode (linear, finetune, scratch), schemes before baselines,
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


# ----------------------------------------------------------------------------------------- markdown
def fraction_label(fraction: float) -> str:
    """0.1 -> '10%', 0.005 -> '0.5%'."""
    return f"{fraction * 100:.3g}%"


def x_label(axis: str, x: float) -> str:
    """A column or tick label: '10%' for a fraction, 'n=40' for a budget."""
    return fraction_label(x) if axis == "fraction" else f"n={x:g}"


def format_cell(row: Row) -> str:
    """``0.853 ± 0.012 [0.81, 0.89] (n=3)``; the std is left out with one seed, the CI when unknown."""
    text = f"{row.mean:.3f}"
    if math.isfinite(row.std):
        text += f" ± {row.std:.3f}"
    if math.isfinite(row.ci_low) and math.isfinite(row.ci_high):
        text += f" [{row.ci_low:.2f}, {row.ci_high:.2f}]"
    return text + (" (published)" if row.source == "published" else f" (n={row.n})")


def _markdown_table(header: list[str], lines: list[list[str]]) -> str:
    rule = ["---"] * len(header)
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *lines])


def _pivot(rows: Sequence[Row], xs: Sequence[float], with_source: bool) -> str:
    """Rows = scheme x mode (x source), columns = label fractions or budgets (one kind per table)."""
    cells: dict[tuple, dict[float, Row]] = {}
    for row in rows:
        key = (row.scheme, row.mode, row.source) if with_source else (row.scheme, row.mode)
        cells.setdefault(key, {})[row.x] = row
    axis = rows[0].axis
    header = ["scheme", "mode", *(["source"] if with_source else []), *(x_label(axis, x) for x in xs)]
    lines = [[*key, *(format_cell(by_x[x]) if x in by_x else "–" for x in xs)] for key, by_x in cells.items()]
    return _markdown_table(header, lines)


def _comparison_rows(ours: Sequence[Row], published: Sequence[Row]) -> list[Row]:
    """Ours then published for every (scheme, mode) both have, then the study's other rows."""
    ours_keys = {(r.scheme, r.mode) for r in ours}
    both = ours_keys & {(r.scheme, r.mode) for r in published}
    matched = [r for r in [*ours, *published] if (r.scheme, r.mode) in both]
    only_published = [r for r in published if (r.scheme, r.mode) not in ours_keys]
    return sort_rows(matched) + sort_rows(only_published)


def _markdown_section(ours: Sequence[Row], published: Sequence[Row], figure: str | None) -> str:
    first = ours[0]
    xs = sorted({r.x for r in [*ours, *published]})
    by = "" if first.axis == "fraction" else " · by number of labelled training patients"
    parts = [f"## {first.dataset} · {first.task} (scored per {first.level}){by}", "",
             _pivot(ours, xs, with_source=False), ""]
    if figure:
        parts += [f"![{first.dataset} {first.task}]({figure})", ""]
    if published:
        parts += [f"### Beside the published values ({PUBLISHED_LABEL})", "",
                  _pivot(_comparison_rows(ours, published), xs, with_source=True), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- plots
def scheme_styles(schemes: Iterable[str]) -> dict[str, dict]:
    """Colour, marker and line style per scheme, fixed for one report so every figure agrees: sorted
    names take tab10 (tab20 beyond ten), baselines are grey and dashed."""
    names = sorted({s for s in schemes if s not in BASELINE_STYLES})
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"].colors
    styles = {name: {"color": _hex(palette[i % len(palette)]), "linestyle": "-",
                     "marker": SCHEME_MARKERS[i % len(SCHEME_MARKERS)], "baseline": False}
              for i, name in enumerate(names)}
    return {**styles, **{name: {**style, "baseline": True} for name, style in BASELINE_STYLES.items()}}


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb[:3])


def _draw_ours(ax, rows: Sequence[Row], style: dict, band_alpha: float) -> None:
    """Mean line with markers, a band for the mean 95% CI (± std when no CI), faint per-seed dots."""
    rows = sorted(rows, key=lambda r: r.x)
    x = np.asarray([r.x for r in rows])
    y = np.asarray([r.mean for r in rows])
    std = np.asarray([r.std for r in rows])
    has_ci = np.asarray([math.isfinite(r.ci_low) and math.isfinite(r.ci_high) for r in rows])
    low = np.where(has_ci, [r.ci_low for r in rows], y - std)
    high = np.where(has_ci, [r.ci_high for r in rows], y + std)
    colour = style["color"]
    if len(rows) > 1:
        ax.fill_between(x, low, high, color=colour, alpha=band_alpha * (0.6 if style["baseline"] else 1),
                        linewidth=0)
    else:  # a band needs two points; one point gets an error bar
        ax.errorbar(x, y, yerr=[y - low, high - y], fmt="none", ecolor=colour, alpha=0.5, capsize=3)
    ax.plot(x, y, color=colour, linestyle=style["linestyle"], marker=style["marker"], linewidth=1.8,
            markersize=6, zorder=3)
    seeds_x = np.concatenate([[r.x] * len(r.values) for r in rows])
    seeds_y = np.concatenate([r.values for r in rows])
    ax.scatter(seeds_x, seeds_y, s=9, color=colour, alpha=0.35, linewidths=0, zorder=2)


def _draw_published(ax, rows: Sequence[Row], style: dict, nudge: float) -> None:
    """Hollow markers with the study's CI as error bars, at ``nudge`` x the fraction so they hide neither
    our points nor each other."""
    x = np.asarray([r.label_fraction for r in rows]) * nudge
    y = np.asarray([r.mean for r in rows])
    yerr = [y - [r.ci_low for r in rows], np.asarray([r.ci_high for r in rows]) - y]
    ax.errorbar(x, y, yerr=yerr, fmt=style["marker"], markersize=6, markerfacecolor="white",
                markeredgecolor=style["color"], markeredgewidth=1.4, ecolor=style["color"], elinewidth=1.1,
                capsize=3, linestyle="none", zorder=4)


def _legend_handles(schemes: Sequence[str], styles: dict[str, dict], metric: str, any_published: bool) -> list:
    ordered = [s for s in schemes if s not in BASELINE_STYLES] + [s for s in BASELINE_STYLES if s in schemes]
    handles = []
    for scheme in ordered:
        style = styles[scheme]
        handles.append(Line2D([], [], color=style["color"], linestyle=style["linestyle"], marker=style["marker"],
                              linewidth=1.8, label=scheme))
    handles += [Patch(color="0.5", alpha=0.25, label="mean 95% CI over seeds"),
                Line2D([], [], color="0.4", marker="o", markersize=3, linestyle="none", alpha=0.6,
                       label="individual seeds")]
    if any_published:
        handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="none",
                              label=f"published ({PUBLISHED_LABEL}),\nper-segment bootstrap CI"))
    if metric == "auroc":
        handles.append(Line2D([], [], color="0.6", linestyle=":", linewidth=1, label="chance (0.5)"))
    return handles


def _format_axes(ax, xs: Sequence[float], axis: str, metric: str, title: str) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(list(xs)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([fraction_label(x) if axis == "fraction" else f"{x:g}" for x in xs])
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    ax.set_xlabel(AXIS_NAMES[axis])
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if metric == "auroc":
        ax.axhline(0.5, color="0.6", linestyle=":", linewidth=1, zorder=1)


def plot_dataset_task(ours: Sequence[Row], published: Sequence[Row], styles: dict[str, dict],
                      out_path: str | Path) -> Path:
    """Linear | logistic (when run) | fine-tune panels of metric vs label fraction or budget (one kind per
    figure: ``ours`` are of one axis, ``published`` only beside fractions); scratch is drawn in every panel."""
    first = ours[0]
    our_schemes = {r.scheme for r in ours}
    published = [r for r in published if r.scheme in our_schemes]  # only where a scheme matches ours
    xs = sorted({r.x for r in [*ours, *published]})
    panels = [(mode, title) for mode, title in PANELS
              if mode not in OPTIONAL_PANELS or any(r.mode == mode for r in ours)]
    figure = Figure(figsize=(6 * len(panels), 4.6), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), sharey=True)
    for ax, (mode, title) in zip(axes, panels):
        shown = {mode, "scratch"}
        panel = [r for r in ours if r.mode in shown]
        panel_schemes = sorted({r.scheme for r in panel})
        band_alpha = 0.2 / max(1.0, len(panel_schemes) / 2) ** 0.5  # many overlapping bands turn to mud
        for scheme in panel_schemes:
            _draw_ours(ax, [r for r in panel if r.scheme == scheme], styles[scheme], band_alpha)
        for k, scheme in enumerate(sorted({r.scheme for r in published if r.mode in shown})):
            _draw_published(ax, [r for r in published if r.scheme == scheme and r.mode in shown],
                            styles[scheme], nudge=1.07 * 1.045 ** k)
        if not panel:
            ax.text(0.5, 0.5, f"no {mode} runs", transform=ax.transAxes, ha="center", va="center", color="0.5")
        _format_axes(ax, xs, first.axis, first.metric, title)
    axes[0].set_ylabel(f"test {METRIC_NAMES.get(first.metric, first.metric)}")
    figure.suptitle(f"{first.dataset} · {first.task} · scored per {first.level} · "
                    f"{METRIC_NAMES.get(first.metric, first.metric)}\n95% CI: patient-cluster bootstrap",
                    fontsize=12)
    schemes = sorted(our_schemes)
    figure.legend(handles=_legend_handles(schemes, styles, first.metric, bool(published)), loc="outside right upper",
                  fontsize=8.5, frameon=False)
    out_path = Path(out_path)
    figure.savefig(out_path)
    return out_path


# ---------------------------------------------------------------------------------------------- files
def _by_section(rows: Iterable[Row]) -> dict[tuple[str, str, str], list[Row]]:
    """Rows by (dataset, task, axis): one table and figure each, fractions and budgets apart."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.dataset, row.task, row.axis), []).append(row)
    return groups


def rows_as_records(rows: Iterable[Row]) -> list[dict]:
    """Rows as flat dicts (per-seed values and seeds joined with ';') for CSV files and tables."""
    records = []
    for row in rows:
        record = asdict(row)
        record["values"] = ";".join(f"{v:.6g}" for v in row.values)
        record["seeds"] = ";".join(map(str, row.seeds))
        records.append(record)
    return records


def write_csv(rows: Sequence[Row], path: str | Path) -> Path:
    """Long format: one line per cell and source."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(Row)])
        writer.writeheader()
        writer.writerows(rows_as_records(rows))
    return path


def _report_header(scan: ResultScan, runs_dir: str | Path, metric: str, split: str = "test") -> list[str]:
    where = "test" if split == "test" else "validation (test split unread)"
    return [f"# Label-efficiency report: {where} {METRIC_NAMES.get(metric, metric)}", "",
            f"{len(scan.results)} result files from `{runs_dir}`; {len(scan.broken)} broken and "
            f"{len(scan.other)} other JSON files skipped.", "",
            "Cells: mean ± std across seeds [mean of the per-run 95% CI bounds] (n = seeds). "
            "95% CI: patient-cluster bootstrap; the published intervals are the study's per-segment "
            "bootstrap (narrower).", ""]


def write_report(runs_dir: str | Path, out_dir: str | Path, metric: str = "auroc", published: bool = True,
                 split: str = "test") -> Path:
    """Write ``report.md``, ``report.csv`` and one PNG per dataset/task into ``out_dir``; returns report.md.

    The study published AUROC only, so published values appear for ``metric="auroc"`` on the test split.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scan = scan_results(runs_dir, split)
    published = published and split == "test"
    _log_skipped(scan)
    ours = aggregate_results(scan.results, metric)
    groups = _by_section(ours)
    reference = {key: published_results(*key[:2]) if published and metric == "auroc" and key[2] == "fraction" else []
                 for key in groups}  # the study published label fractions only
    styles = scheme_styles(r.scheme for r in ours)  # published rows are drawn only for schemes we ran
    parts = _report_header(scan, runs_dir, metric, split)
    for (dataset, task, axis), rows in groups.items():
        name = f"{dataset}-{task}-{metric}{'' if axis == 'fraction' else '-budgets'}.png"
        figure = plot_dataset_task(rows, reference[(dataset, task, axis)], styles, out_dir / name)
        parts.append(_markdown_section(rows, reference[(dataset, task, axis)], figure.name))
    if scan.broken:
        parts += ["## Skipped files", "", *(f"- `{path}`: {reason}" for path, reason in scan.broken)]
    if not groups:
        parts.append(f"No results with `{metric}` found.")
    write_csv([*ours, *(r for rows in reference.values() for r in rows)], out_dir / "report.csv")
    report = out_dir / "report.md"
    report.write_text("\n".join(parts).rstrip() + "\n")
    return report


# ---------------------------------------------------------------------------------------------- W&B
def wandb_panel_help() -> str:
    """How to compare label fractions in the W&B UI (the section of this module's docstring)."""
    return _PANEL_HELP.strip()


def _wandb_mode() -> str:
    """WANDB_MODE wins; otherwise online only when an API key is configured, so nothing blocks on a login."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("online", "offline", "disabled"):
        return mode
    return "online" if wandb_logged_in() else "offline"


def _line_series(rows: Sequence[Row], mode: str, title: str):
    """One series per scheme of metric vs label fraction or budget (rows of one axis); the scratch baseline
    joins both modes."""
    import wandb

    panel = [r for r in rows if r.source == "ours" and r.mode in (mode, "scratch")]
    schemes = sorted({r.scheme for r in panel})
    series = [sorted((r.x, r.mean) for r in panel if r.scheme == s) for s in schemes]
    xname = "label_fraction" if rows[0].axis == "fraction" else "labelled_patients"
    return wandb.plot.line_series(xs=[[x for x, _ in s] for s in series], ys=[[y for _, y in s] for s in series],
                                  keys=schemes, title=title, xname=xname)


def start_wandb_run(project: str, name: str, job_type: str, save_dir: str | Path | None = None,
                    init_timeout: float = 15.0):
    """A new W&B run that never blocks: offline unless logged in (WANDB_MODE wins), a short init timeout,
    and an offline fallback when the server is slow or refuses (sync later with ``wandb sync``)."""
    import wandb

    mode = _wandb_mode()
    settings = wandb.Settings(init_timeout=init_timeout, silent=True, console="off", x_disable_stats=True)
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    init = {"project": project, "name": name, "job_type": job_type, "dir": save_dir, "settings": settings,
            "reinit": "create_new"}
    try:
        return wandb.init(mode=mode, **init)
    except wandb.Error as error:
        if mode != "online":
            raise
        log.warning("W&B online init failed (%s); logging offline", error)
        return wandb.init(mode="offline", **init)


def run_files_dir(run) -> Path | None:
    """Where a run keeps its files, or None for a disabled (no-op) run."""
    return None if run.settings.mode == "disabled" else Path(run.dir)


def log_to_wandb(rows: Sequence[Row], project: str = "lungheart-cl", images: Iterable[str | Path] = (),
                 name: str = "label-fraction-report", save_dir: str | Path | None = None,
                 init_timeout: float = 15.0) -> Path | None:
    """Log the rows as a ``results`` Table, line charts per (dataset, task, mode) and ``images`` as
    ``wandb.Image`` to a new run (see ``start_wandb_run``); returns the run's files directory, or
    None when W&B is disabled."""
    import wandb

    run = start_wandb_run(project, name, "report", save_dir, init_timeout)
    try:
        records = rows_as_records(rows)
        columns = list(records[0]) if records else [f.name for f in fields(Row)]
        payload: dict = {"results": wandb.Table(columns=columns, data=[list(r.values()) for r in records])}
        for (dataset, task, axis), group in _by_section(rows).items():
            metric, versus = group[0].metric, "label_fraction" if axis == "fraction" else "labelled_patients"
            for mode_name, title in PANELS:
                if any(r.mode == mode_name and r.source == "ours" for r in group):
                    payload[f"{dataset}/{task}/{mode_name}/{metric}_vs_{versus}"] = _line_series(
                        group, mode_name, f"{dataset} {task}: {title}, test {metric} vs {versus.replace('_', ' ')}")
        for image in map(Path, images):
            payload[f"figures/{image.stem}"] = wandb.Image(str(image), caption=image.stem)
        run.log(payload)
    finally:
        run.finish()
    return run_files_dir(run)
