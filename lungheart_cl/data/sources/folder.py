"""Any folder of audio files as a dataset: ``data.dataset: folder``.

Every ``.wav``, ``.flac``, ``.mp3`` and ``.ogg`` below the root (any sample rate, any channel count:
the cache mixes to mono and resamples) is a recording; hidden files and folders are left out. The
recording id is the file's path relative to the root. Unlabelled unless told otherwise, each file its
own patient. Source options (``data.source_options``, or ``data inspect --option KEY=VALUE``):

- ``metadata``: a CSV (relative to the root, or absolute) with a ``path`` column (relative to the
  root) and any of ``patient``, ``location`` (recording site), ``age_group``, ``age_years``, ``sex``,
  ``device``, ``source``, ``label``. It lists the recordings: files it does not list are left out
  (and counted in a note). A bad row is an error naming the CSV, its line and column (with
  ``skip_bad``: the row is left out and counted); a wrong header is always an error.
- ``pattern``: a regular expression matched against the whole relative path (``/``-separated), whose
  named groups give the same fields (e.g. ``(?P<patient>[^_]+)_(?P<location>\\w+)\\.wav``). A file
  that does not match is an error naming it (or, with ``skip_bad``, a counted skip). A field comes
  from the CSV or the pattern, never both.
- ``classes``: the label values in class order (default: the values found, sorted).
- ``extensions``: the audio suffixes to collect (default wav, flac, mp3, ogg).

With labels (two values at least) the dataset has the task ``label``, scored per recording; without
them it serves pretraining pools and ``predict``. Recordings carry ``extra["label"]`` (None: none).

Long on purpose: a dataset is one module of the registry; listing, the metadata CSV and its checks are one reader.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lungheart_cl.data.audio import probe_audio
from lungheart_cl.data.records import (AGE_GROUPS, UNKNOWN, DataError, Patient, Problem, Recording, SourceDataset,
                                      age_group_from_years, normalize_sex, skip_or_raise)
from lungheart_cl.data.spec import Column, DatasetSpec
from lungheart_cl.data.tasks import Manifest, Task
from lungheart_cl.errors import ConfigError, MissingPathError

DATASET = "folder"
EXTENSIONS = ("wav", "flac", "mp3", "ogg")
FIELDS = ("patient", "location", "age_group", "age_years", "sex", "device", "source", "label")
PATIENT_FIELDS = ("age_group", "age_years", "sex")  # one value per patient, however many files


@dataclass(frozen=True)
class _Options:
    """The reader's options, checked."""

    metadata: Path | None
    pattern: re.Pattern | None
    classes: tuple[str, ...] | None
    extensions: tuple[str, ...]


def _options(root: Path, metadata: str | Path | None = None, pattern: str | None = None,
             classes: Sequence[str] | None = None, extensions: Sequence[str] | None = None) -> _Options:
    """The options checked: a ConfigError (or MissingPathError) names the option and the problem."""
    path = None
    if metadata is not None:
        path = Path(metadata) if Path(metadata).is_absolute() else root / metadata
        if not path.is_file():
            raise MissingPathError(f"{path}: metadata file not found (source option metadata)")
    compiled = None
    if pattern is not None:
        try:
            compiled = re.compile(str(pattern))
        except re.error as error:
            raise ConfigError(f"source option pattern {pattern!r} is not a regular expression ({error})") from error
        unknown = sorted(set(compiled.groupindex) - set(FIELDS))
        if unknown:
            raise ConfigError(f"source option pattern: unknown group(s) {', '.join(unknown)} "
                              f"(groups may be {', '.join(FIELDS)})")
    return _Options(path, compiled, _classes(classes), _extensions(extensions))


def _classes(classes: Sequence[str] | None) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ConfigError(f"source option classes must be a list of label values, got {classes!r}")
    values = tuple(str(value).strip() for value in classes)
    if len(set(values)) != len(values) or len(values) < 2:
        raise ConfigError(f"source option classes needs at least two distinct values, got {list(values)}")
    return values


def _extensions(extensions: Sequence[str] | None) -> tuple[str, ...]:
    if extensions is None:
        return EXTENSIONS
    if isinstance(extensions, str) or not isinstance(extensions, Sequence) or not extensions:
        raise ConfigError(f"source option extensions must be a list of suffixes such as [wav, flac], got {extensions!r}")
    return tuple(str(suffix).lower().lstrip(".") for suffix in extensions)


@dataclass(frozen=True)
class _Entry:
    """One recording as listed (a CSV row or a file found), before its audio is probed."""

    path: Path
    recording_id: str
    fields: Mapping[str, str]  # checked text of the fields given ("" = not given)
    line: int | None = None  # the CSV line, where the entry comes from the CSV


@dataclass
class _Listing:
    entries: list[_Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _audio_files(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """The audio files below the root, sorted, hidden files and folders left out."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found += [Path(folder) / name for name in sorted(files)
                  if not name.startswith(".") and Path(name).suffix.lower().lstrip(".") in extensions]
    return found


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _check_value(name: str, text: str, classes: tuple[str, ...] | None) -> str:
    """A field's value as stored (sex and age group in the shared vocabulary); ValueError says what is wrong."""
    if name == "sex":
        try:
            return normalize_sex(text)
        except ValueError:
            raise ValueError(f"unknown value {text!r} (sex may be F, M, female, male or empty)") from None
    if name == "age_group":
        value = text.lower() or UNKNOWN
        if value not in AGE_GROUPS:
            raise ValueError(f"unknown value {text!r} (age groups: {', '.join(AGE_GROUPS)})")
        return value
    if name == "age_years" and text:
        try:
            years = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number of years") from None
        if not math.isfinite(years) or years < 0:
            raise ValueError(f"{text!r} is not an age in years")
    if name == "label" and text and classes is not None and text not in classes:
        raise ValueError(f"unknown value {text!r} (classes: {', '.join(classes)})")
    return text


def _from_pattern(root: Path, path: Path, options: _Options) -> dict[str, str]:
    """The fields the pattern's named groups give (none without a pattern); DataError if the path does not match."""
    if options.pattern is None:
        return {}
    match = options.pattern.fullmatch(_relative(root, path))
    if match is None:
        raise DataError(path, f"{_relative(root, path)!r} does not match the pattern {options.pattern.pattern!r}")
    fields = {}
    for name, text in match.groupdict().items():
        try:
            fields[name] = _check_value(name, (text or "").strip(), options.classes)
        except ValueError as error:
            raise DataError(path, f"pattern group {name}: {error}") from None
    return fields


def _list_files(root: Path, options: _Options, skip_bad: bool) -> _Listing:
    """Without a CSV: every audio file, its fields from the pattern."""
    listing = _Listing()
    files = _audio_files(root, options.extensions)
    if not files:
        raise DataError(root, f"no audio files ({', '.join(options.extensions)}) in the folder or below it")
    for path in files:
        try:
            listing.entries.append(_Entry(path, _relative(root, path), _from_pattern(root, path, options)))
        except DataError as error:
            skip_or_raise(error, skip_bad, listing.problems)
    return listing


class _RowError(ValueError):
    """A bad CSV cell: the reader turns it into a DataError naming the CSV, the line and the column."""

    def __init__(self, column: str | None, message: str):
        super().__init__(message)
        self.column = column


def _header(metadata: Path, header: list[str], options: _Options) -> list[str]:
    names = [name.strip() for name in header]
    if len(set(names)) != len(names):
        raise DataError(metadata, f"line 1: a column name repeats ({', '.join(names)})")
    if "path" not in names:
        raise DataError(metadata, f"line 1: no column 'path' (columns: {', '.join(names)})")
    unknown = [name for name in names if name not in ("path", *FIELDS)]
    if unknown:
        raise DataError(metadata, f"line 1: unknown column(s) {', '.join(unknown)} "
                                  f"(columns may be path, {', '.join(FIELDS)})")
    both = [name for name in names if options.pattern is not None and name in options.pattern.groupindex]
    if both:
        raise ConfigError(f"{', '.join(both)} come from both the metadata CSV and the pattern ({metadata}); "
                          f"give each field in one of them")
    return names


def _row_entry(root: Path, row: dict[str, str], seen: dict[Path, int], line: int, options: _Options) -> _Entry:
    """One CSV row as an entry; _RowError names the bad column."""
    text = row["path"]
    if not text:
        raise _RowError("path", "the path is empty")
    path = Path(text) if Path(text).is_absolute() else root / text
    resolved = Path(os.path.normpath(path))
    if resolved != root and root not in resolved.parents:
        raise _RowError("path", f"{text!r} is not under the folder {root}")
    if not resolved.is_file():
        raise _RowError("path", f"{text!r}: no such file")
    if resolved in seen:
        raise _RowError("path", f"{text!r} is listed again (first on line {seen[resolved]})")
    fields = {}
    for name in FIELDS:
        if name in row:
            try:
                fields[name] = _check_value(name, row[name], options.classes)
            except ValueError as error:
                raise _RowError(name, str(error)) from None
    try:
        fields |= _from_pattern(root, resolved, options)
    except DataError as error:
        raise _RowError("path", error.message) from None
    return _Entry(resolved, _relative(root, resolved), fields, line)


def _list_metadata(root: Path, options: _Options, skip_bad: bool) -> _Listing:
    """With a CSV: its rows, each checked; the audio files it does not list are noted and left out."""
    metadata, listing, seen = options.metadata, _Listing(), {}
    with open(metadata, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
        lines = list(csv.reader(handle))
    if not lines:
        raise DataError(metadata, "the metadata CSV is empty (no header line)")
    names = _header(metadata, lines[0], options)
    for line, cells in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        try:
            if len(cells) != len(names):
                raise _RowError(None, f"{len(cells)} cells for {len(names)} columns")
            entry = _row_entry(root, dict(zip(names, (cell.strip() for cell in cells))), seen, line, options)
        except _RowError as error:
            where = f"line {line}" + (f", column {error.column}" if error.column else "")
            skip_or_raise(DataError(metadata, f"{where}: {error}"), skip_bad, listing.problems)
            continue
        seen[entry.path] = line
        listing.entries.append(entry)
    if not seen and not listing.problems:
        raise DataError(metadata, "the metadata CSV lists no recordings")
    unlisted = [_relative(root, path) for path in _audio_files(root, options.extensions) if path not in seen]
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (", ..." if len(unlisted) > 5 else "")
        listing.notes.append(f"{len(unlisted)} audio file(s) not listed in {metadata.name}, left out: {shown}")
    return listing


def _patient_fields(entry: _Entry) -> dict[str, str]:
    fields = {name: entry.fields.get(name, "") for name in PATIENT_FIELDS}
    if fields["age_years"] and fields["age_group"] in ("", UNKNOWN):
        fields["age_group"] = age_group_from_years(float(fields["age_years"]))
    return {name: value for name, value in fields.items() if value not in ("", UNKNOWN)}


def _consistent(listing: _Listing, metadata: Path | None, skip_bad: bool) -> dict[str, dict[str, str]]:
    """Each patient's age and sex, which every entry of the patient must agree with (a missing value agrees)."""
    known: dict[str, tuple[dict[str, str], dict[str, str]]] = {}  # patient -> (values, where each came from)
    kept = []
    for entry in listing.entries:
        patient = entry.fields.get("patient") or entry.recording_id
        values, origin = known.setdefault(patient, ({}, {}))
        here = f"line {entry.line}" if entry.line is not None else entry.recording_id
        clash = next(((name, value) for name, value in _patient_fields(entry).items()
                      if values.get(name, value) != value), None)
        if clash is not None:
            name, value = clash
            prefix = f"line {entry.line}, column {name}: " if entry.line is not None else ""
            error = DataError(metadata if entry.line is not None else entry.path,
                              f"{prefix}patient {patient}: {value!r} disagrees with {values[name]!r} ({origin[name]})")
            skip_or_raise(error, skip_bad, listing.problems)
            continue
        for name, value in _patient_fields(entry).items():
            values.setdefault(name, value)
            origin.setdefault(name, here)
        kept.append(entry)
    listing.entries = kept
    return {patient: values for patient, (values, _) in known.items()}


def _listing(root: Path, options: _Options, skip_bad: bool) -> tuple[_Listing, dict[str, dict[str, str]]]:
    listing = (_list_metadata if options.metadata is not None else _list_files)(root, options, skip_bad)
    return listing, _consistent(listing, options.metadata, skip_bad)


def _recording(entry: _Entry) -> Recording:
    info = probe_audio(entry.path)
    text = lambda name: entry.fields.get(name) or UNKNOWN  # noqa: E731
    return Recording(dataset=DATASET, recording_id=entry.recording_id,
                     patient_id=entry.fields.get("patient") or entry.recording_id, audio_path=entry.path,
                     sample_rate=info.sample_rate, num_frames=info.num_frames, num_channels=info.num_channels,
                     location=text("location"), device=text("device"), source=text("source"),
                     extra={"label": entry.fields.get("label") or None})


def read_folder(root: Path, *, skip_bad: bool = False, metadata: str | None = None, pattern: str | None = None,
                classes: Sequence[str] | None = None, extensions: Sequence[str] | None = None) -> SourceDataset:
    """Every audio file below `root` (or those the metadata CSV lists) as a recording (see the module docstring)."""
    root = Path(root).resolve()
    options = _options(root, metadata, pattern, classes, extensions)
    listing, patient_values = _listing(root, options, skip_bad)
    recordings = []
    for entry in listing.entries:
        try:
            recordings.append(_recording(entry))
        except DataError as error:
            skip_or_raise(error, skip_bad, listing.problems)
    patients = {}
    for recording in recordings:
        values = patient_values.get(recording.patient_id, {})
        age = float(values["age_years"]) if "age_years" in values else None
        patients[recording.patient_id] = Patient(recording.patient_id, age_years=age,
                                                 age_group=values.get("age_group", UNKNOWN),
                                                 sex=values.get("sex", UNKNOWN))
    return SourceDataset(DATASET, root, recordings, patients, listing.problems, listing.notes)


# --- the task its labels define, and the registry entry -------------------------------------------------------


def _label_tasks(root: Path, options: Mapping[str, Any]) -> tuple[Task, ...]:
    """The task ``label`` where the listing holds labels (read without probing audio): none without labels."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise MissingPathError(f"{root}: dataset root does not exist (dataset {DATASET})")
    checked = _options(root, **options)
    listing, _ = _listing(root, checked, skip_bad=True)  # the bad entries are named when the folder is read
    found = sorted({entry.fields["label"] for entry in listing.entries if entry.fields.get("label")})
    if not found:
        return ()
    classes = checked.classes or tuple(found)
    if len(classes) < 2:
        raise DataError(checked.metadata or root, f"the labels hold {len(found)} value(s) "
                                                  f"({', '.join(map(repr, found))}); a task needs at least two classes")
    index = {name: i for i, name in enumerate(classes)}

    def labeler(manifest: Manifest) -> np.ndarray:
        return np.asarray([index.get(str(value), -1) for value in manifest["label"]], dtype=np.int64)

    return (Task("label", classes, "recording", labeler,
                 f"folder: the label of each file ({', '.join(classes)}), window scores averaged per recording"),)


SPEC = DatasetSpec(
    name=DATASET,
    description="any folder of audio files (wav, flac, mp3, ogg), labelled by an optional metadata CSV",
    read=read_folder,
    sample_rate=4000,
    segment_seconds=4.0,
    default_task="label",
    source_tasks=_label_tasks,
    columns=(Column("label", "recording"),),
)
