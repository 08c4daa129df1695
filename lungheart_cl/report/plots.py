"""Report figures: metric vs label fraction or budget on log axes, one panel per evaluation mode, seeds and
the published values drawn beside the means."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from lungheart_cl.report.results import BASELINE_STYLES, METRIC_NAMES, PUBLISHED_LABEL, Row
from lungheart_cl.report.tables import fraction_label

PANELS = (("linear", "Linear probe"), ("logistic", "Logistic probe"), ("finetune", "Fine-tune"))
OPTIONAL_PANELS = {"logistic"}  # drawn only when some run used it
SCHEME_MARKERS = ("o", "D", "^", "h", "P", "X", "<", ">", "p", "*")
AXIS_NAMES = {"fraction": "label fraction (log scale)", "budget": "labelled training patients (log scale)"}


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
