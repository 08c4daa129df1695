"""Synthetic datasets: official layouts that the readers read back, determinism, atomic writes, and
labels that a crude spectral classifier learns only moderately well."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lungheart_cl.data.records import SourceDataset
from lungheart_cl.data.sources.circor2022 import read_circor2022
from lungheart_cl.data.sources.icbhi import read_icbhi
from lungheart_cl.data.sources.physionet2016 import read_physionet2016
from lungheart_cl.bench.common import ICBHI_SIZED
from lungheart_cl.data.synthetic import icbhi, synthesize

# --- line formats of the official files, checked on the real files too --------------------------------

NUMBER = r"\d+(?:\.\d+)?"
ICBHI_NAME = r"\d{3}_\d[bp]\d_(?:Tc|Al|Ar|Pl|Pr|Ll|Lr)_(?:sc|mc)_(?:Meditron|LittC2SE|Litt3200|AKGC417L)"
ICBHI_FORMATS = {
    "ICBHI_Challenge_demographic_information.txt": (
        "CRLF", rf"\d{{3}}\t(?:NA|{NUMBER})\t(?:F|M|NA)(?:\t(?:NA|{NUMBER})){{3}}"
    ),
    "ICBHI_Challenge_diagnosis.txt": (
        "LF", r"\d{3}\t(?:Healthy|COPD|URTI|Pneumonia|Bronchiectasis|Asthma|LRTI|Bronchiolitis)"
    ),
    "ICBHI_challenge_train_test.txt": ("CRLF", rf"{ICBHI_NAME}\t(?:train|test)"),
    "ICBHI_final_database/*.txt": ("LF", rf"{NUMBER}\t{NUMBER}\t[01]\t[01]"),
}
PHYSIONET_FORMATS = {
    "training-b/*.hea": ("CRLF", r"b\d{4} 1 2000 \d+|b\d{4}\.wav 16\+44 1 16 0 0 0 0 PCG|# (?:Normal|Abnormal)"),
    "training-b/REFERENCE.csv": ("LF", r"b\d{4},(?:1|-1)"),
    "training-b/RECORDS*": ("LF", r"b\d{4}"),
    "training-b/SHA256SUMS": (
        "LF", r"[0-9a-f]{64}  (?:b\d{4}\.(?:wav|hea)|RECORDS(?:-normal|-abnormal)?|REFERENCE\.csv)"
    ),
}
CIRCOR_LOCATION = r"(?:AV|PV|TV|MV|Phc)"
CIRCOR_FILE = rf"\d+_{CIRCOR_LOCATION}(?:_\d)?"
CIRCOR_FORMATS = {
    "training_data/*.txt": (
        "CRLF",
        rf"\d+ \d+ 4000"
        rf"|{CIRCOR_LOCATION} {CIRCOR_FILE}\.hea {CIRCOR_FILE}\.wav(?: {CIRCOR_FILE}\.tsv)?"
        r"|#[A-Za-z ]+: \S.*",
    ),
    "training_data/*.hea": (
        "CRLF", rf"{CIRCOR_FILE} 1 4000 \d+|{CIRCOR_FILE}\.wav 16\+44 1 16 0 0 0 0 {CIRCOR_LOCATION}"
    ),
    # LF, but a few real files are CRLF (50115_PV_1.tsv); checked: the segmentation files headers list.
    "training_data/*.tsv": ("LF or CRLF", rf"{NUMBER}\t{NUMBER}\t[0-4]"),
}
CIRCOR_COLUMNS = (
    "Patient ID,Locations,Age,Sex,Height,Weight,Pregnancy status,Murmur,Murmur locations,Most audible location,"
    "Systolic murmur timing,Systolic murmur shape,Systolic murmur grading,Systolic murmur pitch,"
    "Systolic murmur quality,Diastolic murmur timing,Diastolic murmur shape,Diastolic murmur grading,"
    "Diastolic murmur pitch,Diastolic murmur quality,Campaign,Additional ID"
)


def assert_text_format(path: Path, newline: str, line_pattern: str) -> None:
    """Every line ends with `newline` ("LF or CRLF": the same one throughout the file; CirCor patient
    headers excepted: no final newline) and matches `line_pattern`."""
    data = path.read_bytes()
    crlf, lf = data.count(b"\r\n"), data.count(b"\n")
    expected = {"CRLF": (lf,), "LF": (0,), "LF or CRLF": (0, lf)}[newline]
    assert crlf in expected, f"{path}: not all {newline} line endings"
    for line in data.decode("ascii").splitlines():
        assert re.fullmatch(line_pattern, line), f"{path}: line {line!r} does not match {line_pattern}"


def assert_formats(root: Path, formats: dict[str, tuple[str, str]], skip: frozenset[str] = frozenset()) -> None:
    for pattern, (newline, line_pattern) in formats.items():
        paths = sorted(path for path in root.glob(pattern) if path.name not in skip)
        assert paths, f"no {pattern} under {root}"
        for path in paths:
            assert_text_format(path, newline, line_pattern)


def circor_unlisted_files(root: Path) -> set[str]:
    """Files of training_data/ that no patient header names (stray files)."""
    data = root / "training_data"
    listed = {name for header in data.glob("*.txt") for line in header.read_text().splitlines()
              if not line.startswith("#") for name in line.split()[1:]}
    return {path.name for path in data.iterdir() if path.suffix != ".txt" and path.name not in listed}


def circor_segmentation_quirks(root: Path) -> tuple[set[str], set[str]]:
    """The listed .tsv files with CRLF endings, and those ending with a zero-length segment."""
    strays = circor_unlisted_files(root)
    paths = [path for path in (root / "training_data").glob("*.tsv") if path.name not in strays]
    crlf = {path.name for path in paths if b"\r\n" in path.read_bytes()}
    zero_length_end = {path.name for path in paths if np.ptp(np.loadtxt(path, ndmin=2)[-1, :2]) == 0}
    return crlf, zero_length_end


def wav_header(path: Path) -> dict[str, int | bytes]:
    """The fields of a canonical 44-byte PCM WAV header."""
    fields = struct.unpack("<4sI4s4sIHHIIHH4sI", path.read_bytes()[:44])
    names = ("riff", "riff_size", "wave", "fmt", "fmt_size", "format", "channels", "rate", "byte_rate",
             "block_align", "bits", "data", "data_size")
    return dict(zip(names, fields))


def assert_plain_pcm_wav(path: Path) -> None:
    """Mono PCM with a 16-byte fmt chunk and the data right after it, as every real file has."""
    header = wav_header(path)
    size = path.stat().st_size
    assert (header["riff"], header["wave"], header["fmt"], header["data"]) == (b"RIFF", b"WAVE", b"fmt ", b"data")
    assert (header["fmt_size"], header["format"], header["channels"]) == (16, 1, 1)
    assert header["bits"] in (16, 24) and header["block_align"] == header["bits"] // 8
    assert header["byte_rate"] == header["rate"] * header["block_align"]
    assert (header["riff_size"], header["data_size"]) == (size - 8, size - 44)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# --- fixtures: one small dataset of each kind, shared by the tests of this module -------------------------


@pytest.fixture(scope="module")
def icbhi_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize("icbhi", tmp_path_factory.mktemp("synthetic") / "icbhi", patients=12, seed=0)


@pytest.fixture(scope="module")
def physionet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize("physionet2016", tmp_path_factory.mktemp("synthetic") / "physionet2016", patients=24, seed=0)


@pytest.fixture(scope="module")
def circor_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize("circor2022", tmp_path_factory.mktemp("synthetic") / "circor2022", patients=20, seed=0)


# --- official layouts ----------------------------------------------------------------------------------


def test_icbhi_layout_and_file_formats(icbhi_root: Path) -> None:
    assert sorted(path.name for path in icbhi_root.iterdir()) == sorted(
        ["ICBHI_final_database", *(name for name in ICBHI_FORMATS if "/" not in name)]
    )
    assert_formats(icbhi_root, ICBHI_FORMATS)
    audio = icbhi_root / "ICBHI_final_database"
    wavs = sorted(audio.glob("*.wav"))
    assert {path.stem for path in wavs} == {path.stem for path in audio.glob("*.txt")}
    assert all(re.fullmatch(ICBHI_NAME, path.stem) for path in wavs)
    listed = (icbhi_root / "ICBHI_challenge_train_test.txt").read_text().split()[::2]
    assert listed == [path.stem for path in wavs]
    for path in wavs:
        assert_plain_pcm_wav(path)
    assert {wav_header(path)["bits"] for path in wavs} == {16, 24}


def test_physionet_layout_and_file_formats(physionet_root: Path) -> None:
    folders = sorted(path.name for path in physionet_root.iterdir())
    assert folders == [f"training-{letter}" for letter in "abcdef"]
    assert_formats(physionet_root, PHYSIONET_FORMATS)
    for folder in physionet_root.iterdir():
        records = (folder / "RECORDS").read_text().split()
        assert sorted(path.stem for path in folder.glob("*.wav")) == records
        labelled = dict(line.split(",") for line in (folder / "REFERENCE.csv").read_text().split())
        assert (folder / "RECORDS-abnormal").read_text().split() == [r for r in records if labelled[r] == "1"]
        assert (folder / "RECORDS-normal").read_text().split() == [r for r in records if labelled[r] == "-1"]
        sums = [line.split("  ") for line in (folder / "SHA256SUMS").read_text().splitlines()]
        others = sorted(path.name for path in folder.iterdir() if path.name != "SHA256SUMS")
        assert [name for _, name in sums] == others
        for record in records:
            assert_plain_pcm_wav(folder / f"{record}.wav")
            status = "Abnormal" if labelled[record] == "1" else "Normal"
            assert (folder / f"{record}.hea").read_text().splitlines()[-1] == f"# {status}"


def test_circor_layout_and_file_formats(circor_root: Path) -> None:
    assert sorted(path.name for path in circor_root.iterdir()) == ["training_data", "training_data.csv"]
    strays = circor_unlisted_files(circor_root)
    assert strays and all(re.fullmatch(rf"\d+_{CIRCOR_LOCATION}\.tsv", name) for name in strays)
    assert_formats(circor_root, CIRCOR_FORMATS, skip=frozenset(strays))
    crlf, zero_length_end = circor_segmentation_quirks(circor_root)
    assert len(crlf) == 1 and len(zero_length_end) == 1  # the real files' quirks, each once in 20 patients
    assert (circor_root / "training_data.csv").read_text().splitlines()[0] == CIRCOR_COLUMNS
    data = circor_root / "training_data"
    headers = sorted(data.glob("*.txt"))
    assert not any(path.read_bytes().endswith(b"\n") for path in headers)
    names = {path.stem for path in data.glob("*.wav")}
    assert {path.stem for path in data.glob("*.hea")} == names
    assert any(name.endswith("_1") for name in names) and any("_Phc" in name for name in names)
    assert 0 < len(names - {path.stem for path in data.glob("*.tsv")}) < len(names) / 10
    for name in names:
        assert_plain_pcm_wav(data / f"{name}.wav")


def test_segmentation_covers_the_recording_and_marks_the_heart_sounds(circor_root: Path) -> None:
    louder = []
    strays = circor_unlisted_files(circor_root)
    for tsv in sorted((circor_root / "training_data").glob("*.tsv")):
        if tsv.name in strays:
            continue
        rows = np.loadtxt(tsv, ndmin=2)
        if rows[-1, 0] == rows[-1, 1]:  # a zero-length final segment, as some real files end
            rows = rows[:-1]
        audio, rate = sf.read(tsv.with_suffix(".wav"))
        assert rows[0, 0] == 0 and rows[-1, 1] == pytest.approx(audio.size / rate, abs=1e-6)
        assert np.array_equal(rows[1:, 0], rows[:-1, 1])
        states = rows[:, 2].astype(int)
        assert states[0] == states[-1] == 0 and list(states[1:-1]) == [1, 2, 3, 4] * ((len(states) - 2) // 4)
        power = {state: [] for state in range(1, 5)}
        for start, end, state in rows[1:-1]:
            power[int(state)].append(np.mean(audio[round(start * rate) : round(end * rate)] ** 2))
        louder.append(min(np.mean(power[1]), np.mean(power[3])) > np.mean(power[4]))
    # S1 and S2 stand out from diastole except in the noisiest recordings.
    assert np.mean(louder) > 0.9


@pytest.mark.shared_data
def test_line_formats_hold_for_the_real_files(shared_data: Path) -> None:
    """The patterns the synthetic files are held to are those of the real releases."""
    assert_formats(shared_data / "icbhi", ICBHI_FORMATS)
    assert_formats(shared_data / "physionet2016", PHYSIONET_FORMATS)
    circor = shared_data / "circor2022"
    # 50782_MV.tsv ("0 0 28") is the one real stray file; the reader notes and ignores it.
    assert circor_unlisted_files(circor) == {"50782_MV.tsv"}
    assert_formats(circor, CIRCOR_FORMATS, skip=frozenset({"50782_MV.tsv"}))
    # Of the 200 patients' segmentation files, one is CRLF and one ends with a zero-length segment.
    assert circor_segmentation_quirks(circor) == ({"50115_PV_1.tsv"}, {"50647_PV.tsv"})
    assert (circor / "training_data.csv").read_text().splitlines()[0] == CIRCOR_COLUMNS
    for wav in (
        "icbhi/ICBHI_final_database/101_1b1_Al_sc_Meditron.wav",  # 24-bit
        "icbhi/ICBHI_final_database/104_1b1_Al_sc_Litt3200.wav",
        "physionet2016/training-b/b0001.wav",
        "circor2022/training_data/33151_AV.wav",
    ):
        assert_plain_pcm_wav(shared_data / wav)


# --- read back through the official readers ------------------------------------------------------------


def assert_varied(dataset: SourceDataset, patients: int) -> None:
    assert dataset.problems == []
    assert len(dataset.patients) == patients


def test_icbhi_reads_back_with_varied_patients_devices_and_labels(icbhi_root: Path) -> None:
    dataset = read_icbhi(icbhi_root)
    assert_varied(dataset, 12)
    patients = dataset.patients.values()
    assert {"female", "male"} <= {p.sex for p in patients}
    assert {"child", "adult"} <= {p.age_group for p in patients}
    assert any(p.age_years is None or (p.extra["bmi"] is None and p.extra["weight_kg"] is None) for p in patients)
    diagnoses = {p.extra["diagnosis"] for p in patients}
    assert "Healthy" in diagnoses and len(diagnoses) >= 4
    recordings = dataset.recordings
    assert {r.device for r in recordings} == {"Meditron", "LittC2SE", "Litt3200", "AKGC417L"}
    assert len({r.sample_rate for r in recordings}) >= 2 and {r.extra["acquisition_mode"] for r in recordings} == {"sc", "mc"}
    assert {r.official_split for r in recordings} == {"train", "test"}
    assert all(r.events for r in recordings)
    events = [e for r in recordings for e in r.events]
    crackles, wheezes = [e.extra["crackle"] for e in events], [e.extra["wheeze"] for e in events]
    assert any(crackles) and any(wheezes) and not all(crackles)


def test_physionet_reads_back_with_both_labels_and_six_devices(physionet_root: Path) -> None:
    dataset = read_physionet2016(physionet_root)
    assert_varied(dataset, 24)
    assert {r.extra["label"] for r in dataset.recordings} == {"normal", "abnormal"}
    assert len({r.device for r in dataset.recordings}) == 6
    assert {r.sample_rate for r in dataset.recordings} == {2000}
    assert all(5 <= r.duration_s <= 60 for r in dataset.recordings)


def test_circor_reads_back_with_varied_patients_and_murmurs(circor_root: Path) -> None:
    dataset = read_circor2022(circor_root)
    assert_varied(dataset, 20)
    patients = dataset.patients.values()
    assert {p.extra["murmur"] for p in patients} == {"present", "absent", "unknown"}
    assert {"female", "male"} <= {p.sex for p in patients}
    assert {"infant", "child", "adolescent"} <= {p.age_group for p in patients}
    assert any(p.extra["pregnant"] for p in patients)
    assert {r.location for r in dataset.recordings} == {"AV", "PV", "TV", "MV", "Phc"}
    assert {r.sample_rate for r in dataset.recordings} == {4000}
    assert all(5 <= r.duration_s <= 30 for r in dataset.recordings)


def test_icbhi_sized_preset_plans_the_size_of_the_real_database() -> None:
    """Planned only (writing it takes ~40 s): ~920 recordings, ~5.5 h, at 4, 10 and 44.1 kHz."""
    roster = icbhi.make_patients(0, ICBHI_SIZED["patients"])
    recordings = icbhi.plan_recordings(0, roster, ICBHI_SIZED["recordings_per_patient"], ICBHI_SIZED["duration_s"])
    assert len(roster) == 126 and len(recordings) == 920
    assert 5.0 < sum(r.duration_s for r in recordings) / 3600 < 6.0
    assert {r.patient.sample_rate for r in recordings} == {4000, 10000, 44100}


# --- reproducibility and atomic writes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "options"),
    [("icbhi", {"recordings_per_patient": 1, "duration_s": 6.0}), ("physionet2016", {}), ("circor2022", {})],
)
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, dataset: str, options: dict) -> None:
    first = file_bytes(synthesize(dataset, tmp_path / "a", patients=3, seed=7, **options))
    again = file_bytes(synthesize(dataset, tmp_path / "b", patients=3, seed=7, **options))
    other = file_bytes(synthesize(dataset, tmp_path / "c", patients=3, seed=8, **options))
    assert first == again
    assert first != other


def test_a_run_failing_half_way_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = []

    def write_then_fail(folder: Path, recording: icbhi.IcbhiRecording, seed: int) -> None:
        if len(written) == 2:
            raise RuntimeError("disk full")
        written.append(recording.name)
        write_recording(folder, recording, seed)

    write_recording = icbhi.write_recording
    monkeypatch.setattr(icbhi, "write_recording", write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize("icbhi", tmp_path / "icbhi", patients=3, recordings_per_patient=2)
    assert len(written) == 2
    assert list(tmp_path.iterdir()) == []


def test_an_existing_dataset_is_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "physionet2016"
    (root / "training-a").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        synthesize("physionet2016", root, patients=2)
    assert [path.name for path in root.iterdir()] == ["training-a"]
    with pytest.raises(ValueError, match="unknown dataset"):
        synthesize("mimic", tmp_path / "mimic", patients=2)


# --- learnable, but not from crude spectral statistics alone --------------------------------------------


def log_band_energies(signal: np.ndarray, rate: int, edges_hz: np.ndarray) -> np.ndarray:
    """Log energy of `signal` in each band between consecutive `edges_hz` (one FFT)."""
    power = np.abs(np.fft.rfft(signal)) ** 2
    band = np.digitize(np.fft.rfftfreq(signal.size, 1 / rate), edges_hz) - 1
    inside = (band >= 0) & (band < edges_hz.size - 1)
    return np.log(np.bincount(band[inside], weights=power[inside], minlength=edges_hz.size - 1) + 1e-12)


def cross_validated_auroc(features: np.ndarray, labels: np.ndarray, patients: np.ndarray) -> float:
    """Mean AUROC of a logistic regression over 5 folds that never split a patient."""
    scores = []
    for train, test in GroupKFold(5).split(features, labels, patients):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features[train], labels[train])
        scores.append(roc_auc_score(labels[test], model.predict_proba(features[test])[:, 1]))
    return float(np.mean(scores))


def test_lung_cycles_are_learnable_but_not_trivially(tmp_path: Path) -> None:
    """Crackle-or-wheeze per cycle from log band energies, normalised per recording."""
    dataset = read_icbhi(synthesize("icbhi", tmp_path / "icbhi", patients=60, seed=0))
    edges = np.geomspace(60, 2000, 13)
    features, labels, patients = [], [], []
    for recording in dataset.recordings:
        audio, rate = sf.read(recording.audio_path, dtype="float32")
        cycles = [audio[round(e.start_s * rate) : round(e.end_s * rate)] for e in recording.events]
        energies = np.array([log_band_energies(cycle, rate, edges) for cycle in cycles])
        # Per-recording normalisation removes the device, the patient and the gain, not the events.
        features.extend(energies - energies.mean(axis=0))
        labels += [e.extra["crackle"] or e.extra["wheeze"] for e in recording.events]
        patients += [recording.patient_id] * len(cycles)
    auroc = cross_validated_auroc(np.array(features), np.array(labels), np.array(patients))
    assert 0.6 < auroc < 0.98, auroc


def test_patient_diagnosis_shows_in_the_breathing_of_every_cycle(tmp_path: Path) -> None:
    """Healthy vs disease (the study's task) per cycle, from its loudness envelope alone: the
    diagnosis changes expiration and breath character in every cycle, not only in the few with
    crackles or wheezes, so a patient-level label is learnable from held-out patients."""
    dataset = read_icbhi(synthesize("icbhi", tmp_path / "icbhi", patients=60, seed=0))
    features, labels, patients = [], [], []
    for recording in dataset.recordings:
        audio, rate = sf.read(recording.audio_path, dtype="float64")
        for event in recording.events:
            frames = np.array_split(audio[round(event.start_s * rate) : round(event.end_s * rate)] ** 2, 12)
            log_energy = np.log([frame.mean() + 1e-12 for frame in frames])
            features.append(log_energy - log_energy.max())  # the shape, not the gain
            labels.append(dataset.patients[recording.patient_id].extra["diagnosis"] != "Healthy")
            patients.append(recording.patient_id)
    auroc = cross_validated_auroc(np.array(features), np.array(labels), np.array(patients))
    assert 0.9 < auroc < 0.995, auroc


def test_heart_recordings_are_learnable_but_not_trivially(tmp_path: Path) -> None:
    """Normal vs abnormal per recording from the shape of its log band energies."""
    dataset = read_physionet2016(synthesize("physionet2016", tmp_path / "physionet2016", patients=240, seed=0))
    edges = np.geomspace(25, 1000, 13)
    features, labels = [], []
    for recording in dataset.recordings:
        audio, rate = sf.read(recording.audio_path, dtype="float32")
        energies = log_band_energies(audio, rate, edges)
        # The spectral shape, not the level: the gain is random.
        features.append(energies - energies.mean())
        labels.append(recording.extra["label"] == "abnormal")
    patients = np.array([recording.patient_id for recording in dataset.recordings])
    auroc = cross_validated_auroc(np.array(features), np.array(labels), patients)
    assert 0.6 < auroc < 0.98, auroc
