"""What a data module tells a model about its data: one frozen `DataDescription`, published at setup.

A model sees its batches and this description, nothing else of the data module: the sample rate and
task, which cache rows are labelled (and their labels), which patient and recording each cache row
belongs to (to score at the task's level), the patients of every split, the pretraining pool, and the
front end's statistics over the training split (`FrontendStatistics`). Rows a model must read outside
the loaders (its frozen features, the monitor before training) come through `RowReader`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from torch import Tensor

from lungheart_cl.data.cache import CacheConfig
from lungheart_cl.data.datasets import SegmentDataset
from lungheart_cl.data.tasks import Task

ROW_COLUMNS = ("patient_id", "recording_id")  # what aggregation to a recording or patient needs per row


def frozen_array(values: np.ndarray) -> np.ndarray:
    """A read-only copy: the description cannot change the data module's arrays, nor they it."""
    out = np.array(values, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class FrontendStatistics:
    """Per-mel mean and std of the log-mel front end ``config`` over ``segments`` training segments (a fixed
    random subset of at most ``max_segments``)."""

    config: dict[str, Any]
    mean: Tensor
    std: Tensor
    segments: int
    max_segments: int


@dataclass(frozen=True)
class RowReader:
    """Batches of given cache rows, read in this process (no workers), in the order given."""

    dataset: SegmentDataset
    batch_size: int

    def __call__(self, rows: np.ndarray, batch_size: int | None = None) -> Iterator[dict]:
        size = batch_size or self.batch_size
        for start in range(0, len(rows), size):
            yield self.dataset.__getitems__(np.asarray(rows[start:start + size]).tolist())


@dataclass(frozen=True)
class DataDescription:
    """The data a run stands on, as a model may see it (see the module docstring). Rows are cache rows."""

    dataset: str
    sample_rate: int
    task: Task | None
    cache_config: CacheConfig
    cache_directory: Path
    cache_key: str
    num_rows: int
    row_ids: Mapping[str, np.ndarray]  # ROW_COLUMNS, one entry per cache row
    labelled_rows: np.ndarray
    labelled_labels: np.ndarray  # the labels of `labelled_rows`
    label_seed: int
    label_fraction: float | None
    label_tag: str
    split_patients: Mapping[str, tuple[str, ...]]  # train / val / test
    eval_rows: Mapping[str, np.ndarray]  # val / test: the split's labelled rows, as its loader serves them
    read_rows: RowReader
    monitor_bank_rows: np.ndarray | None = None  # pretraining: the online monitor's labelled bank
    monitor_strata: Mapping[str, int] = field(default_factory=dict)  # pretraining: the task's strata per patient
    pool: Mapping[str, Any] = field(default_factory=dict)  # pretraining: which audio an encoder trained here saw
    frontend_statistics: FrontendStatistics | None = None

    @property
    def num_classes(self) -> int:
        return self.task.num_classes if self.task is not None else 0
