"""Report tables: the markdown pivot tables (schemes x labelled subsets, ours beside the study's) and the
long-format CSV of the rows."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterable, Sequence

from lungheart_cl.report.results import PUBLISHED_LABEL, Row, sort_rows


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


def markdown_section(ours: Sequence[Row], published: Sequence[Row], figure: str | None) -> str:
    """One dataset/task/axis: its table, its figure, and the table beside the published values."""
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


def by_section(rows: Iterable[Row]) -> dict[tuple[str, str, str], list[Row]]:
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
