"""CirCor 2022 reader: the 200 real shared patients, the real release's quirks and stray files, and every bad
input on a small synthetic copy."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from lungheart_cl.data.records import DataError, SourceDataset
from lungheart_cl.data.sources import get_spec
from lungheart_cl.data.sources.circor2022 import AGE_GROUPS, DEVICE, read_circor2022

RATE = 4000
FRAMES = 800
SEGMENTATION = "0\t0.05\t0\n0.05\t0.1\t1\n0.1\t0.2\t2\n"
# Synthetic patients: (location, file stem, has tsv) per recording, then the '#' fields.
PATIENTS = {
    "50001": (
        [("AV", "50001_AV", True), ("MV", "50001_MV_1", False), ("MV", "50001_MV_2", True)],
        {"Age": "Child", "Sex": "Female", "Height": "120.0", "Weight": "nan", "Pregnancy status": "False",
         "Murmur": "Present", "Campaign": "CC2015"},
    ),
    "50002": (
        [("PV", "50002_PV", True)],
        {"Age": "Young Adult", "Sex": "Male", "Height": "nan", "Weight": "70.5", "Pregnancy status": "nan",
         "Murmur": "Unknown", "Campaign": "CC2014"},
    ),
}
SUMMARY_HEADER = "Patient ID,Locations,Age,Sex,Height,Weight,Pregnancy status,Murmur,Campaign"
SUMMARY_ROWS = [
    "50001,AV+MV+MV,Child,Female,120.0,nan,False,Present,CC2015",
    "50002,PV,Young Adult,Male,nan,70.5,nan,Unknown,CC2014",
]


def _write_recording(directory: Path, stem: str, *, rate: int = RATE, header_rate: int = RATE) -> None:
    sf.write(directory / f"{stem}.wav", np.zeros(FRAMES, dtype=np.int16), rate, subtype="PCM_16")
    location = stem.split("_")[1]
    lines = [f"{stem} 1 {header_rate} {FRAMES}", f"{stem}.wav 16+44 1 16 0 0 0 0 {location}"]
    (directory / f"{stem}.hea").write_text("\n".join(lines) + "\n")


def _write_patient(directory: Path, patient_id: str) -> None:
    recordings, fields = PATIENTS[patient_id]
    lines = [f"{patient_id} {len(recordings)} {RATE}"]
    for location, stem, has_tsv in recordings:
        _write_recording(directory, stem)
        lines.append(f"{location} {stem}.hea {stem}.wav" + (f" {stem}.tsv" if has_tsv else ""))
        if has_tsv:
            (directory / f"{stem}.tsv").write_text(SEGMENTATION)
    lines += [f"#{key}: {value}" for key, value in fields.items()]
    # Like the real headers: CRLF endings, no newline after the last line.
    (directory / f"{patient_id}.txt").write_bytes("\r\n".join(lines).encode())


def _write_summary(root: Path, header: str, rows: list[str]) -> None:
    (root / "training_data.csv").write_text("\n".join([header, *rows]) + "\n")


def _make_root(tmp_path: Path) -> Path:
    root = tmp_path / "circor2022"
    directory = root / "training_data"
    directory.mkdir(parents=True)
    for patient_id in PATIENTS:
        _write_patient(directory, patient_id)
    _write_summary(root, SUMMARY_HEADER, SUMMARY_ROWS)
    return root


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_synthetic_layout_reads(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    dataset = read_circor2022(root)
    by_id = {recording.recording_id: recording for recording in dataset.recordings}
    assert sorted(by_id) == ["50001_AV", "50001_MV_1", "50001_MV_2", "50002_PV"]
    assert by_id["50001_MV_1"].extra["segmentation_path"] is None
    assert by_id["50001_MV_2"].extra["segmentation_path"] == root / "training_data" / "50001_MV_2.tsv"
    assert (by_id["50002_PV"].location, by_id["50002_PV"].source, by_id["50002_PV"].device) == ("PV", "CC2014", DEVICE)
    assert all(set(r.extra) == {"segmentation_path"} and r.sample_rate == RATE and r.num_frames == FRAMES
               for r in dataset.recordings)
    child, adult = dataset.patients["50001"], dataset.patients["50002"]
    assert (child.age_group, child.sex, child.age_years) == ("child", "female", None)
    assert child.extra == {"height_cm": 120.0, "weight_kg": None, "pregnant": False, "murmur": "present",
                           "outcome": None}
    assert (adult.age_group, adult.sex, adult.extra["weight_kg"], adult.extra["pregnant"]) == ("adult", "male", 70.5, None)
    assert adult.extra["murmur"] == "unknown"
    assert dataset.notes == [] and dataset.problems == []


def test_registry_returns_this_reader() -> None:
    assert get_spec("circor2022").read is read_circor2022


def test_stray_file_is_noted_and_ignored(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    (root / "training_data" / "50001_MV.tsv").write_text("0\t0\t28")
    dataset = read_circor2022(root)
    assert len(dataset.recordings) == 4
    assert any(note.startswith("50001_MV.tsv: not listed in 50001.txt") for note in dataset.notes)


def test_missing_summary_is_noted(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    (root / "training_data.csv").unlink()
    dataset = read_circor2022(root)
    assert len(dataset.recordings) == 4
    assert dataset.notes == ["training_data.csv not found: patient headers were not cross-checked"]


def test_zero_length_segments_and_crlf_files_are_accepted_and_counted(tmp_path: Path) -> None:
    """Real quirks: a few .tsv end with 'end end 0' (50647_PV.tsv line 194), some have CRLF endings."""
    root = _make_root(tmp_path)
    (root / "training_data" / "50001_AV.tsv").write_text(SEGMENTATION + "0.2\t0.2\t0\n")
    (root / "training_data" / "50002_PV.tsv").write_bytes(SEGMENTATION.replace("\n", "\r\n").encode())
    dataset = read_circor2022(root)
    assert len(dataset.recordings) == 4 and dataset.problems == []
    assert dataset.notes == [
        "1 zero-length segment(s) (start = end, a quirk of the release) accepted: 50001_AV.tsv line 4",
        "1 segmentation file(s) with CRLF line endings read as usual: 50002_PV.tsv",
    ]


# Files that public copies of the release carry in training_data/ besides the patients' own.
STRAY_FILES = ("LICENSE.txt", "SHA256SUMS.txt", "RECORDS", "test.m", "test.asv", "2530_notes.txt")


def test_only_listed_patients_are_read_and_other_files_are_noted(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    for name in STRAY_FILES:
        (root / "training_data" / name).write_text("not a patient\n")
    dataset = read_circor2022(root)
    assert len(dataset.recordings) == 4 and dataset.problems == []
    assert dataset.notes == [f"{name}: belongs to no patient of training_data.csv; ignored"
                             for name in sorted(STRAY_FILES)]


def test_records_lists_the_patients_when_the_summary_is_missing(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    (root / "training_data.csv").unlink()
    (root / "RECORDS").write_text("training_data/50001_AV\ntraining_data/50001_MV_1\ntraining_data/50001_MV_2\n")
    (root / "training_data" / "LICENSE.txt").write_text("licence\n")
    with pytest.raises(DataError, match="patient 50002 has a header but no record") as raised:
        read_circor2022(root)
    assert raised.value.path == root / "RECORDS"
    (root / "RECORDS").write_text((root / "RECORDS").read_text() + "training_data/50002_PV\n")
    dataset = read_circor2022(root)
    assert len(dataset.recordings) == 4 and dataset.problems == []
    assert dataset.notes == ["training_data.csv not found: patient headers were not cross-checked",
                             "patients taken from RECORDS", "LICENSE.txt: belongs to no patient of RECORDS; ignored"]


def _add_outcomes(root: Path, outcome_in_csv: str) -> None:
    """Make the copy look like a later release: 'Recording locations:' column and an Outcome field."""
    for patient_id in PATIENTS:
        path = root / "training_data" / f"{patient_id}.txt"
        path.write_text(path.read_text() + "\n#Outcome: Abnormal")
    header = SUMMARY_HEADER.replace("Locations", "Recording locations:") + ",Outcome"
    _write_summary(root, header, [f"{SUMMARY_ROWS[0]},{outcome_in_csv}", f"{SUMMARY_ROWS[1]},Abnormal"])


def test_later_release_columns_and_outcome(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    _add_outcomes(root, "Abnormal")
    dataset = read_circor2022(root)
    assert {patient.extra["outcome"] for patient in dataset.patients.values()} == {"abnormal"}


def test_outcome_disagreement_names_csv_and_patient(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    _add_outcomes(root, "Normal")
    with pytest.raises(DataError, match="patient 50001: Outcome 'Normal'") as raised:
        read_circor2022(root)
    assert raised.value.path == root / "training_data.csv"


def test_missing_training_data_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="training_data folder is missing"):
        read_circor2022(tmp_path)


def _data(root: Path, name: str) -> Path:
    return root / "training_data" / name


def _count_mismatch(root: Path) -> None:
    _replace(_data(root, "50001.txt"), "50001 3 4000", "50001 4 4000")


def _hea_rate_differs(root: Path) -> None:
    _write_recording(root / "training_data", "50001_AV", rate=2000)


def _patient_rate_differs(root: Path) -> None:
    _write_recording(root / "training_data", "50002_PV", rate=2000, header_rate=2000)


def _wav_missing(root: Path) -> None:
    _data(root, "50001_MV_2.wav").unlink()


def _tsv_missing(root: Path) -> None:
    _data(root, "50001_AV.tsv").unlink()


def _tsv_not_numeric(root: Path) -> None:
    _replace(_data(root, "50001_AV.tsv"), "0.05\t0.1\t1", "0.05\tabc\t1")


def _tsv_end_before_start(root: Path) -> None:
    _replace(_data(root, "50001_AV.tsv"), "0.05\t0.1\t1", "0.05\t0.04\t1")


def _tsv_unknown_state(root: Path) -> None:
    _replace(_data(root, "50001_AV.tsv"), "0.05\t0.1\t1", "0.05\t0.1\t5")


def _unknown_location(root: Path) -> None:
    _replace(_data(root, "50001.txt"), "AV 50001_AV", "XX 50001_AV")
    _replace(root / "training_data.csv", "AV+MV+MV", "XX+MV+MV")


def _unknown_age(root: Path) -> None:
    _replace(_data(root, "50001.txt"), "#Age: Child", "#Age: Elderly")


def _unknown_sex(root: Path) -> None:
    _replace(_data(root, "50002.txt"), "#Sex: Male", "#Sex: X")


def _unknown_murmur(root: Path) -> None:
    _replace(_data(root, "50001.txt"), "#Murmur: Present", "#Murmur: Maybe")


def _height_not_numeric(root: Path) -> None:
    _replace(_data(root, "50001.txt"), "#Height: 120.0", "#Height: tall")


def _unknown_pregnancy(root: Path) -> None:
    _replace(_data(root, "50001.txt"), "#Pregnancy status: False", "#Pregnancy status: maybe")


def _recording_listed_twice(root: Path) -> None:
    line = "AV 50001_AV.hea 50001_AV.wav 50001_AV.tsv"
    _replace(_data(root, "50001.txt"), line, f"{line}\r\n{line}")
    _replace(_data(root, "50001.txt"), "50001 3 4000", "50001 4 4000")
    _replace(root / "training_data.csv", "AV+MV+MV", "AV+AV+MV+MV")


def _csv_murmur_differs(root: Path) -> None:
    _replace(root / "training_data.csv", "Female,120.0,nan,False,Present", "Female,120.0,nan,False,Absent")


def _csv_age_differs(root: Path) -> None:
    _replace(root / "training_data.csv", "PV,Young Adult", "PV,Adolescent")


def _csv_patient_without_header(root: Path) -> None:
    _write_summary(root, SUMMARY_HEADER, [*SUMMARY_ROWS, "50003,MV,Child,Male,nan,nan,False,Absent,CC2015"])


def _header_without_csv_row(root: Path) -> None:
    _write_summary(root, SUMMARY_HEADER, SUMMARY_ROWS[:1])


# (corruption, file the error must name (under root), fragments of its message, recordings kept with skip_bad)
BAD_INPUTS: dict[str, tuple[Callable[[Path], None], str, tuple[str, ...], int]] = {
    "count_mismatch": (_count_mismatch, "training_data/50001.txt", ("declares 4", "3 recording lines"), 1),
    "hea_rate_differs": (_hea_rate_differs, "training_data/50001_AV.wav", ("2000 Hz", "4000 Hz", "50001_AV.hea"), 3),
    "patient_rate_differs": (_patient_rate_differs, "training_data/50002_PV.wav", ("2000 Hz", "50002.txt"), 3),
    "wav_missing": (_wav_missing, "training_data/50001_MV_2.wav", ("50001.txt line 4", "missing"), 3),
    "tsv_missing": (_tsv_missing, "training_data/50001_AV.tsv", ("50001.txt line 2", "missing"), 3),
    "tsv_not_numeric": (_tsv_not_numeric, "training_data/50001_AV.tsv", ("line 2", "abc"), 3),
    "tsv_end_before_start": (_tsv_end_before_start, "training_data/50001_AV.tsv", ("line 2", "before its start"), 3),
    "tsv_unknown_state": (_tsv_unknown_state, "training_data/50001_AV.tsv", ("line 2", "state 5"), 3),
    "unknown_location": (_unknown_location, "training_data/50001.txt", ("line 2", "'XX'"), 3),
    "unknown_age": (_unknown_age, "training_data/50001.txt", ("line 5", "'Elderly'"), 1),
    "unknown_sex": (_unknown_sex, "training_data/50002.txt", ("line 4", "'X'"), 3),
    "unknown_murmur": (_unknown_murmur, "training_data/50001.txt", ("line 10", "'Maybe'"), 1),
    "height_not_numeric": (_height_not_numeric, "training_data/50001.txt", ("line 7", "'tall'"), 1),
    "unknown_pregnancy": (_unknown_pregnancy, "training_data/50001.txt", ("line 9", "'maybe'"), 1),
    "recording_listed_twice": (_recording_listed_twice, "training_data/50001.txt", ("line 3", "50001_AV", "line 2"), 4),
    "csv_murmur_differs": (_csv_murmur_differs, "training_data.csv", ("patient 50001", "Murmur"), 1),
    "csv_age_differs": (_csv_age_differs, "training_data.csv", ("patient 50002", "Age"), 3),
    "csv_patient_without_header": (_csv_patient_without_header, "training_data.csv", ("patient 50003",), 4),
    "header_without_csv_row": (_header_without_csv_row, "training_data.csv", ("patient 50002", "no row"), 3),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_raises_naming_the_file(tmp_path: Path, case: str) -> None:
    corrupt, bad_file, fragments, _ = BAD_INPUTS[case]
    root = _make_root(tmp_path)
    corrupt(root)
    with pytest.raises(DataError) as raised:
        read_circor2022(root)
    assert raised.value.path == root / bad_file
    assert all(fragment in raised.value.message for fragment in fragments), raised.value.message


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_skipped_as_problem(tmp_path: Path, case: str) -> None:
    corrupt, bad_file, _, kept = BAD_INPUTS[case]
    root = _make_root(tmp_path)
    corrupt(root)
    dataset = read_circor2022(root, skip_bad=True)
    assert len(dataset.recordings) == kept
    assert [problem.path for problem in dataset.problems] == [root / bad_file]
    assert dataset.notes == []  # files of a skipped line are still listed, so never noted as strays
    assert set(dataset.patients) == {recording.patient_id for recording in dataset.recordings}


@pytest.fixture(scope="module")
def real(shared_data: Path) -> SourceDataset:
    return read_circor2022(shared_data / "circor2022")


def _csv_rows(root: Path) -> list[dict[str, str]]:
    with (root / "training_data.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.shared_data
def test_real_patients_and_metadata(real: SourceDataset, shared_data: Path) -> None:
    """The 200 shared patients (Present 40, Absent 145, Unknown 15), each as training_data.csv states it."""
    rows = {row["Patient ID"]: row for row in _csv_rows(shared_data / "circor2022")}
    assert len(rows) == 200 and sorted(real.patients) == sorted(rows) and real.problems == []
    assert Counter(patient.extra["murmur"] for patient in real.patients.values()) == {"present": 40, "absent": 145,
                                                                               "unknown": 15}
    wavs = sorted(path.stem for path in (shared_data / "circor2022" / "training_data").glob("*.wav"))
    assert sorted(r.recording_id for r in real.recordings) == wavs and len(wavs) == 684
    for patient_id, row in rows.items():
        patient = real.patients[patient_id]
        assert (patient.extra["murmur"], patient.sex) == (row["Murmur"].lower(), row["Sex"].lower())
        assert patient.age_group == AGE_GROUPS[row["Age"]]
        locations = sorted(r.location for r in real.recordings if r.patient_id == patient_id)
        assert locations == sorted(row["Locations"].split("+"))
    patient = real.patients["33151"]
    extra = patient.extra
    assert (patient.age_group, patient.sex, extra["murmur"], extra["height_cm"], extra["weight_kg"]) == (
        "child", "female", "present", 141.0, 30.9
    )
    pregnant = real.patients["50086"]
    assert (pregnant.age_group, pregnant.extra["pregnant"], pregnant.extra["height_cm"]) == ("unknown", True, None)
    assert (real.patients["84804"].age_group, real.patients["84804"].sex) == ("neonate", "male")
    assert {patient.extra["outcome"] for patient in real.patients.values()} == {None}
    assert {(r.sample_rate, r.device) for r in real.recordings} == {(4000, DEVICE)}
    assert {r.source for r in real.recordings} == {"CC2014", "CC2015"}
    assert {r.location for r in real.recordings if r.patient_id == "84690"} == {"TV", "MV", "Phc"}


@pytest.mark.shared_data
def test_real_quirks_are_noted(real: SourceDataset) -> None:
    """One stray tsv, one zero-length final segment, one CRLF segmentation file: accepted, each noted."""
    assert real.notes == [
        "50782_MV.tsv: not listed in 50782.txt, belongs to no recording; ignored",
        "1 zero-length segment(s) (start = end, a quirk of the release) accepted: 50647_PV.tsv line 194",
        "1 segmentation file(s) with CRLF line endings read as usual: 50115_PV_1.tsv",
    ]


@pytest.mark.shared_data
def test_real_patient_50782(real: SourceDataset) -> None:
    recordings = {r.recording_id: r for r in real.recordings if r.patient_id == "50782"}
    assert sorted(recordings) == ["50782_AV_1", "50782_AV_2", "50782_MV_1", "50782_MV_2", "50782_PV", "50782_TV"]
    assert recordings["50782_MV_1"].extra["segmentation_path"] is None
    assert recordings["50782_MV_2"].extra["segmentation_path"].name == "50782_MV_2.tsv"
    assert recordings["50782_AV_2"].location == "AV"
