"""`lungheart-cl data inspect`: what a dataset root holds, and every problem found, per file.

Everything here is generic: the counts per task class come from the dataset's own tasks, and the
counts per value of its extra columns from its `DatasetSpec.columns`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lungheart_cl.data.manifest import Manifest, as_columns, column_types, manifest_row
from lungheart_cl.data.records import DataError, Problem, SourceDataset
from lungheart_cl.data.sources import Source
from lungheart_cl.data.spec import Column
from lungheart_cl.data.tasks import Task

UNLABELLED = "unlabelled"


def _counts(values) -> dict:
    return dict(sorted(Counter(values).items()))


def event_table(source: SourceDataset, columns: tuple[Column, ...]) -> Manifest:
    """A manifest without audio: one row per annotated event, or per recording for event-less ones."""
    rows = []
    for recording in source.recordings:
        patient = source.patient(recording)
        spans = [(i, e.start_s, e.end_s) for i, e in enumerate(recording.events)] or [(-1, 0.0, recording.duration_s)]
        rows += [manifest_row(recording, patient, columns, *span) for span in spans]
    return as_columns(rows, column_types(columns))


def task_counts(task: Task, table: Manifest) -> dict[str, int]:
    """How many of the task's scoring units (events, recordings or patients) hold each class."""
    labels = task.labels(table)
    names = np.asarray([*task.classes, UNLABELLED])[labels]  # -1 picks the last: unlabelled
    if task.level == "segment":
        return _counts(names.tolist())
    unit = table["recording_id" if task.level == "recording" else "patient_id"]
    return _counts(name for _, name in sorted(set(zip(unit.tolist(), names.tolist()))))


def column_counts(source: SourceDataset, column: Column) -> dict[str, int]:
    """How often each value of an extra column occurs among the patients, recordings or events it describes."""
    if column.of == "patient":
        first = {r.patient_id: r for r in reversed(source.recordings)}  # one recording per patient
        values = [column.value(r, source.patient(r), None) for r in first.values()]
    elif column.of == "recording":
        values = [column.value(r, source.patient(r), None) for r in source.recordings]
    else:
        values = [column.value(r, source.patient(r), e) for r in source.recordings for e in r.events]
    return _counts("none" if value in ("", -1) else str(value) for value in values)


def summarize(dataset: SourceDataset, source: Source) -> dict:
    """Counts a user checks before training (`dataset` as `source` read): recordings, patients, classes
    of each task, values of each extra column, rates, devices, notes and problems."""
    recordings, patients, columns = dataset.recordings, dataset.patients, source.spec.columns
    table = event_table(dataset, columns) if recordings else None
    problems = list(dataset.problems)
    try:
        tasks = {name: task_counts(task, table) for name, task in source.tasks.items()} if table is not None else {}
    except DataError as error:  # tasks a source builds from its files (too few label values): listed beside the rest
        tasks = {}
        problems.append(Problem.from_error(error))
    return {
        "dataset": dataset.name,
        "root": str(dataset.root),
        "recordings": len(recordings),
        "patients": len({r.patient_id for r in recordings}),
        "hours": round(sum(r.duration_s for r in recordings) / 3600, 3),
        "events": sum(len(r.events) for r in recordings),
        "tasks": tasks,
        "columns": {column.name: column_counts(dataset, column) for column in columns},
        "sample_rates": _counts(r.sample_rate for r in recordings),
        "channels": _counts(r.num_channels for r in recordings),
        "devices": _counts(r.device for r in recordings),
        "locations": _counts(r.location for r in recordings),
        "age_groups": _counts(p.age_group for p in patients.values()),
        "sexes": _counts(p.sex for p in patients.values()),
        "official_split": _counts(r.official_split or "none" for r in recordings),
        "notes": list(dataset.notes),
        "problems": [{"file": str(p.path), "problem": p.message} for p in problems],
    }


def inspect_root(dataset: str, root: Path, options: Mapping[str, Any] | None = None) -> dict:
    """Read with skip_bad so every bad file is listed, not just the first one."""
    try:
        source = Source(dataset, Path(root), options or {})
        return summarize(source.read(skip_bad=True), source)
    except DataError as error:  # a dataset-level problem (e.g. missing metadata file)
        problem = Problem.from_error(error)
        return {"dataset": dataset, "root": str(root), "problems": [{"file": str(problem.path),
                                                                     "problem": problem.message}]}


def _format_value(value) -> str:
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        return "; ".join(f"{k} ({_format_value(v)})" for k, v in value.items() if v)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def format_summary(summary: dict) -> str:
    lines = [f"{summary['dataset']} at {summary['root']}"]
    for key, value in summary.items():
        if key in ("dataset", "root", "notes", "problems") or value in ({}, []) or (key == "events" and not value):
            continue
        lines.append(f"  {key}: {_format_value(value)}")
    for note in summary.get("notes", []):
        lines.append(f"  note: {note}")
    problems = summary.get("problems", [])
    lines.append(f"  problems: {len(problems)}" + ("" if problems else " (none)"))
    lines += [f"    {p['file']}: {p['problem']}" for p in problems]
    return "\n".join(lines)
