"""Reader for the PhysioNet/Computing in Cardiology Challenge 2016 heart-sound database.

Layout: ``root/training-a`` ... ``root/training-f``, each with ``REFERENCE.csv`` (``record,1`` abnormal,
``record,-1`` normal) and per record a 2 kHz PCG ``.wav`` with its WFDB ``.hea`` (training-a also holds
ECG ``.dat`` files, which are not read). An official ``validation/`` folder copies 301 training records
and is not read.

The challenge released no subject identifiers, so every record is its own patient
(``patient_id == recording_id``): recordings of one subject may therefore land in different splits.
Each recording's ``extra["label"]`` is its REFERENCE.csv label ("normal" | "abnormal").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lungheart_cl.data.records import UNKNOWN, DataError, Patient, Problem, Recording, SourceDataset, skip_or_raise
from lungheart_cl.data.sources.catalogue import DatasetSource, RemoteFile
from lungheart_cl.data.sources.wfdb_header import probe_against_header, read_wfdb_header
from lungheart_cl.data.spec import Column, DatasetSpec
from lungheart_cl.data.synthetic.physionet2016 import write_physionet2016
from lungheart_cl.data.tasks import Task, column_labeler

DATASET = "physionet2016"
REFERENCE_FILE = "REFERENCE.csv"
# The 2016 REFERENCE.csv files only ever hold these two labels.
LABELS = {"1": "abnormal", "-1": "normal"}
SUBJECT_NOTE = (
    "PhysioNet 2016 released no subject ids: each record is its own patient, so one subject's "
    "recordings may fall on both sides of a patient-level split"
)
VALIDATION_NOTE = "validation/ was not read: it duplicates 301 training records"


@dataclass(frozen=True)
class _ReferenceRow:
    """One well-formed REFERENCE.csv line (the label is checked later, per record)."""

    path: Path
    line: int
    record: str
    label: str


def _training_folders(root: Path) -> list[Path]:
    folders = sorted(path for path in root.iterdir() if path.is_dir() and path.name.startswith("training-"))
    if not folders:
        raise DataError(root, "no training-* folders (expected the PhysioNet 2016 layout)")
    return folders


def _read_reference(path: Path) -> tuple[list[_ReferenceRow], list[DataError]]:
    """Rows of a REFERENCE.csv, and one error per malformed line."""
    if not path.is_file():
        raise DataError(path, "REFERENCE.csv is missing")
    rows: list[_ReferenceRow] = []
    errors: list[DataError] = []
    for number, text in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), start=1):
        fields = [field.strip() for field in text.split(",")]
        if fields == [""]:
            continue
        if len(fields) != 2 or not all(fields):
            errors.append(DataError(path, f"line {number}: expected 'record,label', got {text!r}"))
            continue
        rows.append(_ReferenceRow(path, number, fields[0], fields[1]))
    return rows, errors


def _label(row: _ReferenceRow) -> str:
    if row.label not in LABELS:
        raise DataError(
            row.path, f"line {row.line}: label {row.label!r} of {row.record} is not 1 (abnormal) or -1 (normal)"
        )
    return LABELS[row.label]


def _read_record(folder: Path, row: _ReferenceRow) -> Recording:
    label = _label(row)
    wav = folder / f"{row.record}.wav"
    if not wav.is_file():
        raise DataError(wav, f"listed in {folder.name}/{REFERENCE_FILE} line {row.line} but missing")
    info = probe_against_header(read_wfdb_header(folder / f"{row.record}.hea"), wav)
    return Recording(
        dataset=DATASET,
        recording_id=row.record,
        patient_id=row.record,
        audio_path=wav,
        sample_rate=info.sample_rate,
        num_frames=info.num_frames,
        num_channels=info.num_channels,
        location=UNKNOWN,
        # Each source database used one acquisition setup, so the folder is the best device name.
        device=folder.name,
        source=folder.name,
        extra={"label": label},
    )


def _read_folder(
    folder: Path, first_seen: dict[str, _ReferenceRow], skip_bad: bool, problems: list[Problem]
) -> list[Recording]:
    """Recordings of one training-* folder; `first_seen` spans folders to catch duplicated records."""
    rows, errors = _read_reference(folder / REFERENCE_FILE)
    for error in errors:
        skip_or_raise(error, skip_bad, problems)
    recordings: list[Recording] = []
    for row in rows:
        try:
            earlier = first_seen.setdefault(row.record, row)
            if earlier is not row:
                raise DataError(
                    row.path,
                    f"line {row.line}: record {row.record} is duplicated "
                    f"(already in {earlier.path.parent.name}/{REFERENCE_FILE} line {earlier.line})",
                )
            recordings.append(_read_record(folder, row))
        except DataError as error:
            skip_or_raise(error, skip_bad, problems)
    listed = {row.record for row in rows}
    for wav in sorted(folder.glob("*.wav")):
        if wav.stem not in listed:
            skip_or_raise(DataError(wav, f"has no row in {folder.name}/{REFERENCE_FILE}"), skip_bad, problems)
    return recordings


def read_physionet2016(root: Path, *, skip_bad: bool = False) -> SourceDataset:
    """Read every training-* folder under `root` into the shared schema.

    Raises DataError for a bad file (header/wav mismatch, missing or unlisted wav, unknown label,
    malformed or duplicated REFERENCE.csv line); with ``skip_bad=True`` that record is left out and
    listed in ``problems`` instead. A missing REFERENCE.csv always raises.
    """
    root = Path(root)
    problems: list[Problem] = []
    first_seen: dict[str, _ReferenceRow] = {}
    recordings = [
        recording
        for folder in _training_folders(root)
        for recording in _read_folder(folder, first_seen, skip_bad, problems)
    ]
    notes = [SUBJECT_NOTE]
    if (root / "validation").is_dir():
        notes.append(VALIDATION_NOTE)
    patients = {recording.patient_id: Patient(patient_id=recording.patient_id) for recording in recordings}
    return SourceDataset(DATASET, root, recordings, patients, problems, notes)


_PN2016 = "https://physionet.org/files/challenge-2016/1.0.0"
NORMAL_VS_ABNORMAL = ("normal", "abnormal")

SPEC = DatasetSpec(
    name=DATASET,
    description="PhysioNet/CinC Challenge 2016 heart sounds (normal vs abnormal recordings)",
    read=read_physionet2016,
    sample_rate=2000,
    segment_seconds=4.0,
    tasks=(Task("normal_vs_abnormal", NORMAL_VS_ABNORMAL, "recording",
                column_labeler("recording_label", NORMAL_VS_ABNORMAL),
                "PhysioNet 2016: normal vs abnormal heart sound, window scores averaged per recording"),),
    default_task="normal_vs_abnormal",
    columns=(Column("recording_label", "recording", key="label"),),
    # training.zip (~170 MB, training-a..f) is a file of the project, so SHA256SUMS.txt lists it.
    # The list itself is not pinned here (its digest was not available offline): it is recorded at
    # its first download.
    download=DatasetSource(
        name=DATASET,
        title="PhysioNet/CinC Challenge 2016: Classification of Heart Sound Recordings (1.0.0)",
        homepage="https://physionet.org/content/challenge-2016/1.0.0/",
        files=(RemoteFile("training.zip", f"{_PN2016}/training.zip", sums_path="training.zip"),),
        layout=tuple(f"training-{letter}/REFERENCE.csv" for letter in "abcdef"),
        # Licence as shown on the PhysioNet project page (not re-checked offline).
        license="Open Data Commons Attribution License v1.0",
        citation=(
            "Liu C, Springer D, Li Q, et al. An open access database for the evaluation of heart "
            "sound algorithms. Physiol Meas. 2016;37(12):2181-2213. doi:10.1088/0967-3334/37/12/2181; "
            "and the standard PhysioNet citation (Goldberger et al., Circulation 2000;101(23):e215-e220)"
        ),
        sha256sums=RemoteFile("physionet2016-SHA256SUMS.txt", f"{_PN2016}/SHA256SUMS.txt"),
    ),
    synthesize=write_physionet2016,
)
