"""Synthetic PhysioNet/CinC Challenge 2016 heart-sound database in the official layout.

Written under the root, byte-compatible with the real files::

    training-a/ ... training-f/       one folder per source database (its own "device")
        a0001.wav                     2 kHz, 16-bit mono PCG
        a0001.hea                     CRLF WFDB header: record line, signal line, "# Normal"/"# Abnormal"
        REFERENCE.csv                 LF: record,1 (abnormal) or record,-1 (normal)
        RECORDS, RECORDS-abnormal, RECORDS-normal    LF, one record name per line
        SHA256SUMS                    LF: "<sha256>  <file>" for every other file, sorted by name

The challenge has no patient ids, so every recording is its own patient: `patients` recordings in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungheart_cl.data.synthetic.devices import PHYSIONET_DEVICES, chest_wall, record
from lungheart_cl.data.synthetic.files import CRLF, sha256_of, write_lines, write_wav
from lungheart_cl.data.synthetic.heart import abnormal_heart, normal_heart, pcg_source
from lungheart_cl.data.synthetic.population import stratified, stream

SAMPLE_RATE = 2000
DATASET_KEY = 2  # separates this dataset's random streams from the others'
POPULATION, RECORDING = range(2)


@dataclass(frozen=True)
class Folder:
    """One source database: how many of the records it holds, how often they are abnormal, how long."""

    share: float
    abnormal_propensity: float
    duration_s: tuple[float, float]


FOLDERS = {
    "training-a": Folder(0.25, 0.7, (10, 36)),
    "training-b": Folder(0.2, 0.2, (5, 8)),
    "training-c": Folder(0.08, 0.75, (10, 60)),
    "training-d": Folder(0.1, 0.5, (6, 30)),
    "training-e": Folder(0.25, 0.25, (8, 40)),
    "training-f": Folder(0.12, 0.3, (29, 60)),
}
ABNORMAL_SHARE = 0.45


@dataclass(frozen=True)
class PhysionetRecord:
    """One record to write: where, under which name, with which label."""

    number: int  # keys the record's random stream
    folder: str
    name: str
    abnormal: bool


def write_physionet2016(root: Path, *, patients: int, seed: int = 0) -> None:
    """Write `patients` synthetic records (one per patient) into the (empty) folder `root`."""
    if patients < 1:
        raise ValueError("patients must be >= 1")
    records = plan_records(seed, patients)
    for folder in FOLDERS:
        in_folder = [r for r in records if r.folder == folder]
        if in_folder:
            (root / folder).mkdir()
            for entry in in_folder:
                write_record(root / folder, entry, seed)
            write_folder_files(root / folder, in_folder)


def plan_records(seed: int, count: int) -> list[PhysionetRecord]:
    """Folders in their shares; abnormal records (45 %) placed preferably in abnormal-prone folders."""
    rng = stream(seed, DATASET_KEY, POPULATION)
    folders = stratified(rng, {name: folder.share for name, folder in FOLDERS.items()}, count)
    labels = stratified(rng, {"abnormal": ABNORMAL_SHARE, "normal": 1 - ABNORMAL_SHARE}, count)
    propensity = np.array([FOLDERS[name].abnormal_propensity for name in folders])
    chosen = rng.choice(count, labels.count("abnormal"), replace=False, p=propensity / propensity.sum())
    abnormal = set(chosen.tolist())
    records, numbers = [], dict.fromkeys(FOLDERS, 0)
    for index, folder in enumerate(folders):
        numbers[folder] += 1
        name = f"{folder[-1]}{numbers[folder]:04d}"
        records.append(PhysionetRecord(index, folder, name, index in abnormal))
    return records


def write_record(folder: Path, entry: PhysionetRecord, seed: int) -> None:
    """The .wav and the .hea of one record."""
    rng = stream(seed, DATASET_KEY, RECORDING, entry.number)
    # Mostly adults, some children (faster hearts); the challenge gives no ages.
    age = rng.uniform(18, 85) if rng.random() < 0.8 else rng.uniform(0.5, 17)
    heart = normal_heart(rng, age)
    if entry.abnormal:
        heart = abnormal_heart(rng, heart)
    duration_s = rng.uniform(*FOLDERS[folder.name].duration_s)
    sound, _ = pcg_source(rng, heart, duration_s, SAMPLE_RATE)
    audio = record(rng, sound, SAMPLE_RATE, PHYSIONET_DEVICES[folder.name], SAMPLE_RATE, chest=chest_wall(rng))
    write_wav(folder / f"{entry.name}.wav", audio, SAMPLE_RATE, 16)
    header = [
        f"{entry.name} 1 {SAMPLE_RATE} {audio.size}",
        f"{entry.name}.wav 16+44 1 16 0 0 0 0 PCG",
        "# Abnormal" if entry.abnormal else "# Normal",
    ]
    write_lines(folder / f"{entry.name}.hea", header, newline=CRLF)


def write_folder_files(folder: Path, records: list[PhysionetRecord]) -> None:
    """REFERENCE.csv, the RECORDS lists and SHA256SUMS (written last: it covers every other file)."""
    write_lines(folder / "REFERENCE.csv", [f"{r.name},{1 if r.abnormal else -1}" for r in records])
    write_lines(folder / "RECORDS", [r.name for r in records])
    write_lines(folder / "RECORDS-abnormal", [r.name for r in records if r.abnormal])
    write_lines(folder / "RECORDS-normal", [r.name for r in records if not r.abnormal])
    files = sorted(path.name for path in folder.iterdir() if path.name != "SHA256SUMS")
    write_lines(folder / "SHA256SUMS", [f"{sha256_of(folder / name)}  {name}" for name in files])
