"""ICBHI 2017 Respiratory Sound Database reader: official release layout and the Kaggle re-packaging.

Official layout (under ``root``)::

    ICBHI_final_database/*.wav + *.txt            recordings with their respiratory-cycle annotations
    ICBHI_Challenge_demographic_information.txt   patient, age, sex, adult BMI, child weight, child height
    ICBHI_Challenge_diagnosis.txt                 patient<TAB>diagnosis
    ICBHI_challenge_train_test.txt                recording<TAB>train|test (optional)

Kaggle layout (``vbookshelf/respiratory-sound-database``; the recordings folder may sit up to two levels
down, the metadata files in it or in any folder above it, up to ``root``)::

    audio_and_txt_files/*.wav + *.txt
    demographic_info.txt                          same columns, space separated
    patient_diagnosis.csv                         patient,diagnosis (no header)

Only a ``.wav`` with its ``.txt`` beside it is a recording; annotation-only folders (the official
``annotations/``) are read with `read_cycles`, not by `read_icbhi`.

Extras: patients carry ``diagnosis``, ``bmi``, ``weight_kg``, ``height_cm``; recordings
``acquisition_mode``; cycles ``crackle`` and ``wheeze``. `SPEC` declares the dataset for the registry.

Long on purpose: a dataset is one module of the registry, and both layouts' quirks are checked where they are read.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungheart_cl.data.audio import probe_audio
from lungheart_cl.data.records import (
    DataError,
    Event,
    Patient,
    Problem,
    Recording,
    SourceDataset,
    age_group_from_years,
    normalize_sex,
    skip_or_raise,
)
from lungheart_cl.data.sources.catalogue import DatasetSource, RemoteFile
from lungheart_cl.data.spec import Column, DatasetSpec
from lungheart_cl.data.synthetic.icbhi import write_icbhi
from lungheart_cl.data.tasks import Manifest, Task
from lungheart_cl.metrics import auroc

DATASET = "icbhi"
LOCATIONS = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
ACQUISITION_MODES = ("sc", "mc")
DEVICES = ("Meditron", "LittC2SE", "Litt3200", "AKGC417L")
SPLITS = ("train", "test")
SPLIT_FILE = "ICBHI_challenge_train_test.txt"
MISSING = "NA"
# Annotation times are rounded (mostly to 1 ms); an end this close past the audio end is rounding, so
# it is clamped to the end rather than rejected. 10 ms is far below any respiratory cycle's length.
END_TOLERANCE_S = 0.01
# Parent folders of the recordings folder searched below root: root itself, and two levels down for
# Kaggle's `Respiratory_Sound_Database/Respiratory_Sound_Database/audio_and_txt_files`.
MAX_NESTING = 2


@dataclass(frozen=True)
class RecordingName:
    """The five parts of an ICBHI file name ``{patient}_{index}_{location}_{mode}_{device}``."""

    patient_id: str
    index: str
    location: str
    mode: str
    device: str


@dataclass(frozen=True)
class _LayoutSpec:
    name: str
    audio_dir: str
    demographics: str
    diagnosis: str
    diagnosis_sep: str | None  # None: any whitespace


OFFICIAL = _LayoutSpec(
    name="official",
    audio_dir="ICBHI_final_database",
    demographics="ICBHI_Challenge_demographic_information.txt",
    diagnosis="ICBHI_Challenge_diagnosis.txt",
    diagnosis_sep=None,
)
KAGGLE = _LayoutSpec("Kaggle", "audio_and_txt_files", "demographic_info.txt", "patient_diagnosis.csv", ",")


@dataclass(frozen=True)
class _Layout:
    spec: _LayoutSpec
    audio_dir: Path
    demographics: Path
    diagnosis: Path
    split: Path | None


@dataclass(frozen=True)
class _Row:
    line: int
    fields: tuple[str, ...]


@dataclass(frozen=True)
class _Metadata:
    demographics_path: Path
    demographics: dict[str, _Row]
    diagnosis_path: Path
    diagnoses: dict[str, _Row]


@dataclass(frozen=True)
class _OfficialSplit:
    path: Path
    rows: dict[str, _Row]

    def lookup(self, recording_id: str, present: set[str]) -> tuple[str, str | None]:
        """The split of a recording, and a note when it was matched on its name without the device."""
        row = self.rows.get(recording_id)
        if row is not None:
            return row.fields[1], None
        # The official file misnames at least one recording's device (226_1b1_Pl_sc_LittC2SE).
        stem = _without_device(recording_id)
        candidates = [name for name in self.rows if _without_device(name) == stem and name not in present]
        if len(candidates) != 1:
            raise DataError(
                self.path,
                f"recording {recording_id} is not listed, and {len(candidates)} entries match it without the device",
            )
        split = self.rows[candidates[0]].fields[1]
        note = (
            f"{self.path.name}: recording {recording_id} is listed as {candidates[0]} (line "
            f"{self.rows[candidates[0]].line}); matched on the name without the device, split {split!r}"
        )
        return split, note

    def patients_on_both_sides(self) -> list[str]:
        sides: dict[str, set[str]] = {}
        for name, row in self.rows.items():
            sides.setdefault(name.split("_", 1)[0], set()).add(row.fields[1])
        return sorted(patient for patient, seen in sides.items() if len(seen) > 1)


@dataclass(frozen=True)
class _ReadRecording:
    recording: Recording
    patient: Patient
    overruns_s: tuple[float, ...]  # how far clamped cycle ends ran past the audio
    split_note: str | None
    encoding: str  # PCM subtype, e.g. PCM_16 / PCM_24


def parse_recording_name(stem: str, *, path: Path | None = None) -> RecordingName:
    """Split an ICBHI file stem into its parts; a malformed name raises DataError naming `path` (or the stem)."""
    where = path if path is not None else stem
    parts = stem.split("_")
    if len(parts) != 5:
        raise DataError(where, f"file name {stem!r} does not have the 5 parts patient_index_location_mode_device")
    patient, index, location, mode, device = parts
    if not patient.isdigit():
        raise DataError(where, f"patient number {patient!r} in the file name is not a number")
    if not index:
        raise DataError(where, "recording index in the file name is empty")
    for value, allowed, what in (
        (location, LOCATIONS, "chest location"),
        (mode, ACQUISITION_MODES, "acquisition mode"),
        (device, DEVICES, "device"),
    ):
        if value not in allowed:
            raise DataError(where, f"unknown {what} {value!r} in the file name (expected one of {', '.join(allowed)})")
    return RecordingName(patient, index, location, mode, device)


def read_cycles(txt_path: Path, duration_s: float | None = None) -> tuple[Event, ...]:
    """Respiratory cycles of one annotation file (``start end crackle wheeze`` per line).

    With `duration_s`, ends up to `END_TOLERANCE_S` past the audio are clamped to it and later ends
    raise DataError; every malformed line raises DataError naming the file and the line.
    """
    events, _ = _fit_to_duration(Path(txt_path), _parse_cycles(Path(txt_path)), duration_s)
    return events


def read_icbhi(root: Path, *, skip_bad: bool = False) -> SourceDataset:
    """Read an ICBHI root (official or Kaggle layout) into the shared schema.

    A bad recording raises DataError naming the file; with ``skip_bad=True`` it is left out and listed
    in ``problems``. Quirks of the real data that are handled are described in ``notes``.
    """
    root = Path(root)
    layout = _find_layout(root)
    metadata = _read_metadata(layout)
    split = _read_split(layout.split) if layout.split is not None else None
    wavs = _find_wavs(layout.audio_dir)
    present = set(wavs)
    notes = [f"layout: {layout.spec.name} ({layout.audio_dir.relative_to(root)})"]
    notes += _crlf_notes([layout.demographics, layout.diagnosis, layout.split])
    notes += _split_notes(split)

    problems: list[Problem] = []
    read: list[_ReadRecording] = []
    for recording_id, paths in sorted(wavs.items()):
        for path in paths:
            try:
                if len(paths) > 1:
                    copies = ", ".join(str(copy) for copy in paths)
                    raise DataError(path, f"recording {recording_id} found {len(paths)} times: {copies}")
                read.append(_read_recording(path, metadata, split, present))
            except DataError as error:
                skip_or_raise(error, skip_bad, problems)

    patients = {item.patient.patient_id: item.patient for item in read}
    notes += _notes_on_read(read, patients)
    notes += _orphan_annotation_notes(layout.audio_dir, wavs)
    return SourceDataset(
        name=DATASET,
        root=root,
        recordings=[item.recording for item in read],
        patients=dict(sorted(patients.items())),
        problems=problems,
        notes=notes,
    )


def _read_recording(wav: Path, metadata: _Metadata, split: _OfficialSplit | None, present: set[str]) -> _ReadRecording:
    name = parse_recording_name(wav.stem, path=wav)
    txt = wav.with_suffix(".txt")
    if not txt.is_file():
        raise DataError(wav, f"no annotation file {txt.name} beside the audio")
    patient = _patient(name.patient_id, wav.stem, metadata)
    info = probe_audio(wav)
    duration_s = info.num_frames / info.sample_rate
    events, overruns = _fit_to_duration(txt, _parse_cycles(txt), duration_s)
    official_split, split_note = split.lookup(wav.stem, present) if split is not None else (None, None)
    recording = Recording(
        dataset=DATASET,
        recording_id=wav.stem,
        patient_id=name.patient_id,
        audio_path=wav,
        sample_rate=info.sample_rate,
        num_frames=info.num_frames,
        num_channels=info.num_channels,
        location=name.location,
        device=name.device,
        source=wav.parent.name,
        events=events,
        official_split=official_split,
        extra={"acquisition_mode": name.mode},
    )
    return _ReadRecording(recording, patient, overruns, split_note, info.subtype)


# --- annotation files ------------------------------------------------------------------------------


def _parse_cycles(txt: Path) -> list[tuple[int, Event]]:
    """Cycles with their line numbers, each line validated on its own."""
    cycles = [(number, _parse_cycle_line(txt, number, line)) for number, line in _numbered_lines(txt)]
    if not cycles:
        raise DataError(txt, "annotation file lists no respiratory cycles")
    return cycles


def _parse_cycle_line(txt: Path, number: int, line: str) -> Event:
    fields = line.split()
    if len(fields) != 4:
        raise DataError(txt, f"line {number}: expected 4 fields (start end crackle wheeze), found {len(fields)}")
    start, end = (_finite_float(txt, number, value, what) for value, what in zip(fields[:2], ("start", "end")))
    if start < 0:
        raise DataError(txt, f"line {number}: start {start} s is negative")
    if end <= start:
        raise DataError(txt, f"line {number}: end {end} s is not after start {start} s")
    crackle, wheeze = (_flag(txt, number, value, what) for value, what in zip(fields[2:], ("crackle", "wheeze")))
    return Event(start, end, {"crackle": crackle, "wheeze": wheeze})


def _finite_float(txt: Path, number: int, value: str, what: str) -> float:
    try:
        parsed = float(value)
    except ValueError:
        raise DataError(txt, f"line {number}: {what} time {value!r} is not a number") from None
    if not math.isfinite(parsed):
        raise DataError(txt, f"line {number}: {what} time {value!r} is not finite")
    return parsed


def _flag(txt: Path, number: int, value: str, what: str) -> bool:
    if value not in ("0", "1"):
        raise DataError(txt, f"line {number}: {what} flag {value!r} is not 0 or 1")
    return value == "1"


def _fit_to_duration(
    txt: Path, cycles: list[tuple[int, Event]], duration_s: float | None
) -> tuple[tuple[Event, ...], tuple[float, ...]]:
    """Clamp ends within `END_TOLERANCE_S` past the audio end; returns the events and the clamped overruns."""
    if duration_s is None:
        return tuple(event for _, event in cycles), ()
    events: list[Event] = []
    overruns: list[float] = []
    for number, event in cycles:
        overrun = event.end_s - duration_s
        if overrun > END_TOLERANCE_S:
            raise DataError(
                txt, f"line {number}: cycle ends at {event.end_s} s, past the end of the {duration_s:.4f} s recording"
            )
        if overrun > 0:
            if event.start_s >= duration_s:
                raise DataError(txt, f"line {number}: cycle starts at {event.start_s} s, at or past the recording end")
            event = Event(event.start_s, duration_s, event.extra)
            overruns.append(overrun)
        events.append(event)
    return tuple(events), tuple(overruns)


# --- layout and metadata tables --------------------------------------------------------------------


def _find_layout(root: Path) -> _Layout:
    found = [(spec, folder) for spec in (OFFICIAL, KAGGLE) for folder in _find_folders(root, spec.audio_dir)]
    if not found:
        raise DataError(
            root,
            f"no ICBHI recordings folder: expected {OFFICIAL.audio_dir}/ (official) or {KAGGLE.audio_dir}/ "
            f"(Kaggle) at most {MAX_NESTING} levels down",
        )
    if len(found) > 1:
        listed = ", ".join(str(folder.relative_to(root)) for _, folder in found)
        raise DataError(root, f"several ICBHI recordings folders ({listed}); point the root at one of them")
    spec, audio_dir = found[0]
    search = _folders_up_to(audio_dir.parent, root)
    return _Layout(
        spec=spec,
        audio_dir=audio_dir,
        demographics=_require_file(search, spec.demographics, root),
        diagnosis=_require_file(search, spec.diagnosis, root),
        split=next((folder / SPLIT_FILE for folder in search if (folder / SPLIT_FILE).is_file()), None),
    )


def _find_folders(root: Path, name: str) -> list[Path]:
    """Folders called `name` at the shallowest depth (up to `MAX_NESTING` below root) holding one."""
    level = [root]
    for _ in range(MAX_NESTING + 1):
        matches = [parent / name for parent in level if (parent / name).is_dir()]
        if matches:
            return matches
        level = sorted(child for parent in level for child in parent.iterdir() if child.is_dir())
    return []


def _folders_up_to(start: Path, root: Path) -> list[Path]:
    """`start` and its parents up to `root`, nearest first: where metadata files may be."""
    folders = [start]
    while folders[-1] != root and folders[-1].parent != folders[-1]:
        folders.append(folders[-1].parent)
    return folders


def _require_file(search: list[Path], name: str, root: Path) -> Path:
    for folder in search:
        if (folder / name).is_file():
            return folder / name
    raise DataError(root, f"metadata file {name} not found beside the recordings folder or above it")


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(path, f"not a text file ({error})") from None
    except OSError as error:
        raise DataError(path, f"cannot read ({error.strerror})") from None


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; splitlines() takes CRLF and LF alike."""
    return [(number, line) for number, line in enumerate(_read_text(path).splitlines(), 1) if line.strip()]


def _read_table(path: Path, num_fields: int, sep: str | None, what: str) -> dict[str, _Row]:
    """Rows keyed by their first field, checked for field count and repeated keys."""
    rows: dict[str, _Row] = {}
    for number, line in _numbered_lines(path):
        fields = tuple(field.strip() for field in line.split(sep))
        if len(fields) != num_fields:
            raise DataError(path, f"line {number}: expected {num_fields} fields, found {len(fields)}")
        if fields[0] in rows:
            first = rows[fields[0]].line
            raise DataError(path, f"line {number}: {what} {fields[0]} listed again (first on line {first})")
        rows[fields[0]] = _Row(number, fields)
    return rows


def _read_metadata(layout: _Layout) -> _Metadata:
    return _Metadata(
        demographics_path=layout.demographics,
        demographics=_read_table(layout.demographics, 6, None, "patient"),
        diagnosis_path=layout.diagnosis,
        diagnoses=_read_table(layout.diagnosis, 2, layout.spec.diagnosis_sep, "patient"),
    )


def _read_split(path: Path) -> _OfficialSplit:
    rows = _read_table(path, 2, None, "recording")
    for name, row in rows.items():
        if row.fields[1] not in SPLITS:
            raise DataError(path, f"line {row.line}: split {row.fields[1]!r} of {name} is not train or test")
    return _OfficialSplit(path, rows)


def _patient(patient_id: str, recording_id: str, metadata: _Metadata) -> Patient:
    """The Patient of one recording; a missing or malformed row raises DataError naming the metadata file."""
    row = metadata.demographics.get(patient_id)
    if row is None:
        raise DataError(metadata.demographics_path, f"no row for patient {patient_id} (recording {recording_id})")
    diagnosis = metadata.diagnoses.get(patient_id)
    if diagnosis is None:
        raise DataError(metadata.diagnosis_path, f"no row for patient {patient_id} (recording {recording_id})")
    path = metadata.demographics_path
    age, bmi, weight, height = (
        _optional_float(path, row.line, row.fields[index], what)
        for index, what in ((1, "age"), (3, "adult BMI"), (4, "child weight"), (5, "child height"))
    )
    try:
        sex = normalize_sex(None if row.fields[2] == MISSING else row.fields[2])
    except ValueError:
        raise DataError(path, f"line {row.line}: sex {row.fields[2]!r} is not F, M or NA") from None
    return Patient(
        patient_id=patient_id,
        age_years=age,
        age_group=age_group_from_years(age),
        sex=sex,
        extra={"diagnosis": diagnosis.fields[1], "bmi": bmi, "weight_kg": weight, "height_cm": height},
    )


def _optional_float(path: Path, number: int, value: str, what: str) -> float | None:
    if value == MISSING:
        return None
    try:
        parsed = float(value)
    except ValueError:
        raise DataError(path, f"line {number}: {what} {value!r} is not a number or NA") from None
    if not math.isfinite(parsed) or parsed < 0:
        raise DataError(path, f"line {number}: {what} {value!r} is not a non-negative number")
    return parsed


def _find_wavs(audio_dir: Path) -> dict[str, list[Path]]:
    """Every .wav under the recordings folder (any depth, any case), grouped by recording id."""
    wavs: dict[str, list[Path]] = {}
    for path in sorted(audio_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() == ".wav":
            wavs.setdefault(path.stem, []).append(path)
    return wavs


def _without_device(recording_id: str) -> str:
    return recording_id.rsplit("_", 1)[0]


# --- notes -------------------------------------------------------------------------------------------


def _crlf_notes(paths: list[Path | None]) -> list[str]:
    present = [path for path in paths if path is not None]
    return [f"{path.name}: CRLF line endings (read as LF)" for path in present if "\r\n" in _read_text(path)]


def _split_notes(split: _OfficialSplit | None) -> list[str]:
    if split is None:
        return [f"no official split file ({SPLIT_FILE}) found: official_split is None for every recording"]
    both = split.patients_on_both_sides()
    if not both:
        return []
    return [
        f"{split.path.name}: patients {', '.join(both)} have recordings in both train and test; "
        "official_split is kept per recording, so it is not a patient-disjoint split"
    ]


def _notes_on_read(read: list[_ReadRecording], patients: dict[str, Patient]) -> list[str]:
    notes = [item.split_note for item in read if item.split_note is not None]
    unknown = sorted(pid for pid, p in patients.items() if p.age_years is None or p.sex == "unknown")
    if unknown:
        notes.append(f"demographics NA: age and/or sex unknown for patient(s) {', '.join(unknown)}")
    clamped = [(item.recording.recording_id, max(item.overruns_s)) for item in read if item.overruns_s]
    if clamped:
        listed = ", ".join(f"{rid} ({overrun * 1000:.1f} ms)" for rid, overrun in clamped)
        tolerance_ms = END_TOLERANCE_S * 1000
        notes.append(f"cycle ends past the audio end (tolerance {tolerance_ms:.0f} ms) clamped to it: {listed}")
    rates = Counter(item.recording.sample_rate for item in read)
    encodings = Counter(item.encoding for item in read)
    if read:
        notes.append("sample rates: " + ", ".join(f"{rate} Hz x{n}" for rate, n in sorted(rates.items())))
        notes.append("encodings: " + ", ".join(f"{subtype} x{n}" for subtype, n in sorted(encodings.items())))
    return notes


def _orphan_annotation_notes(audio_dir: Path, wavs: dict[str, list[Path]]) -> list[str]:
    """Annotation files without audio in the recordings folder are not recordings; say so, not drop them silently."""
    beside = {path.with_suffix(".txt") for paths in wavs.values() for path in paths}
    orphans = sorted(path.name for path in audio_dir.rglob("*.txt") if path not in beside)
    if not orphans:
        return []
    shown = ", ".join(orphans[:5]) + (", ..." if len(orphans) > 5 else "")
    return [f"{audio_dir.name}: {len(orphans)} annotation files without audio ignored: {shown}"]


def annotated_cycles(audio: Path, duration_s: float) -> tuple[Event, ...]:
    """The cycles of a same-stem ``.txt`` beside an audio file (how `predict` cuts ICBHI-style files), or ()."""
    txt = Path(audio).with_suffix(".txt")
    return read_cycles(txt, duration_s) if txt.is_file() else ()


# --- tasks and the registry entry ----------------------------------------------------------------------


def icbhi_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ICBHI 2017 4-class score: Se = abnormal cycles (crackle, wheeze, both) whose exact class is
    predicted / all abnormal cycles; Sp = normal cycles predicted normal / all normal; Score = mean."""
    predicted = probs.argmax(1)
    normal, abnormal = labels == 0, labels > 0
    sp = float((predicted[normal] == 0).mean()) if normal.any() else float("nan")
    se = float((predicted[abnormal] == labels[abnormal]).mean()) if abnormal.any() else float("nan")
    return {"auroc": auroc(probs, labels), "accuracy": float((predicted == labels).mean()), "sensitivity": se,
            "specificity": sp, "icbhi_score": (se + sp) / 2}


def _healthy_vs_disease(m: Manifest) -> np.ndarray:
    diagnosis = np.char.lower(np.char.strip(m["diagnosis"].astype(str)))
    return np.where(diagnosis == "", -1, np.where(diagnosis == "healthy", 0, 1))


def _four_class(m: Manifest) -> np.ndarray:
    crackle, wheeze = m["crackle"], m["wheeze"]
    labels = crackle + 2 * wheeze  # normal 0, crackle 1, wheeze 2, both 3
    return np.where((crackle < 0) | (wheeze < 0), -1, labels)


_ICBHI_FILES = "https://bhichallenge.med.auth.gr/sites/default/files/ICBHI_final_database"
_ICBHI_TEXTS = (
    "ICBHI_Challenge_demographic_information.txt",
    "ICBHI_Challenge_diagnosis.txt",
    "ICBHI_challenge_train_test.txt",
)

SPEC = DatasetSpec(
    name=DATASET,
    description="ICBHI 2017 Respiratory Sound Database (lung sounds, annotated respiratory cycles)",
    read=read_icbhi,
    sample_rate=4000,
    segment_seconds=4.0,
    tasks=(
        Task("healthy_vs_disease", ("healthy", "disease"), "segment", _healthy_vs_disease,
             "ICBHI: patient diagnosis Healthy vs any disease, scored per respiratory cycle (the study's task)"),
        Task("icbhi_4class", ("normal", "crackle", "wheeze", "both"), "segment", _four_class,
             "ICBHI 2017 challenge: cycle-level normal / crackle / wheeze / both", metric=icbhi_metrics),
        Task("crackle", ("no_crackle", "crackle"), "segment", lambda m: m["crackle"],
             "ICBHI: crackles present in the cycle"),
        Task("wheeze", ("no_wheeze", "wheeze"), "segment", lambda m: m["wheeze"],
             "ICBHI: wheezes present in the cycle"),
    ),
    default_task="healthy_vs_disease",
    columns=(
        Column("acquisition_mode", "recording"),
        Column("diagnosis", "patient"),
        Column("crackle", "event", kind="int"),
        Column("wheeze", "event", kind="int"),
    ),
    # ICBHI publishes no checksums. Its server has served an incomplete TLS chain at times; we keep
    # certificate checks on, and a failure there ends in the manual instructions.
    download=DatasetSource(
        name=DATASET,
        title="ICBHI 2017 Respiratory Sound Database",
        homepage="https://bhichallenge.med.auth.gr/ICBHI_2017_Challenge",
        files=(
            RemoteFile("ICBHI_final_database.zip", f"{_ICBHI_FILES}/ICBHI_final_database.zip"),
            *(RemoteFile(name, f"{_ICBHI_FILES}/{name}") for name in _ICBHI_TEXTS),
        ),
        layout=("ICBHI_final_database", *_ICBHI_TEXTS),
        license="Freely available for research (ICBHI challenge site; no licence file is published)",
        citation=(
            "Rocha BM, Filos D, Mendes L, et al. An open access database for the evaluation of "
            "respiratory sound classification algorithms. Physiol Meas. 2019;40(3):035001. "
            "doi:10.1088/1361-6579/ab03ea"
        ),
    ),
    synthesize=write_icbhi,
    annotations=annotated_cycles,
)
