"""Checkpoints written atomically, exported encoders, and loading either back safely with clear errors.

An exported encoder (``encoder-best.pt``) holds the encoder's class path and arguments, its
weights, the front end's settings and training statistics, and where it came from; the
classifier rebuilds exactly that network from it or from a full Lightning checkpoint.
Everything we save is tensors and plain Python data, so every file is read with
``torch.load(weights_only=True)``: a crafted checkpoint is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lungheart_cl.encoders import Encoder, UnknownEncoderError, build_encoder
from lungheart_cl.errors import UserError
from lungheart_cl.frontend import LogMelFrontend

EXPORT_FORMAT = "lungheart-cl-encoder"
EXPORT_VERSION = 1


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used here, naming the file and the mismatch."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a truncated file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes through a temporary file and an atomic rename, and reads
    with `read_checkpoint` (resume, test of the selected checkpoint): never code, whatever the caller asks."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(Path(path), map_location if map_location is not None else "cpu")


@dataclass
class PretrainedEncoder:
    encoder: Encoder
    frontend: LogMelFrontend
    provenance: dict


def _frontend_from(config: dict, state: dict) -> LogMelFrontend:
    frontend = LogMelFrontend(**config)
    frontend.load_state_dict(state)
    return frontend


def substate(state: dict, prefix: str) -> dict:
    """The entries of a state dict under `prefix` (e.g. "encoder."), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _unsafe_content(error: pickle.UnpicklingError) -> str | None:
    """What torch's weights-only unpickler refused (e.g. "the Python object io.open"), or None."""
    text = str(error)
    if "Weights only load failed" not in text:
        return None
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"a reference to the Python object {found.group(1)}"
    detail = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    return detail.group(1).strip() if detail else "content other than tensors and plain data"


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """A torch file (checkpoint, exported encoder, statistics) as a dict, loaded with weights_only=True,
    or a one-line CheckpointError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_content(error)
        if unsafe is None:
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_one_line(error)})") from error
        raise CheckpointError(f"{path}: refused, it holds {unsafe}; checkpoints are loaded as tensors and plain "
                              f"data only, never as code (was it written by lungheart-cl?)") from error
    except Exception as error:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_one_line(error)})") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a lungheart-cl checkpoint (a {type(payload).__name__})")
    return payload


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


def export_encoder(encoder: Encoder, frontend: LogMelFrontend, path: Path, provenance: dict) -> Path:
    atomic_torch_save({"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "encoder_config": encoder.config,
                       "encoder_state": encoder.state_dict(), "frontend_config": frontend.config,
                       "frontend_state": frontend.state_dict(), "embedding_dim": encoder.embedding_dim,
                       "provenance": provenance}, path)
    return Path(path)


def export_from_checkpoint(checkpoint_path: Path, path: Path) -> Path:
    loaded = load_pretrained(checkpoint_path)
    return export_encoder(loaded.encoder, loaded.frontend, path, loaded.provenance)


def load_pretrained(path: Path | str) -> PretrainedEncoder:
    """Encoder + front end from an exported encoder or a pretraining Lightning checkpoint."""
    path = Path(path)
    payload = read_checkpoint(path)
    try:
        encoder_config, frontend_config, encoder_state, frontend_state, provenance = _pretrained_parts(path, payload)
    except KeyError as error:
        raise CheckpointError(f"{path}: incomplete lungheart-cl checkpoint (no {error} entry)") from error
    try:
        encoder = build_encoder(encoder_config)
    except UnknownEncoderError as error:
        raise CheckpointError(f"{path}: {error}") from error
    result = encoder.load_state_dict(encoder_state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: weights do not fit {encoder_config['class_path']} "
                              f"{encoder_config.get('init_args')}: missing {result.missing_keys[:5]}, "
                              f"unexpected {result.unexpected_keys[:5]}")
    if provenance.get("checkpoint") not in (None, str(path)):  # exported from a Lightning checkpoint
        provenance["source_checkpoint"] = provenance["checkpoint"]
    provenance["checkpoint"] = str(path)
    provenance["encoder"] = encoder_config
    return PretrainedEncoder(encoder, _frontend_from(frontend_config, frontend_state), provenance)


def _pretrained_parts(path: Path, payload: dict) -> tuple[dict, dict, dict, dict, dict]:
    """(encoder config, front-end config, encoder state, front-end state, provenance) of either format."""
    if payload.get("format") == EXPORT_FORMAT:
        encoder_config, frontend_config = payload["encoder_config"], payload["frontend_config"]
        encoder_state, frontend_state = payload["encoder_state"], payload["frontend_state"]
        provenance = dict(payload.get("provenance", {}))
    elif "lungheart_cl" in payload and "state_dict" in payload:
        meta = payload["lungheart_cl"]
        if meta.get("kind") != "pretrain":
            raise CheckpointError(f"{path}: a {meta.get('kind')} checkpoint, not a pretraining one")
        encoder_config, frontend_config = meta["encoder_config"], meta["frontend_config"]
        encoder_state = substate(payload["state_dict"], "encoder.")
        frontend_state = substate(payload["state_dict"], "frontend.")
        provenance = {"checkpoint": str(path), "scheme": meta.get("scheme"), "data": meta.get("data", {}),
                      "epoch": payload.get("epoch"),
                      "global_step": payload.get("global_step"), "knn_auroc_init": meta.get("knn_auroc_init"),
                      "task_probe_auroc_init": meta.get("task_probe_auroc_init")}
    else:
        raise CheckpointError(f"{path}: not a lungheart-cl pretraining checkpoint or exported encoder "
                              f"(keys: {sorted(payload)[:8]})")
    return encoder_config, frontend_config, encoder_state, frontend_state, provenance


def check_same_encoder(requested: dict | None, loaded: dict, path: Path) -> None:
    """An explicitly requested encoder must be the one the checkpoint was trained with."""
    if requested is None or requested == loaded:
        return
    raise CheckpointError(f"{path}: the checkpoint holds {loaded['class_path']} {loaded.get('init_args')}, "
                          f"but the configuration asks for {requested['class_path']} {requested.get('init_args')}")


def resolve_checkpoint(checkpoint: str | None, runs_dir: str = "runs/pretrain") -> str | None:
    """'latest' = the newest encoder exported by `lungheart-cl pretrain` (under runs/pretrain/);
    sweeps keep their own pretrainings under their runs_dir, so they never become 'latest'."""
    if checkpoint != "latest":
        return checkpoint
    candidates = sorted(Path(runs_dir).glob("**/encoder-best.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise CheckpointError(f"checkpoint 'latest': no encoder-best.pt under {runs_dir}/; run `make pretrain` first")
    return str(candidates[-1])
