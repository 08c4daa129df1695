"""The `lungheart-cl` entry point: data inspect / synth / cache (and the runs that use a cache built ahead),
views show."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from lungheart_cl.cli import main
from lungheart_cl.data.synthetic import synthesize
from lungheart_cl.lightning_cli import make_cli

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


def _icbhi_with_two_bad_files(root: Path) -> tuple[Path, Path]:
    """A synthetic ICBHI whose first wav is not audio (the reader drops it) and whose second holds NaN
    samples (its decoding fails in the cache build)."""
    assert main(["data", "synth", "--dataset", "icbhi", "--root", str(root), "--patients", "16"]) == 0
    unreadable, nan = sorted((root / "ICBHI_final_database").glob("*.wav"))[:2]
    unreadable.write_text("not audio")
    audio, rate = sf.read(nan, dtype="float32")
    audio[100] = np.nan
    sf.write(nan, audio, rate, subtype="FLOAT")
    return unreadable, nan


def test_inspect_and_cache_name_every_dropped_file(tmp_path, capsys):
    root = tmp_path / "icbhi"
    unreadable, nan = _icbhi_with_two_bad_files(root)
    capsys.readouterr()
    assert main(["data", "inspect", "--dataset", "icbhi", "--root", str(root)]) == 1  # problems found
    assert unreadable.name in capsys.readouterr().out
    options = ["--data.root", str(root), "--data.cache_dir", str(tmp_path / "c"), "--data.skip_bad", "true"]
    assert main(["data", "cache", *options]) == 0
    out = capsys.readouterr().out
    assert "cache built: " in out and "segments of 16000 samples" in out
    assert "dropped: 2\n" in out
    assert f"read: {unreadable}: " in out and f"decode: {nan}: " in out and "NaN" in out
    assert main(["data", "cache", *options]) == 0
    assert "cache found (already built): " in capsys.readouterr().out


def test_data_cache_takes_a_run_config_and_builds_the_cache_its_runs_use(tmp_path, capsys):
    """experiments/physionet2016/*.yaml say normalization: none; the cache built ahead must be theirs."""
    root = synthesize("physionet2016", tmp_path / "physionet2016", patients=6)
    overrides = ["--data.root", str(root), "--data.cache_dir", str(tmp_path / "c")]
    assert main(["data", "cache", "--config", str(EXPERIMENTS / "physionet2016" / "pretrain.yaml"),
                 "--config", str(EXPERIMENTS / "schemes" / "time_mask.yaml"), *overrides]) == 0
    out = capsys.readouterr().out
    directory = Path(re.search(r"cache built: (\S+)", out).group(1))
    assert json.loads((directory / "cache.json").read_text())["config"]["normalization"] == "none"
    for command, model in (("pretrain", []), ("finetune", ["--model.mode", "scratch", "--model.checkpoint", "null"])):
        cli = make_cli(command, ["--config", str(EXPERIMENTS / "physionet2016" / f"{command}.yaml"), *overrides,
                                 *model, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])
        cache = cli.datamodule.prepare_cache()
        assert (cache.directory, cache.built) == (directory, False)  # a hit, not a second cache
    assert [path.name for path in (tmp_path / "c").iterdir() if path.name != "synthetic"] == [directory.name]
    with pytest.raises(SystemExit) as raised:
        main(["data", "cache", "--data.normalisation", "none", *overrides])
    assert raised.value.code == 2
    assert "normalisation" in capsys.readouterr().err


def test_runs_say_which_cache_they_use_and_name_every_dropped_file(tmp_path, monkeypatch, capsys, caplog):
    """A real pretraining and a real evaluation on a cache built ahead: both hit it, and their console,
    their logger and their results JSON name the two dropped files."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "icbhi"
    unreadable, nan = _icbhi_with_two_bad_files(root)
    data = ["--data.root", str(root), "--data.cache_dir", str(tmp_path / "c"), "--data.skip_bad", "true",
            "--data.num_workers", "0", "--data.batch_size", "16"]
    assert main(["data", "cache", "--config", str(EXPERIMENTS / "pretrain_lung_default.yaml"), *data]) == 0
    directory = re.search(r"cache built: (\S+)", capsys.readouterr().out).group(1)
    tiny = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    caplog.set_level(logging.INFO, logger="lungheart_cl")
    monkeypatch.setattr(logging.getLogger("lungheart_cl"), "propagate", True)  # to caplog, however it was set up
    assert main(["pretrain", "--config", str(EXPERIMENTS / "pretrain_lung_default.yaml"), *data, *tiny,
                 "--model.stats_segments", "50"]) == 0
    summary = json.loads(next(tmp_path.glob("runs/pretrain/**/pretrain-summary.json")).read_text())
    assert main(["finetune", "--config", str(EXPERIMENTS / "finetune_lung_default.yaml"), *data, *tiny,
                 "--data.label_fraction", "1.0",
                 "--model.bootstrap_samples", "20", "--model.results_dir", "results"]) == 0
    results = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    for run in (summary["data"], results["data"]):
        assert (run["cache"], run["cache_status"], run["dropped_count"]) == (directory, "hit", 2)
        assert [(d["stage"], d["file"]) for d in run["dropped"]] == [("read", str(unreadable)), ("decode", str(nan))]
    messages = [record.getMessage() for record in caplog.records]
    assert sum(f"cache hit: {directory}" in message for message in messages) == 2
    assert sum(f"dropped (decode) {nan}" in message for message in messages) == 2
    for hparams in tmp_path.glob("runs/*/version_*/hparams.yaml"):  # the runs' own log
        logged = yaml.safe_load(hparams.read_text())
        assert logged["data_dropped"] == 2 and logged["data_dropped_files"] == [str(unreadable), str(nan)]
    assert len(list(tmp_path.glob("runs/*/version_*/hparams.yaml"))) == 2


def test_views_show_renders_a_png(tmp_path, capsys):
    out = tmp_path / "views.png"
    assert main(["views", "show", "--config", str(EXPERIMENTS / "pretrain_lung_default.yaml"),
                 "--config", str(EXPERIMENTS / "schemes" / "time_mask.yaml"), "--out", str(out), "--views", "3",
                 "--", "--data.synthetic_patients", "12", "--data.cache_dir", str(tmp_path / "c"),
                 "--model.stats_segments", "50"]) == 0
    assert out.is_file() and out.stat().st_size > 20_000
