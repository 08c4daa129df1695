"""Label-efficiency reports: aggregate finetune results over seeds, compare with the published study, plot.

Every finetune run writes a results JSON (``Classifier._write_results``). This package collects them,
averages each (dataset, task, scheme, mode, labelled subset) cell over seeds (`results`), sets the numbers
beside those of Soni et al. (2022) and writes ``report.md``, ``report.csv`` (`tables`) and one figure
(`plots`) per dataset/task and kind of labelled subset: label fractions (x = fraction) or label budgets
(``data.labelled_patients``; x = number of labelled patients, on PhysioNet 2016 recordings). Both x axes
are logarithmic. Our intervals come from a patient-cluster bootstrap; the study's from a per-segment
bootstrap, which gives narrower intervals, so overlap is read with that in mind. `wandb_upload` logs the
same to W&B.
"""

from __future__ import annotations

from pathlib import Path

from lungheart_cl.report.plots import plot_dataset_task, scheme_styles
from lungheart_cl.report.results import (METRIC_NAMES, ResultScan, Row, aggregate_results, cell_key, latest_per_seed,
                                         load_results, log_skipped, published_results, scan_results, sort_rows)
from lungheart_cl.report.tables import (by_section, format_cell, fraction_label, markdown_section, rows_as_records,
                                        write_csv, x_label)
from lungheart_cl.report.wandb_upload import PANEL_HELP, log_to_wandb, wandb_panel_help

__doc__ = f"{__doc__ or ''}{PANEL_HELP}"
__all__ = ["METRIC_NAMES", "ResultScan", "Row", "aggregate_results", "cell_key", "format_cell", "fraction_label",
           "latest_per_seed", "load_results", "log_to_wandb", "plot_dataset_task", "published_results",
           "rows_as_records", "scan_results", "scheme_styles", "sort_rows", "wandb_panel_help", "write_csv",
           "write_report", "x_label"]


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
    log_skipped(scan)
    ours = aggregate_results(scan.results, metric)
    groups = by_section(ours)
    reference = {key: published_results(*key[:2]) if published and metric == "auroc" and key[2] == "fraction" else []
                 for key in groups}  # the study published label fractions only
    styles = scheme_styles(r.scheme for r in ours)  # published rows are drawn only for schemes we ran
    parts = _report_header(scan, runs_dir, metric, split)
    for (dataset, task, axis), rows in groups.items():
        name = f"{dataset}-{task}-{metric}{'' if axis == 'fraction' else '-budgets'}.png"
        figure = plot_dataset_task(rows, reference[(dataset, task, axis)], styles, out_dir / name)
        parts.append(markdown_section(rows, reference[(dataset, task, axis)], figure.name))
    if scan.broken:
        parts += ["## Skipped files", "", *(f"- `{path}`: {reason}" for path, reason in scan.broken)]
    if not groups:
        parts.append(f"No results with `{metric}` found.")
    write_csv([*ours, *(r for rows in reference.values() for r in rows)], out_dir / "report.csv")
    report = out_dir / "report.md"
    report.write_text("\n".join(parts).rstrip() + "\n")
    return report
