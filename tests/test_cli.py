"""The `lungheart-cl` entry point: data inspect / synth / cache (and the runs that use a cache built ahead),
views show; errors and logs as users see them."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from lungheart_cl.cli import main
from lungheart_cl.data.synthetic import synthesize
from lungheart_cl.lightning_cli import make_cli

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


@pytest.mark.parametrize("dataset,recordings,patients", [("icbhi", 15, 11), ("physionet2016", 1099, 1099),
                                                         ("circor2022", 684, 200)])
def test_inspect_the_real_subsets(dataset, recordings, patients, shared_data, capsys):
    assert main(["data", "inspect", "--dataset", dataset, "--root", str(shared_data / dataset), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["recordings"], summary["patients"], summary["problems"]) == (recordings, patients, [])
    if dataset == "icbhi":  # task classes counted at the task's level: cycles here
        assert summary["tasks"]["icbhi_4class"] == {"both": 1, "crackle": 40, "normal": 78, "wheeze": 27}
        assert summary["events"] == 146 and summary["columns"]["crackle"] == {"0": 105, "1": 41}
        assert set(summary["sample_rates"]) == {"4000", "10000", "44100"}
    if dataset == "physionet2016":
        assert summary["tasks"]["normal_vs_abnormal"] == {"abnormal": 482, "normal": 617}
        assert summary["columns"]["recording_label"] == {"abnormal": 482, "normal": 617}
    if dataset == "circor2022":  # patients
        assert summary["tasks"]["murmur_3class"] == {"absent": 145, "present": 40, "unknown": 15}
        assert summary["tasks"]["murmur"] == {"absent": 145, "present": 40, "unlabelled": 15}
        assert summary["columns"]["murmur"] == {"absent": 145, "present": 40, "unknown": 15}


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


# ------------------------------------------------------------------ errors and logs, through `python -m`
def _cli(cwd: Path, *args: str, log: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """`python -m lungheart_cl ARGS` as a user runs it; with `log`, stdout and stderr go to files
    (`log`.out, `log`.err) the way `cmd > out 2> err` writes them."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LUNGHEART_DEBUG", "WANDB_MODE")}
    environ |= {"PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", **env}
    command = [sys.executable, "-m", "lungheart_cl", *args]
    if log is None:
        return subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        done = subprocess.run(command, cwd=cwd, env=environ, stdout=out, stderr=err, timeout=900)
    return subprocess.CompletedProcess(command, done.returncode, Path(f"{log}.out").read_text(),
                                       Path(f"{log}.err").read_text())


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "lungheart-cl: error:" in line]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr[-3000:]
    return errors[0]


def test_a_missing_root_is_one_line_and_exit_2(tmp_path):
    done = _cli(tmp_path, "data", "inspect", "--dataset", "icbhi", "--root", str(tmp_path / "nope"))
    assert done.stderr.splitlines() == [_one_error_line(done)]
    assert f"{tmp_path / 'nope'}: dataset root does not exist" in done.stderr


@pytest.mark.parametrize("how", ["--debug", "LUNGHEART_DEBUG=1"])
def test_debug_shows_the_traceback(tmp_path, how):
    flag, env = ([how], {}) if how == "--debug" else ([], {"LUNGHEART_DEBUG": "1"})
    done = _cli(tmp_path, "data", "inspect", "--dataset", "icbhi", "--root", str(tmp_path / "nope"), *flag, **env)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "MissingPathError: " in done.stderr


def test_a_rejected_setting_is_one_line(tmp_path):
    done = _cli(tmp_path, "finetune", "--config", str(EXPERIMENTS / "finetune_lung_default.yaml"),
                "--model.nosuch", "3")
    assert done.stderr.splitlines() == [_one_error_line(done)]
    assert "--model.nosuch" in done.stderr
    done = _cli(tmp_path, "sweep", str(tmp_path / "nope.yaml"))
    assert "nope.yaml: sweep spec not found" in _one_error_line(done)


def test_a_file_with_nan_samples_is_skipped_or_named_by_the_parallel_cache_build(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    root = tmp_path / "icbhi"
    assert main(["data", "synth", "--dataset", "icbhi", "--root", str(root), "--patients", "10"]) == 0
    victim = sorted((root / "ICBHI_final_database").glob("*.wav"))[0]
    audio, rate = sf.read(victim, dtype="float32")
    audio[100:110] = np.nan
    sf.write(victim, audio, rate, subtype="FLOAT")
    capsys.readouterr()
    # the worker processes raise the DataError; it must reach the parent as itself
    options = ["--data.dataset", "icbhi", "--data.root", str(root), "--data.cache_dir", str(tmp_path / "c")]
    assert main(["data", "cache", *options]) == 2
    assert capsys.readouterr().err == f"lungheart-cl: error: {victim}: 10 samples are NaN or infinite\n"
    assert main(["data", "cache", *options, "--data.skip_bad", "true"]) == 0
    assert f"decode: {victim}: 10 samples are NaN" in capsys.readouterr().out


SMALL = ["--data.synthetic_patients", "24", "--data.num_workers", "0"]


def test_an_impossible_label_fraction_leaves_no_run_folder(tmp_path):
    done = _cli(tmp_path, "finetune", "--config", str(EXPERIMENTS / "finetune_lung_default.yaml"), *SMALL,
                "--model.checkpoint", "null", "--data.label_fraction", "0.001")
    assert "label_fraction 0.001" in _one_error_line(done)
    assert (tmp_path / "runs" / "finetune").is_dir() and not list((tmp_path / "runs" / "finetune").iterdir())


def test_a_user_error_under_ddp_is_one_line_per_rank(tmp_path):
    done = _cli(tmp_path, "finetune", "--config", str(EXPERIMENTS / "finetune_lung_default.yaml"), *SMALL,
                "--model.checkpoint", "null", "--data.label_fraction", "0.001", "--trainer.accelerator", "cpu",
                "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "lungheart-cl: error: " in line]
    # whichever rank fails first ends the run; the launcher's re-executed ranks report themselves as "[rank: 1]"
    assert errors and all("label_fraction 0.001" in line for line in errors)
    assert all(line.startswith(("lungheart-cl: error", "[rank: 1] lungheart-cl: error")) for line in errors)
    assert not list(tmp_path.glob("runs/finetune/version_*"))


# Each line Lightning, torch or W&B printed on every run before; none says anything about the run.
SILENCED = ["litlogger", "anonymous setting", "LeafSpec", "on_after_batch_transfer",
            "smaller than the logging interval", "in eval mode at the start of training",
            "configure_optimizers` returned `None`"]


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory) -> dict:
    """A small pretraining (3 batches an epoch, fewer than log_every_n_steps) and a linear probe on its
    encoder, each with its output redirected to files, W&B offline as for a user who is not logged in."""
    cwd = tmp_path_factory.mktemp("runs")
    pretrain = _cli(cwd, "pretrain", "--config", str(EXPERIMENTS / "pretrain_lung_default.yaml"), *SMALL,
                    "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--data.batch_size", "16",
                    "--model.stats_segments", "100", "--data.monitor_bank_size", "100", log=cwd / "pretrain",
                    WANDB_MODE="offline")
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    checkpoints = next(cwd.glob("runs/pretrain/version_*/checkpoints"))
    finetune = _cli(cwd, "finetune", "--config", str(EXPERIMENTS / "finetune_lung_default.yaml"), *SMALL,
                    "--model.checkpoint", str(checkpoints / "encoder-best.pt"), "--data.label_fraction", "1.0",
                    "--trainer.max_epochs", "2", "--model.bootstrap_samples", "20", "--model.embedding_plot", "none",
                    log=cwd / "finetune", WANDB_MODE="offline")
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    logistic = _cli(cwd, "finetune", "--config", str(EXPERIMENTS / "finetune_lung_default.yaml"), *SMALL,
                    "--model.checkpoint", str(checkpoints / "encoder-best.pt"), "--data.label_fraction", "1.0",
                    "--model.mode", "logistic", "--model.bootstrap_samples", "20", "--model.embedding_plot", "none",
                    "--model.results_dir", str(cwd / "logistic_results"), log=cwd / "logistic", WANDB_MODE="offline")
    assert logistic.returncode == 0, logistic.stderr[-3000:]
    return {"cwd": cwd, "pretrain": pretrain, "finetune": finetune, "logistic": logistic,
            "pretrain_ckpt": checkpoints / "last.ckpt",
            "classifier_ckpt": next(cwd.glob("runs/finetune/version_*/checkpoints/best-*.ckpt"))}


@pytest.mark.parametrize("command", ["pretrain", "finetune", "logistic"])
def test_a_logged_run_prints_one_line_per_epoch_and_no_known_notices(small_runs, command):
    done = small_runs[command]
    for text in (done.stdout, done.stderr):
        assert "\r" not in text  # no carriage-return progress bars in a log file
        assert not [notice for notice in SILENCED if notice in text]
    epochs = [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    if command == "logistic":  # fitted in closed form: one epoch, one validation, whatever max_epochs says
        assert len(epochs) == 1 and epochs[0].startswith("epoch 1/")
    else:
        assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all(" batches, val/" in line for line in epochs)
    if command != "pretrain":  # evaluation shows its progress too
        assert [line for line in done.stderr.splitlines() if line.startswith("test: ")]
    else:  # 3 batches an epoch, log_every_n_steps 5: the interval is capped, so each epoch logs its steps
        metrics = next(small_runs["cwd"].glob("runs/pretrain/version_*/metrics.csv")).read_text().splitlines()
        column = metrics[0].split(",").index("train/loss_step")
        assert len([row for row in metrics[1:] if row.split(",")[column]]) == 2


def test_ckpt_path_of_the_other_command_is_named(small_runs):
    cwd, classifier, pretrain = small_runs["cwd"], small_runs["classifier_ckpt"], small_runs["pretrain_ckpt"]
    done = _cli(cwd, "pretrain", "--config", str(EXPERIMENTS / "pretrain_lung_default.yaml"), *SMALL,
                "--ckpt_path", str(classifier))
    assert f"{classifier}: a classifier checkpoint, but `lungheart-cl pretrain --ckpt_path` resumes a pretrain run" \
        in _one_error_line(done)
    done = _cli(cwd, "finetune", "--config", str(EXPERIMENTS / "finetune_lung_default.yaml"), *SMALL,
                "--model.checkpoint", "null", "--ckpt_path", str(pretrain))
    assert f"{pretrain}: a pretrain checkpoint" in _one_error_line(done)
    done = _cli(cwd, "finetune", "--config", str(EXPERIMENTS / "finetune_lung_default.yaml"), *SMALL,
                "--model.mode", "finetune", "--model.checkpoint", str(pretrain), "--ckpt_path", str(classifier))
    assert "a classifier checkpoint of model.mode linear, but this run's model.mode is finetune" \
        in _one_error_line(done)


SELF_SIGTERM = """
import os, signal
from lightning.pytorch.callbacks import Callback

class SigtermAtSecondBatch(Callback):
    \"\"\"What a scheduler's preemption does: SIGTERM in the middle of training.\"\"\"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_a_run_stopped_by_sigterm_exits_143_and_exports_or_tests_nothing(tmp_path, command):
    """Lightning ends a SIGTERM'd fit with a SystemExit of status 0; a preempted job must not look finished,
    and an interrupted fine-tuning must not go on to score its half-trained model on the test split."""
    (tmp_path / "preempt.py").write_text(SELF_SIGTERM)
    config = {"pretrain": "pretrain_lung_default.yaml", "finetune": "finetune_lung_default.yaml"}[command]
    extra = ["--model.checkpoint", "null", "--model.mode", "scratch", "--data.label_fraction", "1.0"] \
        if command == "finetune" else []
    done = _cli(tmp_path, command, "--config", str(EXPERIMENTS / config), *SMALL, *extra, "--trainer.max_epochs", "2",
                "--data.batch_size", "16", "--model.stats_segments", "100",
                "--trainer.callbacks+", '{"class_path": "preempt.SigtermAtSecondBatch"}',
                PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
    assert f"lungheart-cl {command}: interrupted by SIGTERM" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("encoder-best.pt")) and not list(tmp_path.rglob("results/*.json"))


def test_the_model_front_end_is_linked_to_the_statistics_the_data_module_computes():
    """The data module computes the front end's statistics, for the model's own front-end arguments; a classifier
    loading an encoder takes them from its checkpoint, so none are computed."""
    cli = make_cli("pretrain", ["--model.f_min", "25.0", "--model.n_mels", "32", "--model.stats_segments", "50"],
                   instantiate=False)
    frontend = cli.config["data"]["frontend"]
    assert (frontend["f_min"], frontend["n_mels"], cli.config["data"]["stats_segments"]) == (25.0, 32, 50)
    scratch = make_cli("finetune", ["--model.mode", "scratch", "--model.checkpoint", "null", "--model.channel_norm",
                                    "true"], instantiate=False)
    assert scratch.config["data"]["frontend"]["channel_norm"] is True
    loaded = make_cli("finetune", ["--model.checkpoint", "some/encoder-best.pt"], instantiate=False)
    assert loaded.config["data"]["frontend"] is None
