"""PhysioNet/CinC 2016 reader: the real shared subset, and the bad inputs of its layout on small synthetic folders
(damaged audio: `test_sources_bad_input.py`, for every source)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from lungheart_cl.data.records import DataError, SourceDataset
from lungheart_cl.data.sources import get_spec
from lungheart_cl.data.sources.physionet2016 import SUBJECT_NOTE, VALIDATION_NOTE, read_physionet2016
from lungheart_cl.data.sources.wfdb_header import read_wfdb_header

RATE = 2000
FRAMES = 400
# Synthetic layout: two folders, a0001 with an ECG .dat like the real training-a.
LABELS = {"training-a": {"a0001": "1", "a0002": "-1"}, "training-b": {"b0001": "-1"}}


def _write_header(folder: Path, record: str, *, rate: int = RATE, frames: int = FRAMES, ecg: bool = False) -> None:
    lines = [f"{record} {2 if ecg else 1} {rate} {frames}", f"{record}.wav 16+44 1 16 0 0 0 0 PCG"]
    if ecg:
        lines.append(f"{record}.dat 16 1000 16 0 0 0 0 ECG")
    # The real headers end with a label comment and use CRLF line endings.
    (folder / f"{record}.hea").write_bytes(("\r\n".join([*lines, "# Normal"]) + "\r\n").encode())


def _write_record(folder: Path, record: str, *, ecg: bool = False) -> None:
    sf.write(folder / f"{record}.wav", np.zeros(FRAMES, dtype=np.int16), RATE, subtype="PCM_16")
    _write_header(folder, record, ecg=ecg)
    if ecg:
        (folder / f"{record}.dat").write_bytes(np.arange(FRAMES, dtype=np.int16).tobytes())


def _write_reference(folder: Path, rows: list[str]) -> None:
    (folder / "REFERENCE.csv").write_text("".join(f"{row}\n" for row in rows))


def _make_root(tmp_path: Path) -> Path:
    root = tmp_path / "physionet2016"
    for name, labels in LABELS.items():
        folder = root / name
        folder.mkdir(parents=True)
        for record in labels:
            _write_record(folder, record, ecg=record == "a0001")
        _write_reference(folder, [f"{record},{label}" for record, label in labels.items()])
    return root


def test_synthetic_layout_reads(tmp_path: Path) -> None:
    dataset = read_physionet2016(_make_root(tmp_path))
    by_id = {recording.recording_id: recording for recording in dataset.recordings}
    assert sorted(by_id) == ["a0001", "a0002", "b0001"]
    assert by_id["a0001"].extra == {"label": "abnormal"} and by_id["a0002"].extra == {"label": "normal"}
    assert by_id["b0001"].source == by_id["b0001"].device == "training-b"
    assert all(r.patient_id == r.recording_id and r.location == "unknown" for r in dataset.recordings)
    assert all((r.sample_rate, r.num_frames) == (RATE, FRAMES) for r in dataset.recordings)
    assert set(dataset.patients) == set(by_id)
    assert dataset.patients["a0001"].age_group == "unknown"
    assert dataset.notes == [SUBJECT_NOTE] and dataset.problems == []


def test_registry_returns_this_reader() -> None:
    assert get_spec("physionet2016").read is read_physionet2016


def test_validation_folder_is_noted_not_read(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    validation = root / "validation"
    validation.mkdir()
    _write_record(validation, "a0002")
    _write_reference(validation, ["a0002,-1"])
    dataset = read_physionet2016(root)
    assert len(dataset.recordings) == 3
    assert VALIDATION_NOTE in dataset.notes


def test_root_without_training_folders_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no training-"):
        read_physionet2016(tmp_path)


@pytest.mark.parametrize("skip_bad", [False, True])
def test_missing_reference_always_raises(tmp_path: Path, skip_bad: bool) -> None:
    root = _make_root(tmp_path)
    (root / "training-b" / "REFERENCE.csv").unlink()
    with pytest.raises(DataError) as raised:
        read_physionet2016(root, skip_bad=skip_bad)
    assert raised.value.path == root / "training-b" / "REFERENCE.csv"


def _wav_rate_differs(root: Path) -> None:
    folder = root / "training-a"
    sf.write(folder / "a0002.wav", np.zeros(FRAMES, dtype=np.int16), 4000, subtype="PCM_16")


def _wav_length_differs(root: Path) -> None:
    _write_header(root / "training-a", "a0002", frames=999)


def _wav_missing(root: Path) -> None:
    (root / "training-a" / "a0002.wav").unlink()


def _header_names_other_record(root: Path) -> None:
    path = root / "training-a" / "a0002.hea"
    path.write_text(path.read_text().replace("a0002 1", "a0009 1"))


def _wav_without_row(root: Path) -> None:
    _write_record(root / "training-a", "a0003")


def _label_unknown(root: Path) -> None:
    _write_reference(root / "training-a", ["a0001,1", "a0002,0"])


def _line_malformed(root: Path) -> None:
    _write_reference(root / "training-a", ["a0001,1", "a0002;-1"])


def _record_in_two_folders(root: Path) -> None:
    _write_record(root / "training-b", "a0001")
    _write_reference(root / "training-b", ["b0001,-1", "a0001,1"])


# (corruption, file the error must name, fragments of its message, recordings kept with skip_bad)
BAD_INPUTS: dict[str, tuple[Callable[[Path], None], str, tuple[str, ...], int]] = {
    "wrong_sample_rate": (_wav_rate_differs, "training-a/a0002.wav", ("4000 Hz", "2000 Hz", "a0002.hea"), 2),
    "wrong_length": (_wav_length_differs, "training-a/a0002.wav", (f"{FRAMES} frames", "999 samples"), 2),
    "wav_missing": (_wav_missing, "training-a/a0002.wav", ("REFERENCE.csv line 2", "missing"), 2),
    "header_other_record": (_header_names_other_record, "training-a/a0002.hea", ("'a0009'",), 2),
    "wav_without_row": (_wav_without_row, "training-a/a0003.wav", ("no row",), 3),
    "label_unknown": (_label_unknown, "training-a/REFERENCE.csv", ("line 2", "'0'"), 2),
    "line_malformed": (_line_malformed, "training-a/REFERENCE.csv", ("line 2", "a0002;-1"), 2),
    "duplicate_record": (_record_in_two_folders, "training-b/REFERENCE.csv", ("line 2", "duplicated", "training-a"), 3),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_raises_naming_the_file(tmp_path: Path, case: str) -> None:
    corrupt, bad_file, fragments, _ = BAD_INPUTS[case]
    root = _make_root(tmp_path)
    corrupt(root)
    with pytest.raises(DataError) as raised:
        read_physionet2016(root)
    assert raised.value.path == root / bad_file
    assert all(fragment in raised.value.message for fragment in fragments), raised.value.message


# a malformed REFERENCE.csv line also leaves its wav without a row: a second problem, named too
ALSO_NAMED = {"line_malformed": ["training-a/a0002.wav"]}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_skipped_as_problem(tmp_path: Path, case: str) -> None:
    corrupt, bad_file, _, kept = BAD_INPUTS[case]
    root = _make_root(tmp_path)
    corrupt(root)
    dataset = read_physionet2016(root, skip_bad=True)
    assert len(dataset.recordings) == kept
    assert [problem.path for problem in dataset.problems] == [root / f for f in [bad_file, *ALSO_NAMED.get(case, [])]]
    assert set(dataset.patients) == {recording.patient_id for recording in dataset.recordings}


@pytest.fixture(scope="module")
def real(shared_data: Path) -> SourceDataset:
    return read_physionet2016(shared_data / "physionet2016")


@pytest.mark.shared_data
def test_real_subset_counts(real: SourceDataset) -> None:
    assert len(real.recordings) == 1099
    assert Counter(r.extra["label"] for r in real.recordings) == {"abnormal": 482, "normal": 617}
    per_folder = Counter((r.source, r.extra["label"]) for r in real.recordings)
    expected = {
        "training-a": (292, 117),
        "training-b": (104, 386),
        "training-c": (24, 7),
        "training-d": (28, 27),
        "training-f": (34, 80),
    }
    assert {folder: (per_folder[folder, "abnormal"], per_folder[folder, "normal"]) for folder in expected} == expected
    assert {r.sample_rate for r in real.recordings} == {2000}
    assert real.problems == [] and real.notes == [SUBJECT_NOTE]
    assert len(real.patients) == 1099


@pytest.mark.shared_data
def test_real_a0001_parsed_despite_its_ecg(real: SourceDataset, shared_data: Path) -> None:
    header = read_wfdb_header(shared_data / "physionet2016" / "training-a" / "a0001.hea")
    assert [(s.file_name, s.description) for s in header.signals] == [("a0001.wav", "PCG"), ("a0001.dat", "ECG")]
    a0001 = next(r for r in real.recordings if r.recording_id == "a0001")
    assert (a0001.extra["label"], a0001.num_frames, a0001.audio_path.suffix) == ("abnormal", 71332, ".wav")
