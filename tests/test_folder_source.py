"""The folder source: any tree of audio files, a metadata CSV or a file-name pattern, every bad input, and the
path users take through the CLI (data inspect, pretrain without labels, finetune on the CSV's labels, predict)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungheart_cl.data.audio import resample
from lungheart_cl.data.datamodule import ClassificationDataModule, PretrainDataModule
from lungheart_cl.data.records import DataError
from lungheart_cl.data.sources import Source, get_spec
from lungheart_cl.data.sources.folder import read_folder
from lungheart_cl.data.synthetic import synthesize
from lungheart_cl.errors import ConfigError, MissingPathError
from lungheart_cl.lightning_cli import make_cli

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
HEADER = "path,patient,location,age_group,sex,device,label"


@pytest.fixture(scope="module")
def heart(tmp_path_factory) -> list[tuple[np.ndarray, int, str]]:
    """Synthetic heart sounds (audio, rate, label), from the PhysioNet 2016 writer."""
    root = synthesize("physionet2016", tmp_path_factory.mktemp("heart") / "pn", patients=12)
    dataset = Source("physionet2016", root).read()
    return [(*sf.read(r.audio_path, dtype="float32"), r.extra["label"]) for r in dataset.recordings]


def _write(path: Path, audio: np.ndarray, rate: int, *, stereo: bool = False, new_rate: int | None = None) -> Path:
    """One recording in the format its suffix names, optionally as stereo or at another rate."""
    if new_rate is not None:
        audio, rate = resample(audio, rate, new_rate), new_rate
    if stereo:  # two channels whose mean is the sound, each far from it (a 100 Hz tone as loud as the sound)
        tone = audio.std() * np.sin(2 * np.pi * 100 * np.arange(len(audio)) / rate).astype(np.float32)
        audio = np.stack([audio + tone, audio - tone], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = {".ogg": "VORBIS", ".mp3": "MPEG_LAYER_III", ".flac": "PCM_16"}.get(path.suffix, "PCM_16")
    sf.write(path, audio, rate, subtype=subtype)
    return path


@pytest.fixture
def mixed(heart, tmp_path) -> Path:
    """wav, flac, ogg, mp3, stereo, 44.1 kHz, a sub-folder; plus files that are no recordings of it."""
    root = tmp_path / "mine"
    (audio, rate, _), *_ = heart
    _write(root / "a.wav", audio, rate)
    _write(root / "b.flac", heart[1][0], rate)
    _write(root / "c.ogg", heart[2][0], rate)
    _write(root / "d.mp3", heart[3][0], rate, new_rate=8000)
    _write(root / "sub" / "e.wav", heart[4][0], rate, stereo=True, new_rate=44100)
    _write(root / ".hidden" / "f.wav", heart[5][0], rate)
    (root / "notes.txt").write_text("not a recording\n")
    return root


def _labelled(heart, root: Path, rows: int = 12) -> Path:
    """P{n}_{site}.wav recordings with a metadata CSV giving patient, site, age group, sex, device and label."""
    lines = [HEADER]
    for i, (audio, rate, label) in enumerate(heart[:rows]):
        patient, site = f"P{i // 2:02d}", ("apex", "base")[i % 2]
        _write(root / f"{patient}_{site}.wav", audio, rate)
        lines.append(f"{patient}_{site}.wav,{patient},{site},{('child', 'adult')[i // 2 % 2]},"
                     f"{'FM'[i // 2 % 2]},steth{i % 3},{label}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_any_tree_of_audio_files_is_read_each_file_its_own_patient(mixed):
    dataset = read_folder(mixed)
    by_id = {r.recording_id: r for r in dataset.recordings}
    assert sorted(by_id) == ["a.wav", "b.flac", "c.ogg", "d.mp3", "sub/e.wav"]  # hidden folders and .txt left out
    assert all(r.patient_id == r.recording_id for r in dataset.recordings) and len(dataset.patients) == 5
    assert {r.sample_rate for r in dataset.recordings} == {2000, 8000, 44100}
    assert (by_id["sub/e.wav"].num_channels, by_id["a.wav"].num_channels) == (2, 1)
    assert {r.extra["label"] for r in dataset.recordings} == {None} and dataset.problems == []
    assert Source("folder", mixed).task() is None  # unlabelled unless told otherwise


def test_every_format_is_cached_as_mono_windows_at_the_cache_rate(mixed, heart, tmp_path):
    data = PretrainDataModule(dataset="folder", root=str(mixed), cache_dir=str(tmp_path / "c"), sample_rate=2000,
                              segment_seconds=4.0, hop_seconds=2.0, num_workers=0)
    data.setup("fit")
    manifest = data.manifest
    assert set(manifest["recording_id"]) == {"a.wav", "b.flac", "c.ogg", "d.mp3", "sub/e.wav"}
    assert (data.labels == -1).all() and data.num_classes == 0
    windows = manifest["recording_id"] == "a.wav"
    starts = manifest["start_s"][windows]
    np.testing.assert_allclose(starts[:3], [0.0, 2.0, 4.0])  # hop 2 s
    lossless = np.asarray(data.cache.segments[np.flatnonzero(manifest["recording_id"] == "b.flac")[0]], np.float32)
    audio = heart[1][0][:8000]
    np.testing.assert_allclose(lossless, (audio - heart[1][0].mean()) / heart[1][0].std(), atol=5e-3)
    # the stereo 44.1 kHz file: its channels' mean (the sound) back at 2 kHz, up to two resamplings
    stereo = np.asarray(data.cache.segments[np.flatnonzero(manifest["recording_id"] == "sub/e.wav")[0]], np.float32)
    sound = heart[4][0]
    expected = (sound[:8000] - sound.mean()) / sound.std()
    assert np.corrcoef(stereo, expected)[0, 1] > 0.999 and np.abs(stereo - expected).mean() < 0.005  # edges ring


def test_a_pattern_names_patient_and_site(heart, tmp_path):
    root = tmp_path / "named"
    for name in ("P01_apex.wav", "P01_base.wav", "P02_apex.wav", "sub/P03_left.flac"):
        _write(root / name, heart[0][0], heart[0][1])
    pattern = r"(?:sub/)?(?P<patient>[^_/]+)_(?P<location>\w+)\.(?:wav|flac)"
    dataset = read_folder(root, pattern=pattern)
    assert {(r.recording_id, r.patient_id, r.location) for r in dataset.recordings} == {
        ("P01_apex.wav", "P01", "apex"), ("P01_base.wav", "P01", "base"), ("P02_apex.wav", "P02", "apex"),
        ("sub/P03_left.flac", "P03", "left")}
    assert sorted(dataset.patients) == ["P01", "P02", "P03"]
    _write(root / "stray.wav", heart[0][0], heart[0][1])
    with pytest.raises(DataError) as raised:
        read_folder(root, pattern=pattern)
    assert raised.value.path == root / "stray.wav" and "does not match the pattern" in raised.value.message
    skipped = read_folder(root, pattern=pattern, skip_bad=True)
    assert len(skipped.recordings) == 4 and [p.path for p in skipped.problems] == [root / "stray.wav"]


def test_a_metadata_csv_gives_demographics_and_labels_and_the_task(heart, tmp_path):
    root = _labelled(heart, tmp_path / "labelled")
    _write(root / "unlisted.wav", heart[0][0], heart[0][1])
    dataset = read_folder(root, metadata="metadata.csv")
    first = next(r for r in dataset.recordings if r.recording_id == "P00_apex.wav")
    assert (first.patient_id, first.location, first.device) == ("P00", "apex", "steth0")
    assert (dataset.patients["P00"].age_group, dataset.patients["P00"].sex) == ("child", "female")
    assert (dataset.patients["P01"].age_group, dataset.patients["P01"].sex) == ("adult", "male")
    assert len(dataset.recordings) == 12 and len(dataset.patients) == 6
    assert any("1 audio file(s) not listed in metadata.csv, left out: unlisted.wav" in note for note in dataset.notes)
    source = Source("folder", root, {"metadata": "metadata.csv"})
    assert source.task().classes == ("abnormal", "normal")  # the labels found, sorted
    ordered = Source("folder", root, {"metadata": "metadata.csv", "classes": ["normal", "abnormal"]})
    assert ordered.task().classes == ("normal", "abnormal") and ordered.task().level == "recording"


def test_the_classes_are_known_when_the_data_module_is_built(heart, tmp_path):
    """The CLI links data.num_classes to the model right after building the data module, before any setup."""
    root = _labelled(heart, tmp_path / "labelled")
    data = ClassificationDataModule(dataset="folder", root=str(root), source_options={"metadata": "metadata.csv"},
                                    cache_dir=str(tmp_path / "c"), num_workers=0)
    assert (data.task_name, data.num_classes) == ("label", 2)
    data.setup("fit")
    labels = dict(zip(data.manifest["recording_id"].tolist(), data.labels.tolist()))
    expected = {f"P{i // 2:02d}_{('apex', 'base')[i % 2]}.wav": ("abnormal", "normal").index(label)
                for i, (_, _, label) in enumerate(heart[:12])}
    assert labels == expected


def _csv(root: Path, *rows: str, header: str = HEADER) -> Path:
    (root / "metadata.csv").write_text("\n".join([header, *rows]) + "\n")
    return root / "metadata.csv"


# (CSV rows after the header, fragment of the error, recordings kept with skip_bad); the error names the CSV
BAD_ROWS = {
    "missing_file": (("a.wav,p1,,,,,normal", "gone.wav,p2,,,,,normal"),
                     "line 3, column path: 'gone.wav': no such file", 1),
    "duplicate_path": (("a.wav,p1,,,,,normal", "b.wav,p2,,,,,normal", "a.wav,p3,,,,,normal"),
                       "line 4, column path: 'a.wav' is listed again (first on line 2)", 2),
    "unknown_sex": (("a.wav,p1,,,X,,normal", "b.wav,p2,,,F,,normal"),
                    "line 2, column sex: unknown value 'X'", 1),
    "unknown_age_group": (("a.wav,p1,,elderly,,,normal", "b.wav,p2,,adult,,,normal"),
                          "line 2, column age_group: unknown value 'elderly'", 1),
    "path_outside_the_folder": (("../a.wav,p1,,,,,normal", "b.wav,p2,,,,,normal"),
                                "line 2, column path: '../a.wav' is not under the folder", 1),
    "too_many_cells": (("a.wav,p1,,,,,normal,extra", "b.wav,p2,,,,,normal"), "line 2: 8 cells for 7 columns", 1),
    "patient_disagrees": (("a.wav,p1,,child,F,,normal", "b.wav,p1,,child,M,,normal"),
                          "line 3, column sex: patient p1: 'male' disagrees with 'female' (line 2)", 1),
    "empty_path": ((",p1,,,,,normal", "b.wav,p2,,,,,normal"), "line 2, column path: the path is empty", 1),
}


@pytest.fixture
def two_files(heart, tmp_path) -> Path:
    root = tmp_path / "two"
    _write(root / "a.wav", heart[0][0], heart[0][1])
    _write(root / "b.wav", heart[1][0], heart[1][1])
    return root


@pytest.mark.parametrize("case", BAD_ROWS)
def test_a_bad_row_is_named_by_line_and_column_or_skipped_and_counted(two_files, case):
    rows, fragment, kept = BAD_ROWS[case]
    metadata = _csv(two_files, *rows)
    with pytest.raises(DataError) as raised:
        read_folder(two_files, metadata="metadata.csv")
    assert raised.value.path == metadata and fragment in raised.value.message, raised.value
    skipped = read_folder(two_files, metadata="metadata.csv", skip_bad=True)
    assert len(skipped.recordings) == kept
    assert [problem.path for problem in skipped.problems] == [metadata]
    assert set(skipped.patients) == {r.patient_id for r in skipped.recordings}


def test_a_label_outside_the_listed_classes_is_named(two_files):
    metadata = _csv(two_files, "a.wav,p1,,,,,normal", "b.wav,p2,,,,,murmur")
    with pytest.raises(DataError, match="line 3, column label: unknown value 'murmur' .classes: normal, abnormal"):
        read_folder(two_files, metadata="metadata.csv", classes=["normal", "abnormal"])
    assert read_folder(two_files, metadata="metadata.csv", classes=["normal", "abnormal"],
                       skip_bad=True).problems[0].path == metadata


@pytest.mark.parametrize("header, fragment", [
    ("path,patient,diagnosis", "line 1: unknown column(s) diagnosis (columns may be path, patient"),
    ("file,patient", "line 1: no column 'path' (columns: file, patient)"),
    ("path,sex,sex", "line 1: a column name repeats"),
])
def test_a_csv_whose_columns_are_wrong_is_one_error_even_with_skip_bad(two_files, header, fragment):
    metadata = _csv(two_files, "a.wav,p1,x", header=header)
    with pytest.raises(DataError) as raised:
        read_folder(two_files, metadata="metadata.csv", skip_bad=True)
    assert raised.value.path == metadata and fragment in raised.value.message


def test_an_empty_folder_or_csv_is_one_error(tmp_path):
    with pytest.raises(DataError, match="no audio files .* in the folder") as raised:
        read_folder(tmp_path, skip_bad=True)
    assert raised.value.path == tmp_path
    _csv(tmp_path)
    with pytest.raises(DataError, match="the metadata CSV lists no recordings"):
        read_folder(tmp_path, metadata="metadata.csv")


@pytest.mark.parametrize("options, error, fragment", [
    ({"pattern": "(?P<patient>"}, ConfigError, "is not a regular expression"),
    ({"pattern": "(?P<diagnosis>.*)"}, ConfigError, "unknown group(s) diagnosis"),
    ({"classes": "normal,abnormal"}, ConfigError, "classes must be a list"),
    ({"classes": ["normal"]}, ConfigError, "needs at least two distinct values"),
    ({"metadata": "nope.csv"}, MissingPathError, "nope.csv: metadata file not found"),
    ({"metadata": "metadata.csv", "pattern": "(?P<patient>.)\\.wav"}, ConfigError,
     "patient come from both the metadata CSV and the pattern"),
    ({"labels": "x.csv"}, ConfigError, "dataset folder takes no source option(s) labels (its options: metadata, "
                                       "pattern, classes, extensions)"),
])
def test_a_wrong_option_is_named(two_files, options, error, fragment):
    _csv(two_files, "a.wav,p1,,,,,normal", "b.wav,p2,,,,,abnormal")
    with pytest.raises(error) as raised:
        Source("folder", two_files, options).read()
    assert fragment in str(raised.value)


def test_labels_with_one_value_make_no_task_and_say_so(two_files, tmp_path):
    _csv(two_files, "a.wav,p1,,,,,normal", "b.wav,p2,,,,,normal")
    with pytest.raises(DataError, match="the labels hold 1 value.s. .'normal'.; a task needs at least two classes"):
        ClassificationDataModule(dataset="folder", root=str(two_files), source_options={"metadata": "metadata.csv"},
                                 cache_dir=str(tmp_path))


def test_the_folder_yamls_build_with_a_scheme(heart, tmp_path):
    root = _labelled(heart, tmp_path / "labelled")
    cli = make_cli("pretrain", ["--config", str(EXPERIMENTS / "folder" / "pretrain.yaml"), "--config",
                                str(EXPERIMENTS / "schemes" / "heart_wave.yaml"), "--data.root", str(root),
                                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])
    assert (cli.datamodule.dataset, cli.datamodule.task, cli.model.hparams.num_classes) == ("folder", None, 0)
    cli = make_cli("finetune", ["--config", str(EXPERIMENTS / "folder" / "finetune.yaml"), "--data.root", str(root),
                                "--model.checkpoint", "null", "--trainer.logger", "false",
                                "--trainer.default_root_dir", str(tmp_path)])
    assert (cli.datamodule.task_name, cli.model.hparams.num_classes, cli.model.hparams.task) == ("label", 2, "label")


# ---------------------------------------------------------------- the path users take: python -m lungheart_cl
def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "LUNGHEART_DEBUG"} | {
        "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "lungheart_cl", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=900)


TINY = ["--model.encoder", "lungheart_cl.encoders.SmallCNN", "--model.encoder.channels", "[8, 16]",
        "--model.stats_segments", "50", "--data.num_workers", "0", "--data.batch_size", "8",
        "--data.sample_rate", "2000", "--trainer.accelerator", "cpu", "--trainer.limit_train_batches", "2"]


def test_a_folder_through_the_cli_inspect_pretrain_finetune_predict(heart, tmp_path):
    root = _labelled(heart, tmp_path / "my_recordings")
    cache = ["--data.root", str(root), "--data.cache_dir", str(tmp_path / "cache")]

    done = _cli(tmp_path, "data", "inspect", "--dataset", "folder", "--root", str(root), "--option",
                "metadata=metadata.csv", "--option", "classes=[normal, abnormal]", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    labels = [label for _, _, label in heart[:12]]
    assert (summary["recordings"], summary["patients"], summary["problems"]) == (12, 6, [])
    assert summary["tasks"]["label"] == {name: labels.count(name) for name in set(labels)}
    assert summary["sexes"] == {"female": 3, "male": 3} and summary["locations"] == {"apex": 6, "base": 6}

    pretrain = _cli(tmp_path, "pretrain", "--config", str(EXPERIMENTS / "folder" / "pretrain.yaml"), *cache, *TINY,
                    "--model.projector_hidden_dim", "32", "--model.projector_dim", "16", "--trainer.max_epochs", "2")
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    assert "no labels: pretraining without the kNN / linear-probe monitor" in pretrain.stdout + pretrain.stderr
    encoder = next(tmp_path.glob("runs/pretrain/version_*/checkpoints/encoder-last.pt"))

    finetune = _cli(tmp_path, "finetune", "--config", str(EXPERIMENTS / "folder" / "finetune.yaml"), *cache, *TINY,
                    "--model.checkpoint", str(encoder), "--model.mode", "finetune", "--data.label_fraction", "1.0",
                    "--data.val_fraction", "0.34", "--data.test_fraction", "0.34",  # 6 patients: 2 per split
                    "--data.source_options", "{metadata: metadata.csv, classes: [normal, abnormal]}",
                    "--trainer.max_epochs", "2", "--model.bootstrap_samples", "20", "--model.embedding_plot", "none",
                    "--model.results_dir", str(tmp_path / "results"))
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    results = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert (results["dataset"], results["task"], results["level"]) == ("folder", "label", "recording")
    assert results["data"]["dropped_count"] == 0 and 0 <= results["metrics"]["auroc"]["value"] <= 1

    checkpoint = next(tmp_path.glob("runs/finetune/version_*/checkpoints/best-*.ckpt"))
    files = sorted(root.glob("*.wav"))[:3]
    predicted = _cli(tmp_path, "predict", "--checkpoint", str(checkpoint), "--device", "cpu", *map(str, files))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(predicted.stdout)))
    assert list(rows[0])[4:6] == ["p_normal", "p_abnormal"]
    per_file = [row for row in rows if row["segment"] == "all"]
    assert [row["file"] for row in per_file] == list(map(str, files)) and {r["status"] for r in rows} == {"ok"}
    assert all(abs(float(r["p_normal"]) + float(r["p_abnormal"]) - 1) < 1e-6 for r in rows)


# ------------------------------------------------------- bad input through the CLI: one line naming file, row, column
# (the CSV row after a.wav (normal) and b.wav (abnormal), the problem line `data inspect` prints)
INSPECT_BAD = {
    "missing_file": ("gone.wav,p3,,,,,normal", "metadata.csv: line 4, column path: 'gone.wav': no such file"),
    "duplicate_path": ("a.wav,p3,,,,,normal", "metadata.csv: line 4, column path: 'a.wav' is listed again "
                                              "(first on line 2)"),
    "unknown_sex": ("c.wav,p3,,,X,,normal", "metadata.csv: line 4, column sex: unknown value 'X' (sex may be F, M, "
                                            "female, male or empty)"),
}


def _problem_lines(stdout: str) -> list[str]:
    """The per-file problem lines of `data inspect`'s summary."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("problems:"))
    return [line.strip() for line in lines[start + 1:]]


@pytest.mark.parametrize("case", INSPECT_BAD)
def test_data_inspect_names_a_bad_csv_row_by_file_line_and_column(two_files, case):
    row, expected = INSPECT_BAD[case]
    shutil.copy(two_files / "a.wav", two_files / "c.wav")
    _csv(two_files, "a.wav,p1,,,,,normal", "b.wav,p2,,,,,abnormal", row)
    done = _cli(two_files, "data", "inspect", "--dataset", "folder", "--root", str(two_files), "--option",
                "metadata=metadata.csv")
    assert done.returncode == 1, done.stderr[-3000:]
    assert _problem_lines(done.stdout) == [f"{two_files}/{expected}"]  # one line: the CSV, its line and column
    assert "recordings: 2" in done.stdout  # the good rows are read


@pytest.mark.parametrize("setup, expected", [
    (lambda root: (root / "metadata.csv").write_text("path,patient,diagnosis\na.wav,p1,COPD\n"),
     "metadata.csv: line 1: unknown column(s) diagnosis (columns may be path, patient, location"),
    (lambda root: [path.unlink() for path in root.glob("*.wav")],
     ": no audio files (wav, flac, mp3, ogg) in the folder or below it"),
])
def test_data_inspect_names_a_wrong_header_or_an_empty_folder(two_files, setup, expected):
    setup(two_files)
    options = ["--option", "metadata=metadata.csv"] if (two_files / "metadata.csv").exists() else []
    done = _cli(two_files, "data", "inspect", "--dataset", "folder", "--root", str(two_files), *options)
    assert done.returncode == 1, done.stderr[-3000:]
    [line] = _problem_lines(done.stdout)
    assert line.startswith(str(two_files)) and expected in line, line


def test_a_corrupt_audio_file_is_one_error_line_or_a_counted_skip(two_files, tmp_path):
    (two_files / "b.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    done = _cli(two_files, "data", "inspect", "--dataset", "folder", "--root", str(two_files))
    assert done.returncode == 1 and "recordings: 1" in done.stdout
    [line] = _problem_lines(done.stdout)
    assert line.startswith(f"{two_files / 'b.wav'}: not a readable audio file"), line

    cache = ["--data.dataset", "folder", "--data.root", str(two_files), "--data.cache_dir", str(tmp_path / "cache")]
    strict = _cli(tmp_path, "data", "cache", *cache)
    assert strict.returncode == 2
    [error] = strict.stderr.strip().splitlines()  # one line, no traceback
    assert error.startswith(f"lungheart-cl: error: {two_files / 'b.wav'}: not a readable audio file"), error
    skipped = _cli(tmp_path, "data", "cache", *cache, "--data.skip_bad", "true")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "from 1 recordings" in skipped.stdout and "dropped: 1" in skipped.stdout
    assert f"read: {two_files / 'b.wav'}: not a readable audio file" in skipped.stdout


def test_data_inspect_lists_a_bad_row_beside_labels_too_few_for_a_task(two_files):
    """Skipping the bad row leaves one label value: both are listed, neither hides the other."""
    _csv(two_files, "a.wav,p1,,,,,normal", "b.wav,p2,,,,,normal", "gone.wav,p3,,,,,abnormal")
    done = _cli(two_files, "data", "inspect", "--dataset", "folder", "--root", str(two_files), "--option",
                "metadata=metadata.csv")
    assert done.returncode == 1, done.stderr[-3000:]
    assert _problem_lines(done.stdout) == [
        f"{two_files}/metadata.csv: line 4, column path: 'gone.wav': no such file",
        f"{two_files}/metadata.csv: the labels hold 1 value(s) ('normal'); a task needs at least two classes"]
    assert "recordings: 2" in done.stdout and "sexes: unknown: 2" in done.stdout
