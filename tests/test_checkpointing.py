"""Checkpoints never run code when loaded, through every loader users reach (`python -m lungheart_cl`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lungheart_cl.checkpointing import AtomicCheckpointIO, CheckpointError, load_pretrained
from lungheart_cl.data.datamodule import PretrainDataModule
from lungheart_cl.data.statistics import fit_frontend_statistics
from lungheart_cl.frontend import LogMelFrontend

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "experiments" / "pretrain_lung_default.yaml"
FINETUNE = REPO / "experiments" / "finetune_lung_default.yaml"


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
