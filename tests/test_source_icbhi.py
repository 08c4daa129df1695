"""ICBHI reader: the real subset in ../shared/data/icbhi, the Kaggle re-packaging, and the bad inputs of its layout
(damaged audio: `test_sources_bad_input.py`, for every source)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungheart_cl.data.records import DataError, Event, Patient, SourceDataset
from lungheart_cl.data.sources import read_source
from lungheart_cl.data.sources.icbhi import (
    END_TOLERANCE_S,
    RecordingName,
    parse_recording_name,
    read_cycles,
    read_icbhi,
)

RATE = 4000
SECONDS = 2.0
CYCLES = "0.1\t0.9\t0\t0\n0.9\t1.8\t1\t1\n"
DEMOGRAPHICS = {
    "101": ("3", "F", "NA", "19", "99"),
    "104": ("70", "F", "28.47", "NA", "NA"),
    "223": ("NA", "NA", "NA", "NA", "NA"),
}
DIAGNOSES = {"101": "URTI", "104": "COPD", "223": "COPD"}
STEMS = ("101_1b1_Al_sc_Meditron", "104_1b1_Ar_sc_Litt3200", "104_1b1_Ll_sc_Litt3200", "223_1b1_Ar_sc_Meditron")


def cycle(start: float, end: float, crackle: bool = False, wheeze: bool = False) -> Event:
    return Event(start, end, {"crackle": crackle, "wheeze": wheeze})


def write_recording(folder: Path, stem: str, cycles: str = CYCLES, seconds: float = SECONDS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / f"{stem}.wav"
    sf.write(wav, np.zeros(int(seconds * RATE), dtype=np.float32), RATE, subtype="PCM_16")
    (folder / f"{stem}.txt").write_text(cycles)
    return wav


def write_official(root: Path, stems: tuple[str, ...] = STEMS) -> Path:
    """A small official layout: CRLF metadata like the release, all recordings in the split file."""
    for stem in stems:
        write_recording(root / "ICBHI_final_database", stem)
    rows = ["\t".join((pid, *fields)) for pid, fields in DEMOGRAPHICS.items()]
    (root / "ICBHI_Challenge_demographic_information.txt").write_bytes("\r\n".join(rows).encode() + b"\r\n")
    (root / "ICBHI_Challenge_diagnosis.txt").write_text("".join(f"{p}\t{d}\n" for p, d in DIAGNOSES.items()))
    split = "".join(f"{stem}\t{'train' if i % 2 else 'test'}\r\n" for i, stem in enumerate(stems))
    (root / "ICBHI_challenge_train_test.txt").write_bytes(split.encode())
    return root


def write_kaggle(root: Path, stems: tuple[str, ...] = STEMS) -> Path:
    """Kaggle layout nested one level, space-separated demographics and a headerless CSV diagnosis."""
    base = root / "Respiratory_Sound_Database"
    for stem in stems:
        write_recording(base / "audio_and_txt_files", stem)
    rows = [" ".join((pid, *fields)) for pid, fields in DEMOGRAPHICS.items()]
    (base / "demographic_info.txt").write_text("\n".join(rows) + "\n")
    (base / "patient_diagnosis.csv").write_text("".join(f"{p},{d}\n" for p, d in DIAGNOSES.items()))
    return root


def drop_line(path: Path, prefix: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith(prefix)))


def assert_bad(root: Path, culprit: Path, fragment: str, left_out: set[str]) -> SourceDataset:
    """Raises naming `culprit` by default; with skip_bad leaves `left_out` out, one Problem each."""
    with pytest.raises(DataError) as raised:
        read_icbhi(root)
    assert raised.value.path == culprit and culprit.name in str(raised.value)
    assert fragment in raised.value.message
    dataset = read_icbhi(root, skip_bad=True)
    assert {r.recording_id for r in dataset.recordings} == set(STEMS) - left_out
    assert len(dataset.problems) == len(left_out)
    assert all(p.path == culprit and fragment in p.message for p in dataset.problems)
    return dataset


# --- real data ---------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_all_920_official_annotations_hold_the_published_cycle_counts(shared_data: Path) -> None:
    files = sorted((shared_data / "icbhi" / "annotations").glob("*.txt"))
    events = [event for path in files for event in read_cycles(path)]
    kinds = [(e.extra["crackle"], e.extra["wheeze"]) for e in events]
    assert len(files) == 920
    assert len(events) == 6898
    assert kinds.count((False, False)) == 3642
    assert kinds.count((True, False)) == 1864
    assert kinds.count((False, True)) == 886
    assert kinds.count((True, True)) == 506


@pytest.mark.shared_data
def test_real_official_layout_reads_cleanly_with_its_quirks_noted(shared_data: Path) -> None:
    dataset = read_source("icbhi", shared_data / "icbhi")
    recordings = {r.recording_id: r for r in dataset.recordings}
    notes = "\n".join(dataset.notes)
    assert len(recordings) == 15 and len(dataset.patients) == 11 and not dataset.problems
    assert {r.sample_rate for r in recordings.values()} == {4000, 10000, 44100}
    assert {r.device for r in recordings.values()} == {"Meditron", "LittC2SE", "Litt3200", "AKGC417L"}
    assert {r.source for r in recordings.values()} == {"ICBHI_final_database"}
    assert all(r.events and r.events[-1].end_s <= r.duration_s for r in recordings.values())
    assert all(r.official_split in ("train", "test") for r in recordings.values())
    patient_223 = dataset.patients["223"]
    assert (patient_223.age_years, patient_223.age_group, patient_223.sex) == (None, "unknown", "unknown")
    assert patient_223.extra["diagnosis"] == "COPD"
    assert dataset.patients["101"] == Patient(
        "101", age_years=3.0, age_group="child", sex="female",
        extra={"diagnosis": "URTI", "bmi": None, "weight_kg": 19.0, "height_cm": 99.0},
    )
    assert recordings["226_1b1_Pl_sc_LittC2SE"].official_split == "train"
    assert "listed as 226_1b1_Pl_sc_Meditron" in notes
    assert "patients 156, 218" in notes
    assert "PCM_24" in notes and "CRLF" in notes
    first = recordings["101_1b1_Al_sc_Meditron"]
    fields = (first.patient_id, first.location, first.extra["acquisition_mode"], first.device, first.official_split)
    assert fields == ("101", "Al", "sc", "Meditron", "test")
    assert first.events[0] == cycle(0.036, 0.579)


@pytest.mark.shared_data
def test_kaggle_layout_from_real_files_reads_the_same_fields(shared_data: Path, tmp_path: Path) -> None:
    official = read_icbhi(shared_data / "icbhi")
    picked = [r for r in official.recordings if r.patient_id in ("101", "104", "223")]
    # Kaggle's real archive nests the folder twice and keeps demographic_info.txt at the top.
    inner = tmp_path / "Respiratory_Sound_Database" / "Respiratory_Sound_Database"
    (inner / "audio_and_txt_files").mkdir(parents=True)
    for recording in picked:
        shutil.copy(recording.audio_path, inner / "audio_and_txt_files")
        shutil.copy(recording.audio_path.with_suffix(".txt"), inner / "audio_and_txt_files")
    source = shared_data / "icbhi"
    demographics = (source / "ICBHI_Challenge_demographic_information.txt").read_text().replace("\t", " ")
    (tmp_path / "demographic_info.txt").write_text(demographics)
    diagnoses = (source / "ICBHI_Challenge_diagnosis.txt").read_text().replace("\t", ",")
    (inner / "patient_diagnosis.csv").write_text(diagnoses)

    kaggle = read_icbhi(tmp_path)
    assert [
        dataclasses.replace(r, audio_path=o.audio_path, source=o.source, official_split=o.official_split)
        for r, o in zip(kaggle.recordings, picked)
    ] == picked
    assert {r.source for r in kaggle.recordings} == {"audio_and_txt_files"}
    assert {r.official_split for r in kaggle.recordings} == {None}
    assert kaggle.patients == {pid: official.patients[pid] for pid in ("101", "104", "223")}
    assert any("no official split file" in note for note in kaggle.notes)


# --- layouts -----------------------------------------------------------------------------------------


def test_synthetic_official_layout_fields(tmp_path: Path) -> None:
    dataset = read_icbhi(write_official(tmp_path))
    recording = dataset.recordings[0]
    assert recording == dataclasses.replace(
        recording, dataset="icbhi", recording_id="101_1b1_Al_sc_Meditron", patient_id="101",
        audio_path=tmp_path / "ICBHI_final_database" / "101_1b1_Al_sc_Meditron.wav", sample_rate=RATE,
        num_frames=int(SECONDS * RATE), num_channels=1, location="Al", device="Meditron",
        source="ICBHI_final_database", official_split="test", extra={"acquisition_mode": "sc"},
        events=(cycle(0.1, 0.9), cycle(0.9, 1.8, True, True)),
    )
    assert dataset.patients["104"].extra["bmi"] == 28.47 and dataset.patients["104"].age_group == "adult"
    assert sorted(dataset.patients) == ["101", "104", "223"]


def test_kaggle_layout_nested_one_level_matches_the_official_one(tmp_path: Path) -> None:
    official = read_icbhi(write_official(tmp_path / "official"))
    kaggle = read_icbhi(write_kaggle(tmp_path / "kaggle"))
    assert kaggle.patients == official.patients
    assert [dataclasses.replace(r, audio_path=Path(), source="", official_split=None) for r in kaggle.recordings] == [
        dataclasses.replace(r, audio_path=Path(), source="", official_split=None) for r in official.recordings
    ]
    assert {r.official_split for r in kaggle.recordings} == {None}


def test_annotation_folder_is_not_a_source_of_recordings(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    (root / "annotations").mkdir()
    (root / "annotations" / "160_1b2_Al_mc_AKGC417L.txt").write_text(CYCLES)
    assert {r.recording_id for r in read_icbhi(root).recordings} == set(STEMS)


def test_annotation_without_audio_in_the_recordings_folder_is_noted(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    (root / "ICBHI_final_database" / "160_1b2_Al_mc_AKGC417L.txt").write_text(CYCLES)
    notes = "\n".join(read_icbhi(root).notes)
    assert "1 annotation files without audio ignored: 160_1b2_Al_mc_AKGC417L.txt" in notes


def test_no_layout_or_two_layouts_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no ICBHI recordings folder"):
        read_icbhi(tmp_path)
    write_kaggle(write_official(tmp_path))
    with pytest.raises(DataError, match="several ICBHI recordings folders"):
        read_icbhi(tmp_path)


def test_missing_metadata_file_is_an_error(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    (root / "ICBHI_Challenge_diagnosis.txt").unlink()
    with pytest.raises(DataError, match="ICBHI_Challenge_diagnosis.txt not found"):
        read_icbhi(root)


# --- names and annotation lines ----------------------------------------------------------------------


def test_parse_recording_name() -> None:
    assert parse_recording_name("226_1b1_Pl_sc_LittC2SE") == RecordingName("226", "1b1", "Pl", "sc", "LittC2SE")


@pytest.mark.parametrize(
    ("stem", "fragment"),
    [
        ("101_1b1_Xx_sc_Meditron", "unknown chest location 'Xx'"),
        ("101_1b1_Al_zz_Meditron", "unknown acquisition mode 'zz'"),
        ("101_1b1_Al_sc_Phone", "unknown device 'Phone'"),
        ("101_1b1_Al_sc", "5 parts"),
        ("abc_1b1_Al_sc_Meditron", "not a number"),
    ],
)
def test_parse_recording_name_rejects(stem: str, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment) as raised:
        parse_recording_name(stem, path=Path(f"/data/{stem}.wav"))
    assert raised.value.path == Path(f"/data/{stem}.wav")


def test_read_cycles_takes_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"0.036\t0.579\t0\t1\r\n0.579\t2.45\t1\t0\r\n\r\n")
    assert read_cycles(path) == (cycle(0.036, 0.579, False, True), cycle(0.579, 2.45, True, False))


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("1.0\t1.0\t0\t0", "end 1.0 s is not after start 1.0 s"),
        ("1.2\t1.0\t0\t0", "end 1.0 s is not after start 1.2 s"),
        ("1.0\tabc\t0\t0", "end time 'abc' is not a number"),
        ("1.0\tnan\t0\t0", "is not finite"),
        ("1.0\t1.5\t0", "expected 4 fields"),
        ("1.0\t1.5\t0\t0\t0", "expected 4 fields"),
        ("1.0\t1.5\t2\t0", "crackle flag '2' is not 0 or 1"),
        ("1.0\t1.5\t0\tyes", "wheeze flag 'yes' is not 0 or 1"),
        ("-0.5\t1.5\t0\t0", "negative"),
    ],
)
def test_read_cycles_rejects_bad_lines_naming_file_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "101_1b1_Al_sc_Meditron.txt"
    path.write_text(f"0.1\t0.9\t0\t0\n{line}\n")
    with pytest.raises(DataError) as raised:
        read_cycles(path)
    assert raised.value.path == path
    assert raised.value.message.startswith("line 2: ") and fragment in raised.value.message


def test_read_cycles_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("\n")
    with pytest.raises(DataError, match="no respiratory cycles"):
        read_cycles(path)


def test_read_cycles_clamps_ends_within_tolerance_and_rejects_later_ones(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(f"0.1\t0.9\t0\t0\n0.9\t{2.0 + END_TOLERANCE_S / 2}\t0\t0\n")
    assert read_cycles(path, duration_s=2.0)[-1] == cycle(0.9, 2.0)
    assert read_cycles(path)[-1].end_s == 2.0 + END_TOLERANCE_S / 2
    with pytest.raises(DataError, match="line 2: cycle ends at .* past the end of the 1.9000 s recording"):
        read_cycles(path, duration_s=1.9)


# --- bad inputs through read_icbhi -------------------------------------------------------------------


def test_bad_annotation_line_is_reported_or_skipped(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    txt = root / "ICBHI_final_database" / "104_1b1_Ar_sc_Litt3200.txt"
    txt.write_text("0.1\t0.9\t0\t0\n0.9\t0.5\t0\t0\n")
    assert_bad(root, txt, "line 2: end 0.5 s is not after start 0.9 s", {"104_1b1_Ar_sc_Litt3200"})


def test_cycle_past_the_audio_end(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    folder = root / "ICBHI_final_database"
    write_recording(folder, "101_1b1_Al_sc_Meditron", cycles=f"0.1\t{SECONDS + 0.004}\t0\t0\n")
    clamped = read_icbhi(root)
    assert clamped.recordings[0].events == (cycle(0.1, SECONDS),)
    assert any("101_1b1_Al_sc_Meditron (4.0 ms)" in note for note in clamped.notes)
    write_recording(folder, "101_1b1_Al_sc_Meditron", cycles=f"0.1\t{SECONDS + 0.5}\t0\t0\n")
    assert_bad(root, folder / "101_1b1_Al_sc_Meditron.txt", "line 1: cycle ends at 2.5 s", {"101_1b1_Al_sc_Meditron"})


def test_missing_demographics_row_skips_that_patients_recordings(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    demographics = root / "ICBHI_Challenge_demographic_information.txt"
    drop_line(demographics, "104\t")
    left_out = {"104_1b1_Ar_sc_Litt3200", "104_1b1_Ll_sc_Litt3200"}
    dataset = assert_bad(root, demographics, "no row for patient 104", left_out)
    assert "104" not in dataset.patients


def test_missing_diagnosis_row(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    diagnosis = root / "ICBHI_Challenge_diagnosis.txt"
    drop_line(diagnosis, "101\t")
    assert_bad(root, diagnosis, "no row for patient 101", {"101_1b1_Al_sc_Meditron"})


def test_malformed_demographics_value_names_the_line(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    demographics = root / "ICBHI_Challenge_demographic_information.txt"
    demographics.write_text(demographics.read_text().replace("101\t3\tF", "101\t3\tX"))
    assert_bad(root, demographics, "line 1: sex 'X' is not F, M or NA", {"101_1b1_Al_sc_Meditron"})


def test_unknown_location_code(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    wav = write_recording(root / "ICBHI_final_database", "101_1b1_Xx_sc_Meditron")
    with pytest.raises(DataError, match="unknown chest location 'Xx'") as raised:
        read_icbhi(root)
    assert raised.value.path == wav
    assert read_icbhi(root, skip_bad=True).problems[0].path == wav


@pytest.mark.parametrize("copy", ["extra/104_1b1_Ar_sc_Litt3200.wav", "104_1b1_Ar_sc_Litt3200.WAV"])
def test_duplicated_recording_leaves_out_every_copy(tmp_path: Path, copy: str) -> None:
    root = write_official(tmp_path)
    folder = root / "ICBHI_final_database"
    (folder / copy).parent.mkdir(exist_ok=True)
    shutil.copy(folder / "104_1b1_Ar_sc_Litt3200.wav", folder / copy)
    if (folder / copy).parent != folder:  # an upper-case .WAV shares the .txt of the original
        shutil.copy(folder / "104_1b1_Ar_sc_Litt3200.txt", (folder / copy).with_suffix(".txt"))
    with pytest.raises(DataError, match="recording 104_1b1_Ar_sc_Litt3200 found 2 times"):
        read_icbhi(root)
    dataset = read_icbhi(root, skip_bad=True)
    assert "104_1b1_Ar_sc_Litt3200" not in {r.recording_id for r in dataset.recordings}
    assert {p.path for p in dataset.problems} == {folder / "104_1b1_Ar_sc_Litt3200.wav", folder / copy}


# --- official split ----------------------------------------------------------------------------------


def test_split_entry_differing_only_in_device_is_matched_and_noted(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    split = root / "ICBHI_challenge_train_test.txt"
    split.write_text(split.read_text().replace("104_1b1_Ll_sc_Litt3200", "104_1b1_Ll_sc_Meditron"))
    dataset = read_icbhi(root)
    assert {r.recording_id: r.official_split for r in dataset.recordings}["104_1b1_Ll_sc_Litt3200"] == "test"
    assert any("104_1b1_Ll_sc_Litt3200 is listed as 104_1b1_Ll_sc_Meditron" in note for note in dataset.notes)


def test_recording_missing_from_the_split_file(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    split = root / "ICBHI_challenge_train_test.txt"
    drop_line(split, "223_")
    assert_bad(root, split, "recording 223_1b1_Ar_sc_Meditron is not listed", {"223_1b1_Ar_sc_Meditron"})


def test_patients_on_both_sides_of_the_split_are_noted(tmp_path: Path) -> None:
    dataset = read_icbhi(write_official(tmp_path))
    assert any("patients 104 have recordings in both train and test" in note for note in dataset.notes)
    assert {r.recording_id: r.official_split for r in dataset.recordings if r.patient_id == "104"} == {
        "104_1b1_Ar_sc_Litt3200": "train",
        "104_1b1_Ll_sc_Litt3200": "test",
    }


def test_bad_split_value_is_an_error(tmp_path: Path) -> None:
    root = write_official(tmp_path)
    split = root / "ICBHI_challenge_train_test.txt"
    split.write_text(split.read_text().replace("test", "valid", 1))
    with pytest.raises(DataError, match="line 1: split 'valid'"):
        read_icbhi(root)
