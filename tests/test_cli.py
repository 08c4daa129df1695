"""The `lungheart-cl` entry point: data inspect / synth / cache, views show."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lungheart_cl.cli import main

os.environ.setdefault("WANDB_MODE", "disabled")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("dataset,recordings,patients", [("icbhi", 15, 11), ("physionet2016", 1099, 1099),
                                                         ("circor2022", 684, 200)])
def test_inspect_the_real_subsets(dataset, recordings, patients, shared_data, capsys):
    assert main(["data", "inspect", "--dataset", dataset, "--root", str(shared_data / dataset), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["recordings"], summary["patients"], summary["problems"]) == (recordings, patients, [])
    if dataset == "icbhi":
        assert summary["cycles"] == {"both": 1, "crackle": 40, "normal": 78, "wheeze": 27}
        assert set(summary["sample_rates"]) == {"4000", "10000", "44100"}
    if dataset == "physionet2016":
        assert summary["recording_labels"] == {"abnormal": 482, "normal": 617}
    if dataset == "circor2022":
        assert summary["murmur"] == {"absent": 145, "present": 40, "unknown": 15}


# What public copies of CirCor carry in training_data/ besides the patients' files.
CIRCOR_STRAYS = ("LICENSE.txt", "SHA256SUMS.txt", "RECORDS", "test.m", "test.asv", "2530_AV.txt", "2530_notes.txt")


def test_inspect_a_public_circor_copy_with_stray_files(shared_data, tmp_path, capsys):
    """A stand-in for a complete public copy (no internet here): the 200 shared patients, linked, plus the
    stray files such copies carry. Every patient and recording is read; each stray is a note, not a problem."""
    real = shared_data / "circor2022"
    copy = tmp_path / "circor2022"
    (copy / "training_data").mkdir(parents=True)
    for path in [*real.iterdir(), *(real / "training_data").iterdir()]:
        if path.is_file():
            (copy / path.relative_to(real)).symlink_to(path)
    for name in CIRCOR_STRAYS:
        (copy / "training_data" / name).write_text("a file of the copy, not of a patient\n")
    assert main(["data", "inspect", "--dataset", "circor2022", "--root", str(copy), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    wavs = list((real / "training_data").glob("*.wav"))
    assert (summary["patients"], summary["recordings"], summary["problems"]) == (200, len(wavs), [])
    for name in CIRCOR_STRAYS:
        assert f"{name}: belongs to no patient of training_data.csv; ignored" in summary["notes"]
    assert main(["data", "inspect", "--dataset", "circor2022", "--root", str(copy)]) == 0
    assert "note: test.m: belongs to no patient" in capsys.readouterr().out


def test_synth_inspect_and_cache_a_dataset_with_one_bad_file(tmp_path, capsys):
    root = tmp_path / "icbhi"
    assert main(["data", "synth", "--dataset", "icbhi", "--root", str(root), "--patients", "10"]) == 0
    victim = sorted((root / "ICBHI_final_database").glob("*.wav"))[0]
    victim.write_text("not audio")
    capsys.readouterr()
    assert main(["data", "inspect", "--dataset", "icbhi", "--root", str(root)]) == 1  # problems found
    assert victim.name in capsys.readouterr().out
    assert main(["data", "cache", "--dataset", "icbhi", "--root", str(root), "--cache-dir", str(tmp_path / "c"),
                 "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "segments of 16000 samples" in out


def test_views_show_renders_a_png(tmp_path, capsys):
    out = tmp_path / "views.png"
    assert main(["views", "show", "--config", str(EXPERIMENTS / "pretrain_lung_default.yaml"),
                 "--config", str(EXPERIMENTS / "schemes" / "time_mask.yaml"), "--out", str(out), "--views", "3",
                 "--", "--data.synthetic_patients", "12", "--data.cache_dir", str(tmp_path / "c"),
                 "--model.stats_segments", "50"]) == 0
    assert out.is_file() and out.stat().st_size > 20_000
