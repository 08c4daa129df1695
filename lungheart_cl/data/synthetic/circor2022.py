"""Synthetic CirCor DigiScope phonocardiogram dataset (PhysioNet Challenge 2022) in the official layout.

Written under the root, byte-compatible with the real files (the early release: no Outcome field)::

    training_data/{id}.txt          CRLF patient header, no final newline: "{id} {n} 4000", one line
                                    "LOC hea wav [tsv]" per recording, then "#Key: value" lines
    training_data/{id}_{LOC}[_k].wav   4 kHz, 16-bit mono PCG (_1, _2 when a location is repeated)
    training_data/{id}_{LOC}[_k].hea   CRLF WFDB header
    training_data/{id}_{LOC}[_k].tsv   LF, tab: start, end, state (0 none, 1 S1, 2 systole, 3 S2,
                                    4 diastole); a few recordings have none, a few end with a
                                    zero-length segment or have CRLF endings (as real files do)
    training_data/{id}_{LOC}.tsv    beside a repeated location's _1/_2 recordings: a stray file no
                                    header lists, with the bytes of the real 50782_MV.tsv
    training_data.csv               LF summary table, one row per patient

A murmur is audible at the patient's murmur locations only, loudest at the most audible one, with
the timing, shape, pitch, quality and grade the header states; "Unknown" patients have poor recordings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lungheart_cl.data.synthetic.devices import CIRCOR_DEVICE, chest_wall, record
from lungheart_cl.data.synthetic.files import CRLF, LF, format_number, write_lines, write_wav
from lungheart_cl.data.synthetic.heart import Heart, Murmur, normal_heart, pcg_source, random_murmur, segmentation
from lungheart_cl.data.synthetic.population import choose, stratified, stream
from lungheart_cl.data.synthetic.signals import Response

DATA_DIR = "training_data"
SUMMARY_FILE = "training_data.csv"
SAMPLE_RATE = 4000
DATASET_KEY = 3  # separates this dataset's random streams from the others'
POPULATION, PATIENT, RECORDINGS, SOUND = range(4)

# "nan" is the age group of the pregnant women, whose age the dataset does not give.
AGE_GROUPS = {"Neonate": 0.03, "Infant": 0.15, "Child": 0.55, "Adolescent": 0.15, "Young Adult": 0.04, "nan": 0.08}
AGE_YEARS = {
    "Neonate": (0.0, 0.07),
    "Infant": (0.08, 1.0),
    "Child": (1.0, 12.0),
    "Adolescent": (12.0, 18.0),
    "Young Adult": (18.0, 21.0),
    "nan": (18.0, 40.0),
}
MURMURS = {"Present": 0.3, "Absent": 0.62, "Unknown": 0.08}
# Irregularities of the real files, one per affected patient; every one appears from 20 patients on.
QUIRKS = {
    "none": 0.7, "repeated location": 0.08, "missing segmentation": 0.06, "extra location": 0.06,
    "zero-length final segment": 0.05, "CRLF segmentation": 0.05,
}
# The quirks that touch one recording's segmentation file.
SEGMENTATION_QUIRKS = ("missing segmentation", "zero-length final segment", "CRLF segmentation")
# The real stray 50782_MV.tsv, which sits beside 50782_MV_1 and 50782_MV_2 and no header lists.
STRAY_SEGMENTATION = b"0\t0\t28"
SEXES = {"Female": 0.5, "Male": 0.5}
LOCATIONS = ("AV", "PV", "TV", "MV")
OTHER_LOCATION = "Phc"
# At the base of the heart (AV, PV) S2 dominates; at the apex (MV, TV) S1 does.
S2_EMPHASIS = {"AV": 1.4, "PV": 1.3, "TV": 0.8, "MV": 0.7, "Phc": 1.0}
MURMUR_FIELDS = ("timing", "shape", "grading", "pitch", "quality")
HEADER_KEYS = (
    "Age", "Sex", "Height", "Weight", "Pregnancy status", "Murmur", "Murmur locations", "Most audible location",
    *(f"Systolic murmur {field}" for field in MURMUR_FIELDS),
    *(f"Diastolic murmur {field}" for field in MURMUR_FIELDS),
    "Campaign", "Additional ID",
)
NAN = "nan"


@dataclass(frozen=True)
class CircorPatient:
    """A patient as generated: the header fields and what the recordings' sound depends on."""

    number: int  # keys the patient's random streams
    patient_id: str
    fields: dict[str, str]  # the "#Key: value" fields, as written
    heart: Heart  # without murmurs; they are added per location
    systolic: Murmur | None
    diastolic: Murmur | None
    locations: tuple[str, ...]  # recorded, in the dataset's order AV PV TV MV Phc
    murmur_locations: tuple[str, ...]  # where the murmur sounds (a faint unconfirmed one: everywhere)
    most_audible: str
    poor_quality: bool  # the "Unknown" murmur patients
    quirk: str  # a key of QUIRKS
    chest: Response


@dataclass(frozen=True)
class CircorRecording:
    """One recording to write: its file name, location and whether it gets a segmentation (and its quirk)."""

    number: int  # position among the patient's recordings, keys its random stream
    name: str
    location: str
    has_segmentation: bool
    segmentation_quirk: str | None = None  # "zero-length final segment" | "CRLF segmentation"


def write_circor2022(root: Path, *, patients: int, seed: int = 0) -> None:
    """Write `patients` synthetic patients into the (empty) folder `root`."""
    if patients < 1:
        raise ValueError("patients must be >= 1")
    (root / DATA_DIR).mkdir()
    rows = []
    for patient in make_patients(seed, patients):
        recordings = plan_recordings(stream(seed, DATASET_KEY, RECORDINGS, patient.number), patient)
        for recording in recordings:
            write_recording(root / DATA_DIR, patient, recording, seed)
        write_stray_files(root / DATA_DIR, patient, recordings)
        write_patient_header(root / DATA_DIR, patient, recordings)
        rows.append(summary_row(patient, recordings))
    columns = ["Patient ID", "Locations", *HEADER_KEYS]
    write_lines(root / SUMMARY_FILE, [",".join(columns), *(",".join(row) for row in rows)])


def make_patients(seed: int, count: int) -> list[CircorPatient]:
    """Age groups, sexes and murmur labels drawn so that every common category appears."""
    rng = stream(seed, DATASET_KEY, POPULATION)
    ages = stratified(rng, AGE_GROUPS, count)
    sexes = stratified(rng, SEXES, count)
    murmurs = stratified(rng, MURMURS, count)
    quirks = stratified(rng, QUIRKS, count)
    # Five-digit ids in the real range, in no particular order (as in the real summary table).
    ids = rng.choice(np.arange(2530, 85350), count, replace=False)
    return [
        make_patient(
            stream(seed, DATASET_KEY, PATIENT, number), number, str(ids[number]), ages[number], sexes[number],
            murmurs[number], quirks[number],
        )
        for number in range(count)
    ]


def make_patient(
    rng: np.random.Generator, number: int, patient_id: str, age_group: str, sex: str, murmur: str, quirk: str
) -> CircorPatient:
    """A patient's traits, murmur and header fields."""
    pregnant = age_group == NAN
    age = rng.uniform(*AGE_YEARS[age_group])
    locations = _locations(rng, extra=quirk == "extra location")
    systolic = random_murmur(rng, systolic=True) if murmur == "Present" else None
    diastolic = random_murmur(rng, systolic=False) if murmur == "Present" and rng.random() < 0.05 else None
    murmur_locations, most_audible = _murmur_sites(rng, locations) if murmur == "Present" else ((), "")
    if murmur == "Unknown" and rng.random() < 0.5:
        # Some "Unknown" patients have a faint murmur, everywhere, that the annotators could not confirm.
        systolic, murmur_locations = random_murmur(rng, systolic=True, grade="I/VI"), locations
    fields = {
        "Age": age_group,
        "Sex": "Female" if pregnant else sex,
        **_body_size(rng, age, pregnant),
        "Pregnancy status": str(pregnant),
        "Murmur": murmur,
        "Murmur locations": "+".join(sorted(murmur_locations)) if murmur == "Present" else NAN,
        "Most audible location": most_audible or NAN,
        # An unconfirmed murmur of an "Unknown" patient is not described.
        **_murmur_fields("Systolic", systolic if murmur == "Present" else None),
        **_murmur_fields("Diastolic", diastolic),
        "Campaign": "CC2014" if rng.random() < 0.35 else "CC2015",
        "Additional ID": str(rng.integers(10000, 90000)) if rng.random() < 0.1 else NAN,
    }
    return CircorPatient(
        number=number,
        patient_id=patient_id,
        fields=fields,
        heart=normal_heart(rng, age),
        systolic=systolic,
        diastolic=diastolic,
        locations=locations,
        murmur_locations=murmur_locations,
        most_audible=most_audible,
        poor_quality=murmur == "Unknown",
        quirk=quirk,
        chest=chest_wall(rng),
    )


def _locations(rng: np.random.Generator, *, extra: bool) -> tuple[str, ...]:
    """Most patients are recorded at all four valve areas, some at fewer; `extra` adds another site (Phc)."""
    if rng.random() < 0.75:
        locations = list(LOCATIONS)
    else:
        keep = rng.choice(len(LOCATIONS), int(rng.integers(1, 4)), replace=False)
        locations = [LOCATIONS[i] for i in sorted(keep)]
    return (*locations, OTHER_LOCATION) if extra else tuple(locations)


def _murmur_sites(rng: np.random.Generator, locations: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """Where a present murmur is heard (a non-empty subset) and where it is loudest."""
    most_audible = choose(rng, locations)
    sites = {most_audible} | {location for location in locations if rng.random() < 0.6}
    return tuple(location for location in locations if location in sites), most_audible


def _body_size(rng: np.random.Generator, age: float, pregnant: bool) -> dict[str, str]:
    """Height (cm) and weight (kg) growing with age; missing for pregnant women and a few others."""
    if pregnant or rng.random() < 0.05:
        return {"Height": NAN, "Weight": NAN}
    height = (50 + 25 * age if age < 1 else 75 + 6 * min(age, 17)) * rng.normal(1, 0.05)
    weight = rng.normal(16.5, 1.5) * (height / 100) ** 2
    return {"Height": str(round(height, 1)), "Weight": str(round(weight, 2))}


def _murmur_fields(kind: str, murmur: Murmur | None) -> dict[str, str]:
    values = (murmur.timing, murmur.shape, murmur.grade, murmur.pitch, murmur.quality) if murmur else (NAN,) * 5
    return {f"{kind} murmur {field}": value for field, value in zip(MURMUR_FIELDS, values)}


def plan_recordings(rng: np.random.Generator, patient: CircorPatient) -> list[CircorRecording]:
    """One recording per location; the patient's quirk may repeat a location (``_1``, ``_2``), leave
    one recording without its segmentation or give one segmentation file a quirk of the real files."""
    repeated = choose(rng, patient.locations) if patient.quirk == "repeated location" else None
    recordings: list[CircorRecording] = []
    for location in patient.locations:
        for suffix in ("_1", "_2") if location == repeated else ("",):
            name = f"{patient.patient_id}_{location}{suffix}"
            recordings.append(CircorRecording(len(recordings), name, location, has_segmentation=True))
    if patient.quirk in SEGMENTATION_QUIRKS:
        chosen = int(rng.integers(len(recordings)))
        if patient.quirk == "missing segmentation":
            recordings[chosen] = replace(recordings[chosen], has_segmentation=False)
        else:
            recordings[chosen] = replace(recordings[chosen], segmentation_quirk=patient.quirk)
    return recordings


def location_heart(rng: np.random.Generator, patient: CircorPatient, location: str) -> Heart:
    """The patient's heart as heard at one location, on the day: S1/S2 balance, murmurs where audible."""
    audible = location in patient.murmur_locations
    loudness = 1.3 if location == patient.most_audible else rng.uniform(0.6, 1.0)
    return replace(
        patient.heart,
        bpm=patient.heart.bpm * rng.uniform(0.95, 1.05),
        s2_level=patient.heart.s2_level * S2_EMPHASIS[location],
        systolic=_louder(patient.systolic, loudness) if audible else None,
        diastolic=_louder(patient.diastolic, loudness) if audible else None,
    )


def _louder(murmur: Murmur | None, factor: float) -> Murmur | None:
    return replace(murmur, level=murmur.level * factor) if murmur is not None else None


def write_recording(folder: Path, patient: CircorPatient, recording: CircorRecording, seed: int) -> None:
    """The .wav, .hea and (usually) .tsv of one recording."""
    rng = stream(seed, DATASET_KEY, SOUND, patient.number, recording.number)
    duration_s = 5 + 25 * rng.beta(3, 1.5)
    heart = location_heart(rng, patient, recording.location)
    sound, beats = pcg_source(rng, heart, duration_s, SAMPLE_RATE)
    snr_db = rng.uniform(0, 10) if patient.poor_quality else None
    audio = record(rng, sound, SAMPLE_RATE, CIRCOR_DEVICE, SAMPLE_RATE, chest=patient.chest, snr_db=snr_db)
    write_wav(folder / f"{recording.name}.wav", audio, SAMPLE_RATE, 16)
    header = [
        f"{recording.name} 1 {SAMPLE_RATE} {audio.size}",
        f"{recording.name}.wav 16+44 1 16 0 0 0 0 {recording.location}",
    ]
    write_lines(folder / f"{recording.name}.hea", header, newline=CRLF)
    if recording.has_segmentation:
        duration_s = audio.size / SAMPLE_RATE
        rows = segmentation(beats, duration_s, rng.uniform(0.3, 1.5), duration_s - rng.uniform(0.2, 1.5))
        if recording.segmentation_quirk == "zero-length final segment":  # as 50647_PV.tsv: "29.84 29.84 0"
            rows.append((duration_s, duration_s, 0))
        lines = [f"{format_number(start, 6)}\t{format_number(end, 6)}\t{state}" for start, end, state in rows]
        newline = CRLF if recording.segmentation_quirk == "CRLF segmentation" else LF
        write_lines(folder / f"{recording.name}.tsv", lines, newline=newline)


def write_stray_files(folder: Path, patient: CircorPatient, recordings: list[CircorRecording]) -> None:
    """A repeated location's stray ``{id}_{LOC}.tsv`` that no header lists, as patient 50782 has."""
    for location in [r.location for r in recordings if r.name.endswith("_1")]:
        (folder / f"{patient.patient_id}_{location}.tsv").write_bytes(STRAY_SEGMENTATION)


def write_patient_header(folder: Path, patient: CircorPatient, recordings: list[CircorRecording]) -> None:
    """``{id}.txt``: CRLF lines and, as in the real files, no newline after the last one."""
    lines = [f"{patient.patient_id} {len(recordings)} {SAMPLE_RATE}"]
    for recording in recordings:
        files = [f"{recording.name}.hea", f"{recording.name}.wav"]
        files += [f"{recording.name}.tsv"] if recording.has_segmentation else []
        lines.append(" ".join([recording.location, *files]))
    lines += [f"#{key}: {patient.fields[key]}" for key in HEADER_KEYS]
    write_lines(folder / f"{patient.patient_id}.txt", lines, newline=CRLF, final_newline=False)


def summary_row(patient: CircorPatient, recordings: list[CircorRecording]) -> list[str]:
    """The patient's training_data.csv row: id, every recording's location, then the header fields."""
    locations = "+".join(recording.location for recording in recordings)
    return [patient.patient_id, locations, *(patient.fields[key] for key in HEADER_KEYS)]
