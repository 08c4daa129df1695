"""Front-end normalisation statistics from the training split, stored with the cache.

Computed once per (cache, front-end settings, training rows) and saved atomically next to the
segments, so every run and every DDP rank normalises identically without recomputing. The data
module computes them at setup and publishes them in its `DataDescription`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from lungheart_cl.checkpointing import read_checkpoint
from lungheart_cl.data.description import FrontendStatistics
from lungheart_cl.frontend import LogMelFrontend


def _statistics_path(directory: Path, frontend: LogMelFrontend, rows: np.ndarray) -> Path:
    digest = hashlib.sha256(json.dumps(frontend.config, sort_keys=True).encode() + rows.tobytes()).hexdigest()
    return Path(directory) / f"frontend-stats-{digest[:16]}.pt"


def statistics_rows(train_rows: np.ndarray, max_segments: int, seed: int = 0) -> np.ndarray:
    """Up to `max_segments` training rows, a fixed random subset."""
    if len(train_rows) > max_segments:
        return np.sort(np.random.default_rng(seed).choice(train_rows, max_segments, replace=False))
    return train_rows


def compute_frontend_statistics(frontend: LogMelFrontend, train_rows: np.ndarray,
                                read_rows: Callable[..., Iterator[dict]], directory: Path,
                                max_segments: int = 2000, seed: int = 0) -> tuple[FrontendStatistics, Path]:
    """Per-mel mean/std of `frontend` over up to `max_segments` training rows, read from (or saved to) the
    file of these settings and rows in the cache `directory`; `frontend` is left fitted with them."""
    rows = statistics_rows(train_rows, max_segments, seed)
    path = _statistics_path(directory, frontend, rows)
    if path.is_file():
        stats = read_checkpoint(path)  # tensors and plain data only, like every checkpoint
        frontend.set_statistics(stats["mean"], stats["std"])
    else:
        frontend.fit_statistics(batch["wave"] for batch in read_rows(rows, batch_size=256))
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"mean": frontend.mel_mean.cpu(), "std": frontend.mel_std.cpu(), "config": frontend.config,
                    "segments": len(rows)}, tmp)
        os.replace(tmp, path)
    statistics = FrontendStatistics(dict(frontend.config), frontend.mel_mean.detach().cpu().clone(),
                                    frontend.mel_std.detach().cpu().clone(), len(rows), max_segments)
    return statistics, path


def fit_frontend_statistics(frontend: LogMelFrontend, data, max_segments: int = 2000, seed: int = 0) -> Path:
    """`frontend` fitted on a set-up data module's training split (tools that build a front end themselves)."""
    return compute_frontend_statistics(frontend, data.split.indices("train"), data.iterate_rows,
                                       data.cache.directory, max_segments, seed)[1]
