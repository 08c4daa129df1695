"""Synthetic ICBHI 2017 Respiratory Sound Database in the official release's layout.

Written under the root, byte-compatible with the real files::

    ICBHI_final_database/{patient}_{index}_{location}_{mode}_{device}.wav   PCM, 16- or 24-bit
    ICBHI_final_database/{same name}.txt           LF, tab: cycle start, end, crackle 0/1, wheeze 0/1
    ICBHI_Challenge_demographic_information.txt    CRLF, tab: patient, age, sex, adult BMI,
                                                   child weight, child height (NA where unknown)
    ICBHI_Challenge_diagnosis.txt                  LF, tab: patient, diagnosis
    ICBHI_challenge_train_test.txt                 CRLF, tab: recording, train|test (60/40 by patient)

Patients are children and adults with a diagnosis that fits their age; each is recorded with one
device (multichannel devices record several chest locations per session, hence more recordings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungheart_cl.data.synthetic.devices import ICBHI_DEVICES, record
from lungheart_cl.data.synthetic.files import CRLF, format_number, write_lines, write_wav
from lungheart_cl.data.synthetic.lung import Breather, breather, lung_sound
from lungheart_cl.data.synthetic.population import choose, stratified, stream
from lungheart_cl.data.synthetic.signals import source_rate

AUDIO_DIR = "ICBHI_final_database"
DEMOGRAPHICS_FILE = "ICBHI_Challenge_demographic_information.txt"
DIAGNOSIS_FILE = "ICBHI_Challenge_diagnosis.txt"
SPLIT_FILE = "ICBHI_challenge_train_test.txt"
FIRST_PATIENT_ID = 101  # the real database numbers its patients 101-226
DATASET_KEY = 1  # separates this dataset's random streams from the others'
POPULATION, PATIENT, COUNTS, RECORDING, SOUND = range(5)

AGE_CLASSES = {"child": 0.4, "adult": 0.6}
# Diagnoses by age class; unlike the real database, some adults are healthy too, so that age alone
# does not give the diagnosis away.
DIAGNOSES = {
    "child": {
        "Healthy": 0.4, "URTI": 0.24, "Bronchiolitis": 0.12, "Pneumonia": 0.06, "LRTI": 0.06, "Bronchiectasis": 0.06,
        "Asthma": 0.06,
    },
    "adult": {
        "COPD": 0.55, "Healthy": 0.17, "Pneumonia": 0.08, "Bronchiectasis": 0.07, "URTI": 0.06, "Asthma": 0.04,
        "LRTI": 0.03,
    },
}
SEXES = {"F": 0.5, "M": 0.5}
# How much of a patient's demographics row is known; as in the real file, a few values are NA.
COMPLETENESS = {"complete": 0.88, "partial": 0.1, "unknown": 0.02}
DEVICE_SHARES = {"Meditron": 0.4, "AKGC417L": 0.3, "Litt3200": 0.15, "LittC2SE": 0.15}
MULTICHANNEL = ("AKGC417L", "LittC2SE")
# Multichannel patients get this many times more recordings than single-channel ones.
MULTICHANNEL_WEIGHT = 3.0
# The Meditron recordings of the real database come at three rates.
MEDITRON_RATES = {"44100": 0.5, "4000": 0.25, "10000": 0.25}
DEVICE_RATES = {"AKGC417L": 44100, "LittC2SE": 44100, "Litt3200": 4000}
LOCATION_SHARES = {"Tc": 0.14, "Al": 0.18, "Ar": 0.18, "Pl": 0.15, "Pr": 0.15, "Ll": 0.09, "Lr": 0.11}
TRAIN_SHARE = 0.6
TWENTY_FOUR_BIT_SHARE = 0.3  # of the 44.1 kHz recordings
MISSING = "NA"


@dataclass(frozen=True)
class IcbhiPatient:
    """A patient as generated: true traits drive the sound, `demographics` is what the file says."""

    number: int  # position in the roster, keys the patient's random streams
    patient_id: str
    diagnosis: str
    demographics: tuple[str, ...]  # age, sex, adult BMI, child weight, child height
    device: str
    sample_rate: int
    split: str
    breather: Breather


@dataclass(frozen=True)
class IcbhiRecording:
    """One recording to write: its file name and what its sound depends on."""

    number: int  # position among the patient's recordings, keys the recording's random stream
    name: str
    patient: IcbhiPatient
    location: str
    duration_s: float
    bits: int


def write_icbhi(
    root: Path, *, patients: int, seed: int = 0, recordings_per_patient: float = 2.0, duration_s: float = 20.0
) -> None:
    """Write a synthetic ICBHI dataset of `patients` patients into the (empty) folder `root`.

    `recordings_per_patient` is the average number of recordings per patient (the total is exact;
    multichannel patients get more); `duration_s` is the length of most 44.1 kHz recordings, the
    others vary around it (the real ones mostly last 20 s).
    """
    if patients < 1 or recordings_per_patient < 1 or duration_s <= 0:
        raise ValueError("patients and recordings_per_patient must be >= 1 and duration_s > 0")
    roster = make_patients(seed, patients)
    recordings = plan_recordings(seed, roster, recordings_per_patient, duration_s)
    (root / AUDIO_DIR).mkdir()
    for recording in recordings:
        write_recording(root / AUDIO_DIR, recording, seed)
    write_metadata(root, roster, recordings)


def make_patients(seed: int, count: int) -> list[IcbhiPatient]:
    """The roster: age classes, sexes, devices and diagnoses drawn so that every common category appears."""
    rng = stream(seed, DATASET_KEY, POPULATION)
    age_classes = stratified(rng, AGE_CLASSES, count)
    sexes = stratified(rng, SEXES, count)
    devices = stratified(rng, DEVICE_SHARES, count)
    completeness = stratified(rng, COMPLETENESS, count)
    diagnoses_by_class = {name: stratified(rng, DIAGNOSES[name], age_classes.count(name)) for name in DIAGNOSES}
    diagnoses = [diagnoses_by_class[name].pop() for name in age_classes]
    train = set(rng.permutation(count)[: round(TRAIN_SHARE * count)].tolist())
    return [
        make_patient(
            stream(seed, DATASET_KEY, PATIENT, number), number, age_classes[number], sexes[number] == "F",
            diagnoses[number], devices[number], completeness[number], "train" if number in train else "test",
        )
        for number in range(count)
    ]


def make_patient(
    rng: np.random.Generator,
    number: int,
    age_class: str,
    female: bool,
    diagnosis: str,
    device: str,
    completeness: str,
    split: str,
) -> IcbhiPatient:
    """A patient's true traits, their demographics row and their breathing."""
    age = _age(rng, age_class, diagnosis)
    rate = DEVICE_RATES.get(device) or int(choose(rng, MEDITRON_RATES))
    return IcbhiPatient(
        number=number,
        patient_id=str(FIRST_PATIENT_ID + number),
        diagnosis=diagnosis,
        demographics=_demographics(rng, age, female, completeness),
        device=device,
        sample_rate=rate,
        split=split,
        breather=breather(rng, age, female, diagnosis),
    )


def _age(rng: np.random.Generator, age_class: str, diagnosis: str) -> float:
    """Age in years as the real file gives it: whole years, two decimals under one year."""
    if age_class == "adult":
        if diagnosis == "COPD":
            return float(np.clip(round(rng.normal(68, 9)), 45, 93))
        return float(rng.integers(18, 86))
    if diagnosis == "Bronchiolitis" or rng.random() < 0.12:
        years = rng.uniform(0.2, 3.0)
        return round(years, 2) if years < 1 else float(math.floor(years))
    return float(rng.integers(1, 18))


def _demographics(rng: np.random.Generator, age: float, female: bool, completeness: str) -> tuple[str, ...]:
    """The patient's row: BMI for adults, weight and height for children. "partial" loses the BMI of
    an adult or the weight and height of a child, "unknown" the whole row (age and sex too)."""
    if completeness == "unknown":
        return (MISSING,) * 5
    known = completeness == "complete"
    sex = "F" if female else "M"
    if age >= 18:
        bmi = format_number(float(np.clip(rng.normal(27, 5), 16, 45)), 2) if known else MISSING
        return format_number(age, 2), sex, bmi, MISSING, MISSING
    height_cm = (50 + 25 * age if age < 1 else 75 + 6 * age) * rng.normal(1, 0.05)
    weight_kg = rng.normal(16.5, 1.5) * (height_cm / 100) ** 2
    if not known:
        return format_number(age, 2), sex, MISSING, MISSING, MISSING
    return format_number(age, 2), sex, MISSING, format_number(weight_kg, 1), format_number(height_cm, 0)


def plan_recordings(
    seed: int, roster: list[IcbhiPatient], recordings_per_patient: float, duration_s: float
) -> list[IcbhiRecording]:
    """Every recording's name, location, length and bit depth, sorted by name.

    Each patient has at least one recording; the others, `recordings_per_patient` on average, go
    preferably to multichannel patients, who record several locations per session.
    """
    weights = np.array([MULTICHANNEL_WEIGHT if p.device in MULTICHANNEL else 1.0 for p in roster])
    extra = round(len(roster) * (recordings_per_patient - 1))
    counts = 1 + stream(seed, DATASET_KEY, COUNTS).multinomial(extra, weights / weights.sum())
    recordings = []
    for patient, count in zip(roster, counts):
        rng = stream(seed, DATASET_KEY, RECORDING, patient.number)
        recordings += _patient_recordings(rng, patient, int(count), duration_s)
    return sorted(recordings, key=lambda recording: recording.name)


def _patient_recordings(
    rng: np.random.Generator, patient: IcbhiPatient, count: int, duration_s: float
) -> list[IcbhiRecording]:
    """`count` recordings in sessions; a session records distinct locations under one index such as 2b3."""
    multichannel = patient.device in MULTICHANNEL
    mode = "mc" if multichannel else "sc"
    shares = np.array(list(LOCATION_SHARES.values()))
    recordings: list[IcbhiRecording] = []
    session = 0
    while len(recordings) < count:
        size = min(count - len(recordings), int(rng.integers(2, 6) if multichannel else rng.integers(1, 4)))
        index = f"{session // 4 + 1}{'p' if rng.random() < 0.3 else 'b'}{session % 4 + 1}"
        locations = rng.choice(list(LOCATION_SHARES), size, replace=False, p=shares / shares.sum())
        for location in locations:
            name = f"{patient.patient_id}_{index}_{location}_{mode}_{patient.device}"
            length_s, bits = _length_and_bits(rng, patient, duration_s)
            recordings.append(IcbhiRecording(len(recordings), name, patient, str(location), length_s, bits))
        session += 1
    return recordings


def _length_and_bits(rng: np.random.Generator, patient: IcbhiPatient, duration_s: float) -> tuple[float, int]:
    """44.1 kHz recordings mostly last exactly `duration_s` (some are 24-bit); the others vary."""
    if patient.sample_rate == 44100:
        length = duration_s if rng.random() < 0.9 else duration_s * rng.uniform(0.5, 1.0)
        bits = 24 if rng.random() < TWENTY_FOUR_BIT_SHARE else 16
    else:
        length = duration_s * float(np.clip(rng.lognormal(0.25, 0.45), 0.45, 4.3))
        bits = 16
    # At least one whole breathing cycle to annotate, however short the requested length.
    shortest = 2 * 60 / patient.breather.breaths_per_min + 1.5
    return max(length, shortest), bits


def write_recording(folder: Path, recording: IcbhiRecording, seed: int) -> None:
    """The .wav and its .txt annotation of one recording."""
    patient = recording.patient
    rng = stream(seed, DATASET_KEY, SOUND, patient.number, recording.number)
    source_hz = source_rate(patient.sample_rate)
    sound, cycles = lung_sound(rng, patient.breather, recording.location, recording.duration_s, source_hz)
    device = ICBHI_DEVICES[patient.device]
    audio = record(rng, sound, source_hz, device, patient.sample_rate, chest=patient.breather.chest)
    write_wav(folder / f"{recording.name}.wav", audio, patient.sample_rate, recording.bits)
    lines = [
        "\t".join((format_number(c.start_s, 3), format_number(c.end_s, 3), str(int(c.extra["crackle"])),
                   str(int(c.extra["wheeze"]))))
        for c in cycles
    ]
    write_lines(folder / f"{recording.name}.txt", lines)


def write_metadata(root: Path, roster: list[IcbhiPatient], recordings: list[IcbhiRecording]) -> None:
    """Demographics (CRLF), diagnoses (LF) and the official train/test split (CRLF)."""
    write_lines(root / DEMOGRAPHICS_FILE, ["\t".join((p.patient_id, *p.demographics)) for p in roster], newline=CRLF)
    write_lines(root / DIAGNOSIS_FILE, [f"{p.patient_id}\t{p.diagnosis}" for p in roster])
    write_lines(root / SPLIT_FILE, [f"{r.name}\t{r.patient.split}" for r in recordings], newline=CRLF)
