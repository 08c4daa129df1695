"""The manifest: one row per segment with its generic columns and its dataset's extra columns.

Generic columns (every dataset): ids, dataset, location, device, site (the recording's sub-database
or campaign: `Recording.source`), age group, sex, age, the official split (empty where a dataset has
none), where the segment sits in its recording and which samples hold its own audio. (The data
modules add ``source``, the name of the run's source a segment came from; see `data.pool`.) Extra columns come from the dataset's `DatasetSpec.columns`. The cache
stores the column types beside the manifest, so reading it back needs no dataset knowledge.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np

from lungheart_cl.data.records import Patient, Recording
from lungheart_cl.data.spec import Column

Manifest = dict[str, np.ndarray]
Kind = Literal["str", "int", "float"]
# Typed columns of every manifest; the others are text unless a spec column says "int".
GENERIC_TYPES: dict[str, Kind] = {"age_years": "float", "start_s": "float", "end_s": "float", "event_index": "int",
                                  "valid_start": "int", "valid_end": "int"}


def column_types(columns: tuple[Column, ...]) -> dict[str, Kind]:
    """Every non-text column of a manifest with these extra columns, and its type."""
    return {**GENERIC_TYPES, **{column.name: column.kind for column in columns if column.kind != "str"}}


def manifest_row(recording: Recording, patient: Patient, columns: tuple[Column, ...], event_index: int,
                 start_s: float, end_s: float) -> dict:
    """A segment's row (without its valid span): `event_index` -1 for a window of an event-less recording."""
    event = recording.events[event_index] if event_index >= 0 else None
    row = {"recording_id": recording.recording_id, "patient_id": recording.patient_id,
           "dataset": recording.dataset, "location": recording.location, "device": recording.device,
           "site": recording.source, "age_group": patient.age_group, "sex": patient.sex,
           "age_years": "" if patient.age_years is None else patient.age_years,
           "official_split": recording.official_split or "",
           "start_s": round(start_s, 4), "end_s": round(end_s, 4), "event_index": event_index}
    for column in columns:
        if column.name in row:
            raise ValueError(f"extra column {column.name!r} shadows a generic manifest column")
        row[column.name] = column.value(recording, patient, event)
    return row


def as_columns(rows: list[dict], types: dict[str, Kind]) -> Manifest:
    """Rows as column arrays: ints and floats typed ("" is NaN in a float column), the rest as str."""
    columns: Manifest = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        kind = types.get(name, "str")
        if kind == "int":
            columns[name] = np.asarray(values, dtype=np.int64)
        elif kind == "float":
            columns[name] = np.asarray([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
        else:
            columns[name] = np.asarray([str(v) for v in values], dtype=str)
    return columns


def write_manifest(path: Path, rows: list[dict]) -> None:
    if not rows:
        raise ValueError(f"{path}: no segments to write (every recording was skipped or empty)")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_manifest(path: Path, types: dict[str, Kind]) -> Manifest:
    """The manifest as columns, typed by `types` (as `column_types` gave them when it was written)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return as_columns(rows, types)
