"""Checkpoints never run code when loaded, the files we write still load, and a resumed run repeats the
uninterrupted one: all through `python -m lungheart_cl`, reading real runs' metrics.csv."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lungheart_cl.checkpointing import AtomicCheckpointIO, CheckpointError, load_pretrained
from lungheart_cl.data.datamodule import PretrainDataModule
from lungheart_cl.data.statistics import fit_frontend_statistics
from lungheart_cl.frontend import LogMelFrontend

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "experiments" / "pretrain_lung_default.yaml"
FINETUNE = REPO / "experiments" / "finetune_lung_default.yaml"

MONITORED = ("train/loss_epoch", "val/knn_auroc", "val/probe_auroc")

# Written into the run's folder (on the subprocess's PYTHONPATH): kills the process, no teardown, as
# soon as the given epoch starts, i.e. right after the previous epoch's checkpoints were written.
KILLER = """
import os, signal
from lightning.pytorch.callbacks import Callback

class KillAtEpoch(Callback):
    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
"""


class _CreatesAFile:
    """Unpickled by a loader that runs code, this opens (creates) `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    """A checkpoint shaped like ours whose loading with weights_only=False creates a file."""
    marker, path = tmp_path / "code-ran", tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "lungheart_cl": {"kind": "pretrain", "note": _CreatesAFile(marker)}},
               path)
    return path, marker


def _cli(cwd: Path, *args: str, env: dict | None = None) -> tuple[int, str]:
    """Run the CLI in `cwd`; (exit status, output). Output goes to a file: a killed run's DataLoader
    workers may outlive it for a few seconds and would hold a pipe open."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join([str(REPO), str(cwd)]), **(env or {}))
    log = cwd / f"cli-{len(list(cwd.glob('cli-*.log')))}.log"
    with open(log, "w") as out:
        status = subprocess.run([sys.executable, "-m", "lungheart_cl", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, timeout=900).returncode
    return status, log.read_text()


def _small(cache_dir: Path, num_workers: int = 0) -> list[str]:
    return ["--data.synthetic_patients", "24", "--data.batch_size", "16", "--model.stats_segments", "100",
            "--data.num_workers", str(num_workers), "--data.cache_dir", str(cache_dir),
            "--trainer.enable_progress_bar", "false"]


def _small_pretraining(cache_dir: Path, num_workers: int = 0) -> list[str]:
    return [*_small(cache_dir, num_workers), "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4",
            "--data.monitor_bank_size", "64", "--model.encoder.init_args.channels", "[8, 16]"]


def test_the_crafted_checkpoint_runs_code_when_loaded_unsafely(crafted):
    path, marker = crafted
    torch.load(path, weights_only=False)
    assert marker.exists()  # so its absence below means that no code ran


def _assert_refused(message: str, path: Path, marker: Path) -> None:
    assert not marker.exists(), "loading the checkpoint ran code"
    assert str(path) in message and "refused" in message and "io.open" in message, message


def test_load_pretrained_and_lightning_io_refuse_code(crafted):
    path, marker = crafted
    with pytest.raises(CheckpointError) as refused:
        load_pretrained(path)
    assert "\n" not in str(refused.value)
    _assert_refused(str(refused.value), path, marker)
    with pytest.raises(CheckpointError) as refused:  # Lightning's resume and test go through this plugin
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    _assert_refused(str(refused.value), path, marker)


@pytest.mark.parametrize("command", ["predict", "finetune", "pretrain"])
def test_every_cli_loader_refuses_code_in_one_line(command, crafted, cache_dir, tmp_path):
    path, marker = crafted
    args = {"predict": ["predict", "--checkpoint", str(path), "any.wav"],
            "finetune": ["finetune", "--config", str(FINETUNE), "--model.mode", "finetune",
                         "--model.checkpoint", str(path), *_small(cache_dir)],
            "pretrain": ["pretrain", "--config", str(PRETRAIN), "--ckpt_path", str(path), *_small(cache_dir)]}[command]
    # where torch.load calls that leave weights_only unset run code (legacy setting), ours still must not
    status, output = _cli(tmp_path / "run", *args, env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    assert status == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    _assert_refused(output.strip().splitlines()[-1], path, marker)


def test_cached_frontend_statistics_are_read_without_running_code(crafted, cache_dir, monkeypatch):
    path, marker = crafted
    data = PretrainDataModule(dataset="icbhi", cache_dir=str(cache_dir), synthetic_patients=24, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    stats = fit_frontend_statistics(LogMelFrontend(data.sample_rate), data, max_segments=100)
    assert read_safely(stats)["segments"] == 100
    stats.write_bytes(path.read_bytes())  # a crafted file in its place in the cache
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError) as refused:
        fit_frontend_statistics(LogMelFrontend(data.sample_rate), data, max_segments=100)
    _assert_refused(str(refused.value), stats, marker)
    stats.unlink()  # the next run computes it again


def read_safely(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------- resume
def _epoch_metrics(run: Path) -> dict[int, dict[str, float]]:
    """The monitored per-epoch values and every logged step loss of a run's metrics.csv."""
    out: dict[int, dict[str, float]] = {}
    with open(run / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            if not row["epoch"]:  # the learning-rate monitor's rows
                continue
            epoch = out.setdefault(int(row["epoch"]), {})
            for key in MONITORED:
                if row.get(key):
                    epoch[key] = float(row[key])
            if row.get("train/loss_step"):
                epoch[f"train/loss_step@{row['step']}"] = float(row["train/loss_step"])
    return out


# Two workers: a DataLoader iterator draws its workers' seed when it is created, persistent workers start once in
# the uninterrupted run but again after a resume, and they prefetch as soon as Lightning builds the first
# iterator, before it sets the sampler's epoch. Without workers, only the views' random state matters.
@pytest.fixture(scope="module", params=[2, pytest.param(0, marks=pytest.mark.slow)], ids=["workers2", "workers0"])
def uninterrupted(request, cache_dir, tmp_path_factory) -> tuple[int, Path]:
    """A 3-epoch CLI pretraining (seed 0), uninterrupted: (num_workers, its run folder)."""
    cwd = tmp_path_factory.mktemp(f"straight{request.param}")
    status, output = _cli(cwd, "pretrain", "--config", str(PRETRAIN), *_small_pretraining(cache_dir, request.param))
    assert status == 0, output[-3000:]
    return request.param, cwd / "runs" / "pretrain" / "version_0"


def test_a_killed_and_resumed_pretraining_repeats_the_uninterrupted_one(uninterrupted, cache_dir, tmp_path):
    num_workers, straight = uninterrupted
    (tmp_path / "killer.py").write_text(KILLER)
    args = ["pretrain", "--config", str(PRETRAIN), *_small_pretraining(cache_dir, num_workers)]
    killer = {"class_path": "killer.KillAtEpoch", "init_args": {"epoch": 2}}
    status, output = _cli(tmp_path, *args, "--trainer.callbacks+", json.dumps([killer]))
    assert status == -9, output[-3000:]  # killed when epoch 2 started
    first = tmp_path / "runs" / "pretrain" / "version_0"
    status, output = _cli(tmp_path, *args, "--ckpt_path", str(first / "checkpoints" / "last.ckpt"))
    assert status == 0, output[-3000:]
    resumed = tmp_path / "runs" / "pretrain" / "version_1"

    expected, got = _epoch_metrics(straight), _epoch_metrics(resumed)
    assert sorted(expected) == [0, 1, 2]
    assert sorted(got) == [2]  # continued after the last finished epoch, not after the best one
    assert set(MONITORED) <= set(got[2]), got[2]
    assert got[2] == expected[2]
    summaries = [json.loads(next(run.glob("checkpoints/pretrain-summary.json")).read_text())
                 for run in (straight, resumed)]
    assert Path(summaries[1]["best_checkpoint"]).name == Path(summaries[0]["best_checkpoint"]).name
    for key in ("val_knn_auroc_best", "val_knn_auroc_before"):  # the random-init figure is not recomputed
        assert summaries[1][key] == summaries[0][key]
    assert "Restoring states from the checkpoint" in output
    encoders = [load_pretrained(run / "checkpoints" / "encoder-last.pt").encoder.state_dict() for run in
                (straight, resumed)]
    for key, value in encoders[0].items():
        assert torch.equal(encoders[1][key], value), key


def test_pretrain_finetune_predict_chain_loads_every_file_it_writes(uninterrupted, cache_dir, tmp_path):
    num_workers, straight = uninterrupted
    if num_workers == 0:
        pytest.skip("one chain is enough")
    written = [*straight.glob("checkpoints/*.ckpt"), *straight.glob("checkpoints/encoder-*.pt"),
               *cache_dir.glob("*/frontend-stats-*.pt")]
    assert len(written) >= 5
    for path in written:  # tensors and plain data only, random states included
        assert isinstance(read_safely(path), dict), path
    pretraining = straight / "checkpoints" / "last.ckpt"
    assert load_pretrained(pretraining).provenance["epoch"] == 2  # the last epoch, whichever was best
    status, output = _cli(tmp_path, "finetune", "--config", str(FINETUNE), "--model.mode", "finetune",
                          "--model.checkpoint", str(pretraining), *_small(cache_dir), "--data.label_fraction", "1.0",
                          "--trainer.max_epochs", "2", "--model.bootstrap_samples", "50",
                          "--model.results_dir", "results")
    assert status == 0, output[-3000:]
    results = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    classifier = tmp_path / results["selected_checkpoint"]  # relative to the run folder
    assert classifier.is_file() and results["pretrained"]["checkpoint"] == str(pretraining)
    wav = tmp_path / "new.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 4000 * 6).astype(np.float32), 4000)
    status, output = _cli(tmp_path, "predict", "--checkpoint", str(classifier), "--output", "p.csv", str(wav))
    assert status == 0, output[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert rows and all(row["file"] == str(wav) for row in rows)
    probabilities = [[float(v) for k, v in row.items() if k.startswith("p_")] for row in rows]
    assert np.allclose(np.sum(probabilities, axis=1), 1.0, atol=1e-3)


# Imported, this module creates the file named by LUNGHEART_TEST_MARKER: a checkpoint naming it must not import it.
IMPORT_SIDE_EFFECT = """
import os
open(os.environ["LUNGHEART_TEST_MARKER"], "w").close()
from lungheart_cl.encoders import SmallCNN as Trojan
"""


@pytest.fixture
def naming_a_module(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """An exported encoder (plain data, loads with weights_only) whose class path names a module with side effects."""
    from lungheart_cl.checkpointing import export_encoder
    from lungheart_cl.encoders import SmallCNN

    (tmp_path / "trojan_encoder.py").write_text(IMPORT_SIDE_EFFECT)
    marker = tmp_path / "imported"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LUNGHEART_TEST_MARKER", str(marker))
    path = export_encoder(SmallCNN(channels=(8, 16)), LogMelFrontend(), tmp_path / "encoder.pt", {})
    payload = torch.load(path, weights_only=True)
    payload["encoder_config"]["class_path"] = "trojan_encoder.Trojan"
    torch.save(payload, path)
    return path, marker


def test_a_class_path_in_a_checkpoint_is_looked_up_never_imported(naming_a_module):
    path, marker = naming_a_module
    with pytest.raises(CheckpointError) as refused:
        load_pretrained(path)
    assert not marker.exists(), "loading the checkpoint imported the module it names"
    message = str(refused.value)
    assert str(path) in message and "trojan_encoder.Trojan" in message and "\n" not in message


def test_an_encoder_defined_before_loading_is_rebuilt(tmp_path):
    """A user's own Encoder subclass, defined (imported) in this process, loads from its exported file."""
    from lungheart_cl.checkpointing import export_encoder
    from lungheart_cl.encoders import SmallCNN

    class WiderCNN(SmallCNN):
        pass

    encoder = WiderCNN(channels=(8, 16))
    path = export_encoder(encoder, LogMelFrontend(), tmp_path / "encoder.pt", {})
    loaded = load_pretrained(path).encoder
    assert type(loaded) is WiderCNN
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), encoder.state_dict().values()))
