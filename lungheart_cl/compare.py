"""`lungheart-cl compare RUNS_DIR --a SCHEME[:MODE] --b SCHEME[:MODE]`: paired comparison of two methods.

Pairs runs of the two methods on the same labelled subsets and scores them with a bootstrap CI over the
test patients and the label draws (`lungheart_cl.pairing`, which says how); this module writes the result:
a markdown table per dataset, task and kind of labelled subset (printed, and ``compare.md``) and
``compare.csv``, beside the report by default. ``--split val`` pairs the validation-only runs.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from lungheart_cl.pairing import ComparisonError, PairedRow, compare_methods, parse_method
from lungheart_cl.report import METRIC_NAMES, scan_results, x_label

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- output
def _signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}" if math.isfinite(value) else "nan"


def _ci_reading(row: PairedRow) -> str:
    if not (math.isfinite(row.ci_low) and math.isfinite(row.ci_high)):
        return "–"
    return "yes" if row.ci_low > 0 else "no (CI < 0)" if row.ci_high < 0 else "no"


def markdown_table(rows: Sequence[PairedRow]) -> str:
    """One table of b against a (rows of one comparison, dataset, task and axis)."""
    first = rows[0]
    percent = f"{first.ci_level * 100:g} %"
    header = ["labels", "labelled patients", "pairs (seeds)", f"a: {first.a}", f"b: {first.b}", "mean b − a",
              f"{percent} CI of b − a", "CI > 0", "wins (b > a)"]
    lines = []
    for row in rows:
        ci = f"[{_signed(row.ci_low)}, {_signed(row.ci_high)}]" + (" (test patients only)" if row.pairs == 1 else "")
        lines.append([x_label(row.axis, row.x), "–" if row.labelled_patients is None else str(row.labelled_patients),
                      f"{row.pairs} ({', '.join(map(str, row.seeds))})", f"{row.mean_a:.3f}", f"{row.mean_b:.3f}",
                      _signed(row.mean_difference), ci, _ci_reading(row), f"{row.wins} of {row.pairs}"])
    rule = ["---"] * len(header)
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *lines])


def comparison_markdown(rows: Sequence[PairedRow], notes: Sequence[str]) -> str:
    """Sections of one comparison: a table per dataset, task and kind of labelled subset, then the notes."""
    sections: dict[tuple, list[PairedRow]] = {}
    for row in rows:
        sections.setdefault((row.dataset, row.task, row.axis), []).append(row)
    parts = []
    for (dataset, task, axis), section in sections.items():
        first = section[0]
        parts += [f"## b = {first.b} vs a = {first.a} · {dataset} · {task} (scored per {first.level})", "",
                  markdown_table(section), ""]
    parts += [f"- {note}" for note in notes]
    return "\n".join(parts).rstrip() + "\n"


def _explanation(metric: str, num_samples: int, level: float) -> list[str]:
    percent = f"{level * 100:g} %"
    return [f"# Paired comparisons: test {METRIC_NAMES.get(metric, metric)}", "",
            "A pair is one run of each method on the same labelled subset (dataset, task, label budget or fraction "
            "and label seed), scored on the same test set. "
            f"{percent} CI of b − a: percentile bootstrap ({num_samples} resamples) of the mean paired difference, "
            "resampling both the test patients (one resample, applied to both methods and to every pair) and the "
            "label draws (seeds). "
            "CI > 0: \"yes\" when the whole interval lies above 0, i.e. b beats a on labelled subsets of this size "
            f"(a one-sided reading at the {(1 - level) / 2 * 100:g} % level); \"no\" otherwise, \"no (CI < 0)\" when it "
            "lies below 0 (a beats b). With one pair the draws cannot be resampled and the interval covers the test "
            "patients only.", ""]


def write_comparisons(runs_dir: str | Path, out_dir: str | Path, comparisons: Sequence[Sequence[str]],
                      metric: str = "auroc", num_samples: int = 1000, level: float = 0.95, seed: int = 0,
                      split: str = "test") -> Path:
    """Compare each [A, B] of `comparisons` over the results under `runs_dir` scored on `split` (test, or val:
    the runs of ``finetune --test false``); write ``compare.md`` and ``compare.csv`` into `out_dir` (replacing
    earlier ones) and return the markdown's path."""
    if not Path(runs_dir).is_dir():
        raise ComparisonError(f"{runs_dir}: no such folder")
    scan = scan_results(runs_dir, split)
    for path, reason in scan.broken:
        log.warning("skipped %s: %s", path, reason)
    parts = _explanation(metric, num_samples, level)
    if split != "test":
        parts = [f"Scored on the **{split}** patients (validation-only runs; the test split was not read).", "", *parts]
    every: list[PairedRow] = []
    for a, b in comparisons:
        rows, notes = compare_methods(scan.results, parse_method(a), parse_method(b), metric, num_samples, level, seed)
        parts.append(comparison_markdown(rows, notes))
        every += rows
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "compare.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(PairedRow)] + ["ci_above_zero"])
        writer.writeheader()
        for row in every:
            writer.writerow({**asdict(row), "seeds": ";".join(map(str, row.seeds)), "ci_above_zero": row.ci_above_zero})
    markdown = out_dir / "compare.md"
    markdown.write_text("\n".join(parts).rstrip() + "\n")
    return markdown


# ---------------------------------------------------------------------------------------------- CLI
def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    compare = sub.add_parser("compare", help="paired comparison of two methods on the same labelled subsets, "
                                             "with a bootstrap CI over test patients and label draws")
    compare.add_argument("runs_dir", type=Path, help="folder searched recursively for results JSONs")
    compare.add_argument("--a", required=True, help="the reference method, SCHEME or SCHEME:MODE (e.g. random_init)")
    compare.add_argument("--b", required=True, help="the method compared with it; the table shows b − a")
    compare.add_argument("--metric", default="auroc")
    compare.add_argument("--out", type=Path, default=None, help="folder of compare.md/.csv (default: RUNS_DIR/report)")
    compare.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    compare.add_argument("--level", type=float, default=0.95, help="CI level")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    compare.add_argument("--split", choices=("test", "val"), default="test",
                         help="val: pair the validation-only runs of `finetune --test false` (choosing recipes)")


def run_compare(args: argparse.Namespace) -> int:
    """0: tables written; 2: the runs cannot be compared (one line on stderr saying why)."""
    out = args.out or args.runs_dir / "report"
    try:
        markdown = write_comparisons(args.runs_dir, out, [(args.a, args.b)], args.metric, args.samples, args.level,
                                     args.seed, args.split)
    except ComparisonError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    print(markdown.read_text())
    print(f"comparison written to {markdown} and {markdown.with_suffix('.csv')}")
    return 0

