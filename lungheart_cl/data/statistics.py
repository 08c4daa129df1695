"""Front-end normalisation statistics from the training split, stored with the cache.

Computed once per (cache, front-end settings, training rows) and saved atomically next to the
segments, so every run and every DDP rank normalises identically without recomputing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from lungheart_cl.checkpointing import read_checkpoint
from lungheart_cl.frontend import LogMelFrontend


def _statistics_path(directory: Path, frontend: LogMelFrontend, rows: np.ndarray) -> Path:
    digest = hashlib.sha256(json.dumps(frontend.config, sort_keys=True).encode() + rows.tobytes()).hexdigest()
    return Path(directory) / f"frontend-stats-{digest[:16]}.pt"


def fit_frontend_statistics(frontend: LogMelFrontend, data, max_segments: int = 2000, seed: int = 0) -> Path:
    """Per-mel mean/std over up to `max_segments` training-split segments (a fixed random subset)."""
    rows = data.split.indices("train")
    if len(rows) > max_segments:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_segments, replace=False))
    path = _statistics_path(data.cache.directory, frontend, rows)
    if path.is_file():
        stats = read_checkpoint(path)  # tensors and plain data only, like every checkpoint
        frontend.set_statistics(stats["mean"], stats["std"])
        return path
    frontend.fit_statistics(batch["wave"] for batch in data.iterate_rows(rows, batch_size=256))
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"mean": frontend.mel_mean.cpu(), "std": frontend.mel_std.cpu(), "config": frontend.config,
                "segments": len(rows)}, tmp)
    os.replace(tmp, path)
    return path
