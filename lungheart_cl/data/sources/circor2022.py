"""Reader for the CirCor DigiScope phonocardiogram dataset (George B. Moody PhysioNet Challenge 2022).

Layout: ``root/training_data/{id}.txt`` (patient header) with per recording ``.wav`` (4 kHz), WFDB
``.hea`` and, usually, a ``.tsv`` heart-cycle segmentation; ``root/training_data.csv`` summarises the
headers and is cross-checked against them when present.

The patients read are those the summary table lists (else those a ``RECORDS`` file lists, else every
header named like a patient id); any other file in ``training_data/`` (``LICENSE.txt``, ``RECORDS``,
a tsv that belongs to no recording, ...) is noted as a stray and ignored. Two quirks of the real
release are accepted and noted: zero-length segments (``30.4 30.4 0`` at the end of a few ``.tsv``
files) and CRLF line endings in some ``.tsv`` files.

Patient header: first line ``{id} {n_recordings} {sample_rate}``, then one line per recording
``LOC {hea} {wav} [{tsv}]`` (a location recorded twice has ``_1``/``_2`` file suffixes), then
``#Key: value`` lines (``#Age``, ``#Sex``, ``#Murmur``, ``#Campaign``, ...).

Extras: patients carry ``murmur`` ("present" | "absent" | "unknown"), ``outcome`` (later releases:
"normal" | "abnormal"), ``height_cm``, ``weight_kg``, ``pregnant``; recordings ``segmentation_path``
(the ``.tsv``, where there is one).

Long on purpose: a dataset is one module of the registry, and the release's quirks are checked where they are read.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungheart_cl.data.records import (UNKNOWN, DataError, Patient, Problem, Recording, SourceDataset, normalize_sex,
                                      skip_or_raise)
from lungheart_cl.data.sources.catalogue import DatasetSource, RemoteFile
from lungheart_cl.data.sources.wfdb_header import probe_against_header, read_wfdb_header
from lungheart_cl.data.spec import Column, DatasetSpec
from lungheart_cl.data.synthetic.circor2022 import write_circor2022
from lungheart_cl.data.tasks import Task, column_labeler
from lungheart_cl.metrics import auroc

DATASET = "circor2022"
DATA_DIR = "training_data"
SUMMARY_FILE = "training_data.csv"
RECORDS_FILE = "RECORDS"
PATIENT_ID = re.compile(r"\d+")
# The dataset paper: all recordings were made with a Littmann 3200 electronic stethoscope.
DEVICE = "littmann3200"
LOCATIONS = ("AV", "PV", "TV", "MV", "Phc")
AGE_GROUPS = {
    "Neonate": "neonate",
    "Infant": "infant",
    "Child": "child",
    "Adolescent": "adolescent",
    "Young Adult": "adult",
    "nan": "unknown",
}
MURMURS = ("Present", "Absent", "Unknown")
OUTCOMES = ("Abnormal", "Normal")
PREGNANCY = {"True": True, "False": False, "nan": None}
# Segmentation states: 0 unannotated, 1 S1, 2 systole, 3 S2, 4 diastole.
SEGMENT_STATES = range(5)
# The summary table renamed its locations column in later releases.
LOCATION_COLUMNS = ("Locations", "Recording locations:")
SUMMARY_COLUMNS = ("Patient ID", "Age", "Sex", "Murmur")
# A missing value is "nan" in the headers; a table written by another tool may leave the cell empty.
MISSING_VALUES = ("", "nan")


@dataclass(frozen=True)
class _RecordingLine:
    """One ``LOC hea wav [tsv]`` line of a patient header."""

    line: int
    location: str
    hea: str
    wav: str
    tsv: str | None

    @property
    def recording_id(self) -> str:
        return Path(self.wav).stem


@dataclass(frozen=True)
class _Summary:
    """training_data.csv: its rows by patient id, and the name of its locations column."""

    path: Path
    rows: dict[str, dict[str, str]]
    locations_column: str


@dataclass
class _PatientHeader:
    """A patient header split into its parts; `fields` maps each ``#Key`` to (value, line number).

    `location_codes` and `listed_files` come from every recording line, valid or not: what the header
    says, for the cross-check with the summary table and for spotting files no recording claims.
    """

    path: Path
    patient_id: str
    sample_rate: int
    recordings: list[_RecordingLine] = field(default_factory=list)
    location_codes: list[str] = field(default_factory=list)
    listed_files: set[str] = field(default_factory=set)
    fields: dict[str, tuple[str, int]] = field(default_factory=dict)

    def value(self, key: str) -> str | None:
        return self.fields[key][0] if key in self.fields else None

    def error(self, key: str, message: str) -> DataError:
        """A DataError pointing at the line of field `key` (or at the file when the field is absent)."""
        if key in self.fields:
            return DataError(self.path, f"line {self.fields[key][1]}: {message}")
        return DataError(self.path, message)


def _parse_first_line(path: Path, text: str) -> tuple[str, int, int]:
    fields = text.split()
    if len(fields) != 3 or not (fields[1].isdigit() and fields[2].isdigit()):
        raise DataError(path, f"line 1: expected '{{id}} {{n_recordings}} {{sample_rate}}', got {text!r}")
    if fields[0] != path.stem:
        raise DataError(path, f"line 1: patient id {fields[0]!r} differs from the file name")
    return fields[0], int(fields[1]), int(fields[2])


def _parse_recording_line(path: Path, number: int, text: str) -> _RecordingLine:
    fields = text.split()
    if len(fields) not in (3, 4):
        raise DataError(path, f"line {number}: expected 'LOC hea wav [tsv]', got {text!r}")
    if fields[0] not in LOCATIONS:
        raise DataError(path, f"line {number}: unknown location code {fields[0]!r} (expected one of {LOCATIONS})")
    tsv = fields[3] if len(fields) == 4 else None
    return _RecordingLine(number, fields[0], fields[1], fields[2], tsv)


def _read_patient_header(path: Path) -> tuple[_PatientHeader, list[DataError]]:
    """The parsed header, and one error per bad recording line (the rest of the patient stays usable)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines:
        raise DataError(path, "patient header is empty")
    patient_id, declared, sample_rate = _parse_first_line(path, lines[0].strip())
    header = _PatientHeader(path, patient_id, sample_rate)
    errors: list[DataError] = []
    for number, raw in enumerate(lines[1:], start=2):
        text = raw.strip()
        if text.startswith("#"):
            key, colon, value = text[1:].partition(":")
            if not colon:
                raise DataError(path, f"line {number}: expected '#Key: value', got {text!r}")
            header.fields[key.strip()] = (value.strip(), number)
        elif text:
            code, *names = text.split()
            header.location_codes.append(code)
            header.listed_files.update(names)
            try:
                header.recordings.append(_parse_recording_line(path, number, text))
            except DataError as error:
                errors.append(error)
    if len(header.location_codes) != declared:
        raise DataError(
            path, f"line 1 declares {declared} recordings but {len(header.location_codes)} recording lines follow"
        )
    return header, errors


def _optional_float(header: _PatientHeader, key: str) -> float | None:
    text = header.value(key)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise header.error(key, f"{key} {text!r} is not a number") from None
    return None if math.isnan(number) else number


def _optional_choice(header: _PatientHeader, key: str, allowed: Collection[str]) -> str | None:
    """The value of `key`, which must be one of `allowed`; None when the header lacks the field."""
    value = header.value(key)
    if value is not None and value not in allowed:
        raise header.error(key, f"unknown {key} value {value!r} (expected one of {tuple(allowed)})")
    return value


def _required_choice(header: _PatientHeader, key: str, allowed: Collection[str]) -> str:
    value = _optional_choice(header, key, allowed)
    if value is None:
        raise header.error(key, f"#{key} is missing")
    return value


def _patient(header: _PatientHeader) -> Patient:
    """Demographics and labels of a header; DataError for any value outside the dataset's vocabulary."""
    age = _required_choice(header, "Age", AGE_GROUPS)
    pregnancy = _optional_choice(header, "Pregnancy status", PREGNANCY)
    murmur = _required_choice(header, "Murmur", MURMURS)
    outcome = _optional_choice(header, "Outcome", OUTCOMES)
    try:
        sex = normalize_sex(header.value("Sex"))
    except ValueError as error:
        raise header.error("Sex", str(error)) from None
    return Patient(
        patient_id=header.patient_id,
        age_group=AGE_GROUPS[age],
        sex=sex,
        extra={
            "murmur": murmur.lower(),
            "outcome": outcome.lower() if outcome else None,
            "height_cm": _optional_float(header, "Height"),
            "weight_kg": _optional_float(header, "Weight"),
            "pregnant": PREGNANCY[pregnancy] if pregnancy is not None else None,
        },
    )


def _parse_segment(text: str) -> tuple[float, float, int] | None:
    """``start end state`` as numbers, or None when the line is not three finite numbers."""
    fields = text.split()
    if len(fields) != 3:
        return None
    try:
        start, end, state = float(fields[0]), float(fields[1]), int(fields[2])
    except ValueError:
        return None
    return (start, end, state) if math.isfinite(start) and math.isfinite(end) else None


@dataclass
class _Quirks:
    """Real-release irregularities accepted while reading, noted once per dataset."""

    zero_length: list[str] = field(default_factory=list)  # "file line N" of each start == end segment
    crlf: list[str] = field(default_factory=list)  # segmentation files with CRLF line endings

    def notes(self) -> list[str]:
        notes = []
        if self.zero_length:
            notes.append(f"{len(self.zero_length)} zero-length segment(s) (start = end, a quirk of the release) "
                         f"accepted: {', '.join(self.zero_length)}")
        if self.crlf:
            notes.append(f"{len(self.crlf)} segmentation file(s) with CRLF line endings read as usual: "
                         f"{', '.join(self.crlf)}")
        return notes


def _check_segmentation(path: Path, quirks: _Quirks) -> None:
    """Each line must be ``start end state`` with start <= end and state in 0..4; a zero-length
    segment (start = end) and CRLF endings are recorded in `quirks`."""
    data = path.read_bytes()
    lines = data.decode("ascii", errors="replace").splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(path, "segmentation file is empty")
    zero_length = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        segment = _parse_segment(text)
        if segment is None:
            raise DataError(path, f"line {number}: expected 'start end state' numbers, got {text!r}")
        start, end, state = segment
        if end < start:
            raise DataError(path, f"line {number}: segment end {end} is before its start {start}")
        if state not in SEGMENT_STATES:
            raise DataError(path, f"line {number}: state {state} is not in 0..4")
        if end == start:
            zero_length.append(f"{path.name} line {number}")
    # Recorded only once the whole file passed, so a skipped file adds no quirk.
    quirks.zero_length += zero_length
    if b"\r\n" in data:
        quirks.crlf.append(path.name)


def _listed_file(directory: Path, header: _PatientHeader, line: _RecordingLine, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise DataError(path, f"listed in {header.path.name} line {line.line} but missing")
    return path


def _read_recording(directory: Path, header: _PatientHeader, line: _RecordingLine, quirks: _Quirks) -> Recording:
    wav = _listed_file(directory, header, line, line.wav)
    wfdb = read_wfdb_header(_listed_file(directory, header, line, line.hea))
    info = probe_against_header(wfdb, wav)
    if info.sample_rate != header.sample_rate:
        raise DataError(
            wav, f"sample rate {info.sample_rate} Hz differs from the {header.sample_rate} Hz in {header.path.name}"
        )
    segmentation = _listed_file(directory, header, line, line.tsv) if line.tsv else None
    if segmentation is not None:
        _check_segmentation(segmentation, quirks)
    return Recording(
        dataset=DATASET,
        recording_id=line.recording_id,
        patient_id=header.patient_id,
        audio_path=wav,
        sample_rate=info.sample_rate,
        num_frames=info.num_frames,
        num_channels=info.num_channels,
        location=line.location,
        device=DEVICE,
        source=header.value("Campaign") or UNKNOWN,
        extra={"segmentation_path": segmentation},
    )


def _read_summary(path: Path) -> _Summary:
    """training_data.csv, which must have the columns the cross-check compares."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or ())
        locations = [name for name in LOCATION_COLUMNS if name in columns]
        missing = [name for name in SUMMARY_COLUMNS if name not in columns] + ([] if locations else ["Locations"])
        if missing:
            raise DataError(path, f"missing columns: {missing}")
        rows: dict[str, dict[str, str]] = {}
        for row in reader:
            patient_id = row["Patient ID"].strip()
            if patient_id in rows:
                raise DataError(path, f"line {reader.line_num}: patient {patient_id} is listed twice")
            rows[patient_id] = {key: (value or "").strip() for key, value in row.items() if key is not None}
    return _Summary(path, rows, locations[0])


def _same(left: str | None, right: str | None) -> bool:
    """Equal, counting every spelling of a missing value as the same."""
    return left == right or (left in MISSING_VALUES and right in MISSING_VALUES)


def _check_summary(summary: _Summary, header: _PatientHeader) -> None:
    """The CSV row of a patient must agree with its header on locations, age, sex, murmur and outcome."""
    row = summary.rows[header.patient_id]
    pairs = {
        "locations": (
            "+".join(sorted(row[summary.locations_column].split("+"))),
            "+".join(sorted(header.location_codes)),
        ),
        **{key: (row[key], header.value(key)) for key in ("Age", "Sex", "Murmur")},
    }
    # Outcome exists only in later releases; compare it where both sides have it.
    if "Outcome" in row and header.value("Outcome") is not None:
        pairs["Outcome"] = (row["Outcome"], header.value("Outcome"))
    for key, (found, expected) in pairs.items():
        if not _same(found, expected):
            raise DataError(
                summary.path,
                f"patient {header.patient_id}: {key} {found!r} disagrees with {expected!r} in {header.path.name}",
            )


@dataclass(frozen=True)
class _Roster:
    """The patients to read and the file that lists them; `path` None = every patient header found."""

    patient_ids: list[str]
    path: Path | None = None
    entry: str = "row"  # what the listing has per patient, for messages

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "the patient headers"


def _header_ids(directory: Path) -> set[str]:
    """Patients with a header file: ``{id}.txt`` where the id is a number (LICENSE.txt is not one)."""
    return {path.stem for path in directory.glob("*.txt") if PATIENT_ID.fullmatch(path.stem)}


def _records_ids(path: Path) -> list[str]:
    """Patient ids of a PhysioNet RECORDS file: one record per line (``[training_data/]50782_AV_1``)."""
    names = (Path(line.strip()).name for line in path.read_text(encoding="utf-8", errors="replace").splitlines())
    return sorted({name.split("_", 1)[0] for name in names if name})


def _roster(root: Path, directory: Path, summary: _Summary | None, notes: list[str]) -> _Roster:
    """The summary table's patients; without it, those of a RECORDS file; else every header."""
    if summary is not None:
        return _Roster(sorted(summary.rows), summary.path)
    for path in (root / RECORDS_FILE, directory / RECORDS_FILE):
        if path.is_file():
            notes.append(f"patients taken from {path.relative_to(root)}")
            return _Roster(_records_ids(path), path, "record")
    return _Roster(sorted(_header_ids(directory)))


def _stray_files(directory: Path, header: _PatientHeader) -> list[str]:
    """Files named after the patient that its header does not list (e.g. a tsv without its recording)."""
    return sorted(
        path.name for path in directory.glob(f"{header.patient_id}_*") if path.name not in header.listed_files
    )


def _owner(name: str) -> str | None:
    """The patient id a file name belongs to: ``{id}.txt`` or ``{id}_...``; None for any other name."""
    if "_" in name:
        return name.split("_", 1)[0]
    return name[: -len(".txt")] if name.endswith(".txt") else None


def _orphan_files(directory: Path, patient_ids: set[str], roster: _Roster) -> list[str]:
    """Entries of training_data/ that belong to no known patient (LICENSE.txt, RECORDS, test.m, ...)."""
    return sorted(
        path.name for path in directory.iterdir()
        if _owner(path.name) not in patient_ids and path != roster.path
    )


def _read_patient(
    directory: Path, path: Path, summary: _Summary | None, skip_bad: bool, problems: list[Problem], quirks: _Quirks
) -> tuple[Patient, list[Recording], list[str]]:
    """A patient, its recordings and the stray files next to them; DataError for patient-level problems."""
    header, line_errors = _read_patient_header(path)
    patient = _patient(header)
    if summary is not None:
        _check_summary(summary, header)
    for error in line_errors:
        skip_or_raise(error, skip_bad, problems)
    recordings: list[Recording] = []
    seen: dict[str, int] = {}
    for line in header.recordings:
        try:
            first = seen.setdefault(line.recording_id, line.line)
            if first != line.line:
                raise DataError(path, f"line {line.line}: recording {line.recording_id} already listed on line {first}")
            recordings.append(_read_recording(directory, header, line, quirks))
        except DataError as error:
            skip_or_raise(error, skip_bad, problems)
    return patient, recordings, _stray_files(directory, header)


def _summary_or_note(root: Path, notes: list[str]) -> _Summary | None:
    path = root / SUMMARY_FILE
    if not path.is_file():
        notes.append(f"{SUMMARY_FILE} not found: patient headers were not cross-checked")
        return None
    return _read_summary(path)


def read_circor2022(root: Path, *, skip_bad: bool = False) -> SourceDataset:
    """Read ``root/training_data`` (and cross-check ``root/training_data.csv``) into the shared schema.

    Reads the patients training_data.csv lists (without it: those of ``RECORDS``, else every
    ``{id}.txt`` header). Raises DataError for a bad file (malformed header or segmentation, unknown
    location/age/sex/murmur, a listed file missing, header/wav mismatch, a recording listed twice, CSV
    disagreement, a listed patient without a header or a header the listing lacks); with
    ``skip_bad=True`` the bad recording, or the whole patient for patient-level problems, is left out
    and listed in ``problems`` (a patient left without recordings is dropped). Files that belong to no
    recording are ignored and noted, and so are the quirks accepted (zero-length segments, CRLF
    segmentation files). A missing training_data folder or a summary table without the needed
    columns always raises.
    """
    root = Path(root)
    directory = root / DATA_DIR
    if not directory.is_dir():
        raise DataError(directory, "CirCor training_data folder is missing")
    notes: list[str] = []
    problems: list[Problem] = []
    quirks = _Quirks()
    summary = _summary_or_note(root, notes)
    roster = _roster(root, directory, summary, notes)
    patients: dict[str, Patient] = {}
    recordings: list[Recording] = []
    for patient_id in roster.patient_ids:
        path = directory / f"{patient_id}.txt"
        try:
            if not path.is_file():
                raise DataError(roster.path or path, f"patient {patient_id} has no header file")
            patient, patient_recordings, strays = _read_patient(directory, path, summary, skip_bad, problems, quirks)
        except DataError as error:
            skip_or_raise(error, skip_bad, problems)
            continue
        notes.extend(f"{name}: not listed in {path.name}, belongs to no recording; ignored" for name in strays)
        if patient_recordings:
            patients[patient.patient_id] = patient
            recordings.extend(patient_recordings)
    headers = _header_ids(directory)
    for patient_id in sorted(headers - set(roster.patient_ids)):
        skip_or_raise(DataError(roster.path, f"patient {patient_id} has a header but no {roster.entry}"), skip_bad,
                      problems)
    notes += quirks.notes()
    known = headers | set(roster.patient_ids)
    notes.extend(f"{name}: belongs to no patient of {roster.name}; ignored"
                 for name in _orphan_files(directory, known, roster))
    return SourceDataset(DATASET, root, recordings, patients, problems, notes)


# --- tasks and the registry entry ----------------------------------------------------------------------


def murmur_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """CirCor 2022 weighted accuracy (classes absent 0, present 1, unknown 2):
    (5 TP_present + 3 TP_unknown + TP_absent) / (5 N_present + 3 N_unknown + N_absent)."""
    predicted = probs.argmax(1)
    weights = np.asarray([1.0, 5.0, 3.0])[labels]
    correct = (predicted == labels).astype(float)
    return {"auroc": auroc(probs, labels), "accuracy": float(correct.mean()),
            "weighted_accuracy": float((weights * correct).sum() / weights.sum())}


_CIRCOR = "https://physionet.org/files/circor-heart-sound/1.0.3"
_CIRCOR_TOP = "the-circor-digiscope-phonocardiogram-dataset-1.0.3"
MURMUR = ("absent", "present")
MURMUR_3CLASS = ("absent", "present", "unknown")
NORMAL_VS_ABNORMAL = ("normal", "abnormal")

SPEC = DatasetSpec(
    name=DATASET,
    description="CirCor DigiScope 2022 heart sounds (several chest locations per patient, murmur labels)",
    read=read_circor2022,
    sample_rate=2000,
    segment_seconds=4.0,
    tasks=(
        Task("murmur", MURMUR, "patient", column_labeler("murmur", MURMUR),
             "CirCor 2022: murmur present vs absent per patient ('unknown' patients left out)"),
        Task("murmur_3class", MURMUR_3CLASS, "patient", column_labeler("murmur", MURMUR_3CLASS),
             "CirCor 2022: murmur present / unknown / absent per patient (challenge weighted accuracy)",
             metric=murmur_metrics),
        Task("normal_vs_abnormal", NORMAL_VS_ABNORMAL, "recording", column_labeler("outcome", NORMAL_VS_ABNORMAL),
             "CirCor 2022 releases with an Outcome: normal vs abnormal, window scores averaged per recording"),
    ),
    default_task="murmur",
    columns=(Column("murmur", "patient"), Column("outcome", "patient")),
    # The whole-project zip is not in SHA256SUMS.txt, so the files inside it are checked instead; the
    # list is recorded at its first download and cross-checked against the archive's own copy.
    download=DatasetSource(
        name=DATASET,
        title="The CirCor DigiScope Phonocardiogram Dataset (1.0.3)",
        homepage="https://physionet.org/content/circor-heart-sound/1.0.3/",
        files=(
            RemoteFile(
                f"{_CIRCOR_TOP}.zip",
                f"https://physionet.org/static/published-projects/circor-heart-sound/{_CIRCOR_TOP}.zip",
                sums_root=_CIRCOR_TOP,
            ),
        ),
        layout=("training_data", "training_data.csv"),
        # Licence as shown on the PhysioNet project page (not re-checked offline).
        license="Open Data Commons Attribution License v1.0",
        citation=(
            "Oliveira J, Renna F, Costa P, et al. The CirCor DigiScope Phonocardiogram Dataset "
            "(version 1.0.3). PhysioNet, 2022. doi:10.13026/tshs-mw03; and Oliveira J, et al. The "
            "CirCor DigiScope Dataset: From Murmur Detection to Murmur Classification. IEEE J Biomed "
            "Health Inform. 2022;26(6):2524-2535. doi:10.1109/JBHI.2021.3137048"
        ),
        sha256sums=RemoteFile("circor2022-SHA256SUMS.txt", f"{_CIRCOR}/SHA256SUMS.txt"),
    ),
    synthesize=write_circor2022,
)
