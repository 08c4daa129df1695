"""On-disk store of frozen-encoder features, shared by every run that evaluates the same encoder.

In linear and logistic modes the encoder is frozen, so a segment's features depend only on the
encoder and front-end weights and on the cached audio. A sweep (label draws x budgets) evaluates
one encoder on the same rows many times; with this store each row is encoded once across runs.

The key is a hash of both modules' configs and state dicts and of the segment cache's own key (a
hash of the audio and cutting parameters). One file per key, ``<key>.npz`` holding ``rows`` (int64
cache rows) and ``features`` (float32), rewritten under an exclusive lock (so two processes merge
their rows rather than drop each other's) into a temporary file that is fsync'd and renamed over
the old one: a reader sees the old or the new complete file, never a half-written one. It is read
with ``allow_pickle=False``, so loading never executes code. The device is not part of the key:
CPU and GPU float32 features differ by rounding only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the way features are computed changes, so old stores are not reused


def feature_key(encoder: nn.Module, frontend: nn.Module, segment_cache_key: str) -> str:
    """sha256 over the format version, both modules' configs and state dicts, and the segment cache key."""
    digest = hashlib.sha256()
    configs = {"version": FORMAT_VERSION, "segments": segment_cache_key,
               "encoder": getattr(encoder, "config", type(encoder).__qualname__),
               "frontend": getattr(frontend, "config", type(frontend).__qualname__)}
    digest.update(json.dumps(configs, sort_keys=True, default=str).encode())
    for prefix, module in (("encoder", encoder), ("frontend", frontend)):
        for name, tensor in module.state_dict().items():
            value = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{prefix}.{name}:{value.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureStore:
    """Features of one (encoder, front end, segment cache) by cache row, in ``directory/<key>.npz``."""

    def __init__(self, directory: Path | str, key: str, num_rows: int, dim: int):
        self.path = Path(directory) / f"{key[:32]}.npz"
        self.num_rows, self.dim = num_rows, dim

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, features) stored so far; empty when there is no file. A file that is unreadable or
        does not fit (num_rows, dim) is reported in one line and ignored: its rows are recomputed."""
        num_rows, dim = self.num_rows, self.dim
        empty = np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        if not self.path.is_file():
            return empty
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                rows, features = stored["rows"], stored["features"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            log.warning("%s: unreadable feature store (%s); its features are recomputed", self.path, error)
            return empty
        fits = (rows.ndim == 1 and features.shape == (len(rows), dim) and features.dtype == np.float32
                and (len(rows) == 0 or (rows.min() >= 0 and rows.max() < num_rows)))
        if not fits:
            log.warning("%s: %s features for rows up to %s do not fit %d rows x %d; they are recomputed",
                        self.path, features.shape, rows.max() if len(rows) else None, num_rows, dim)
            return empty
        return rows.astype(np.int64), features

    def save(self, rows: np.ndarray, features: np.ndarray) -> None:
        """Merge these rows into the stored ones (locked; atomic rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = np.asarray(rows, dtype=np.int64)
        features = np.asarray(features, dtype=np.float32)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            old_rows, old_features = self.load()
            keep = ~np.isin(old_rows, rows)
            rows, features = np.concatenate([old_rows[keep], rows]), np.concatenate([old_features[keep], features])
            order = np.argsort(rows, kind="stable")
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as handle:
                    np.savez(handle, rows=rows[order], features=features[order])
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)
