"""Report to W&B: the aggregated rows as a ``results`` Table, a line chart per dataset/task/mode and the
figures, logged to a run that never blocks (`lungheart_cl.wandb_runs`)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Iterable, Sequence

from lungheart_cl.report.plots import PANELS
from lungheart_cl.report.results import Row
from lungheart_cl.report.tables import by_section, rows_as_records
from lungheart_cl.wandb_runs import run_files_dir, start_wandb_run

PANEL_HELP = """
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


def wandb_panel_help() -> str:
    """How to compare label fractions in the W&B UI (the section of the report's docstring)."""
    return PANEL_HELP.strip()


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
        for (dataset, task, axis), group in by_section(rows).items():
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
