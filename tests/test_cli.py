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
                                                         ("circor2022", 29, 8)])
def test_inspect_the_real_subsets(dataset, recordings, patients, shared_data, capsys):
    assert main(["data", "inspect", "--dataset", dataset, "--root", str(shared_data / dataset), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["recordings"], summary["patients"], summary["problems"]) == (recordings, patients, [])
    if dataset == "icbhi":
        assert summary["cycles"] == {"both": 1, "crackle": 40, "normal": 78, "wheeze": 27}
        assert set(summary["sample_rates"]) == {"4000", "10000", "44100"}
    if dataset == "physionet2016":
        assert summary["recording_labels"] == {"abnormal": 482, "normal": 617}


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
