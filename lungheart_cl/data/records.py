"""The one schema every dataset reader produces: patients, recordings, annotated events, problems.

Readers turn an official layout into a `SourceDataset`; everything downstream (cache, splits,
pair policies, tasks) reads only these classes, never the official files. The fields are the ones
generic code uses (patient, recording, location, device, source, age group, sex, times); what only
one dataset knows (a diagnosis, a murmur, crackle flags) sits in the ``extra`` mapping of a patient,
recording or event, and reaches the manifest through the columns its `DatasetSpec` declares.
Extra values are plain data (str, int, float, bool, None, Path), so the cache key hashes them as JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lungheart_cl.errors import UserError

AGE_GROUPS = ("neonate", "infant", "child", "adolescent", "adult", "unknown")
SEXES = ("female", "male", "unknown")
UNKNOWN = "unknown"


def is_unknown(values) -> np.ndarray:
    """Per value: whether it is missing ("unknown", empty, or NaN in a float column), as metadata never equal
    to anything, not even another unknown (see `datasets.metadata_codes`)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return np.isnan(values)
    text = np.char.lower(np.char.strip(values.astype(str)))
    return (text == UNKNOWN) | (text == "")


class DataError(UserError, ValueError):
    """A problem with one input file, always naming the file."""

    def __init__(self, path: Path | str, message: str):
        self.path = Path(path)
        self.message = message
        super().__init__(f"{path}: {message}")

    def __reduce__(self):
        # Raised in cache-build worker processes: it must unpickle in the parent (the default passes
        # only the formatted text back to __init__, which breaks the whole pool).
        return type(self), (self.path, self.message)


@dataclass(frozen=True)
class Problem:
    """A file that was skipped (``skip_bad=True``) and why; shown by `data inspect` and cache reports."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    @classmethod
    def from_error(cls, error: DataError) -> Problem:
        return cls(error.path, error.message)


def skip_or_raise(error: DataError, skip_bad: bool, problems: list[Problem]) -> None:
    """Raise `error`, or with ``skip_bad`` keep it as a `Problem` so that reading goes on."""
    if not skip_bad:
        raise error
    problems.append(Problem.from_error(error))


def age_group_from_years(age_years: float | None) -> str:
    """Age bands as CirCor defines them (neonate < 28 days, infant < 1 y, child < 12 y,
    adolescent < 18 y), so ICBHI ages in years and CirCor's groups share one vocabulary."""
    if age_years is None or math.isnan(age_years):
        return UNKNOWN
    if age_years < 28 / 365.25:
        return "neonate"
    if age_years < 1:
        return "infant"
    if age_years < 12:
        return "child"
    if age_years < 18:
        return "adolescent"
    return "adult"


def normalize_sex(value: str | None) -> str:
    """'F'/'Female'/'f' -> 'female', 'M'/'Male' -> 'male', anything missing -> 'unknown'."""
    text = (value or "").strip().lower()
    if text in ("f", "female"):
        return "female"
    if text in ("m", "male"):
        return "male"
    if text in ("", "na", "nan", "none", "unknown"):
        return UNKNOWN
    raise ValueError(f"unknown sex value {value!r}")


Extra = Mapping[str, Any]


@dataclass(frozen=True)
class Patient:
    """Who was recorded. Fields a dataset does not provide stay None / 'unknown'; ``extra`` holds the
    dataset's own (ICBHI: diagnosis, bmi, ...; CirCor: murmur, outcome, height_cm, ...)."""

    patient_id: str
    age_years: float | None = None
    age_group: str = UNKNOWN
    sex: str = UNKNOWN
    extra: Extra = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.age_group not in AGE_GROUPS:
            raise ValueError(f"patient {self.patient_id}: age group {self.age_group!r} not in {AGE_GROUPS}")
        if self.sex not in SEXES:
            raise ValueError(f"patient {self.patient_id}: sex {self.sex!r} not in {SEXES}")


@dataclass(frozen=True)
class Event:
    """An annotated span of a recording (an ICBHI respiratory cycle); ``extra`` holds its own labels
    (ICBHI: crackle, wheeze). A recording with events is cut into one segment per event."""

    start_s: float
    end_s: float
    extra: Extra = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Recording:
    """One audio file and everything known about it."""

    dataset: str  # the registered dataset name, e.g. "icbhi"
    recording_id: str  # unique within the dataset, e.g. "101_1b1_Al_sc_Meditron", "a0001", "50782_AV_1"
    patient_id: str
    audio_path: Path
    sample_rate: int
    num_frames: int
    num_channels: int = 1
    location: str = UNKNOWN  # ICBHI: Tc Al Ar Pl Pr Ll Lr; CirCor: AV PV TV MV Phc
    device: str = UNKNOWN  # stethoscope model, or the source database where that is all that is known
    source: str = UNKNOWN  # sub-database: PhysioNet "training-a", CirCor campaign, ICBHI "ICBHI_final_database"
    events: tuple[Event, ...] = ()  # annotated spans (ICBHI respiratory cycles); empty: cut into windows
    official_split: str | None = None  # a dataset's own train/test split, where it publishes one
    extra: Extra = field(default_factory=dict)  # e.g. PhysioNet label, ICBHI acquisition mode

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate


@dataclass
class SourceDataset:
    """What a reader returns: all recordings and patients of one dataset root, plus what it noticed."""

    name: str
    root: Path
    recordings: list[Recording]
    patients: dict[str, Patient]
    problems: list[Problem] = field(default_factory=list)  # skipped files (skip_bad=True)
    notes: list[str] = field(default_factory=list)  # documented quirks handled (not errors)

    def __post_init__(self) -> None:
        missing = sorted({r.patient_id for r in self.recordings} - set(self.patients))
        if missing:
            raise ValueError(f"{self.root}: recordings refer to patients without a Patient entry: {missing[:5]}")
        counts = Counter(r.recording_id for r in self.recordings)
        duplicated = sorted(i for i, n in counts.items() if n > 1)
        if duplicated:
            raise DataError(self.root, f"duplicated recording ids: {duplicated[:5]}")

    def patient(self, recording: Recording) -> Patient:
        return self.patients[recording.patient_id]
