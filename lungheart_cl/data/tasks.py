"""Diagnosis tasks: how a manifest row becomes a class label, at which level it is scored, and how.

A dataset declares its tasks in its `DatasetSpec`; a task travels with its metric function, so
generic code scores any task without knowing its name. A label of -1 means "not usable for this
task" (e.g. CirCor murmur 'unknown' in the binary task, a patient without a diagnosis); such
segments are left out of classification, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from lungheart_cl.metrics import MetricFn, default_metrics

Manifest = dict[str, np.ndarray]
Level = Literal["segment", "recording", "patient"]
LEVELS = ("segment", "recording", "patient")


@dataclass(frozen=True)
class Task:
    """A classification target. ``level`` is where predictions are aggregated for scoring; ``metric``
    scores (probabilities, labels) at that level (None: `default_metrics`, by the class count)."""

    name: str
    classes: tuple[str, ...]
    level: Level
    labeler: Callable[[Manifest], np.ndarray]
    description: str
    metric: MetricFn | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"task {self.name}: level {self.level!r} is not one of {LEVELS}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"task {self.name}: needs at least two distinct classes, got {self.classes}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2

    def score(self, probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The task's metrics of (n, num_classes) probabilities against their labels."""
        return (self.metric or default_metrics)(probs, labels)

    def labels(self, manifest: Manifest) -> np.ndarray:
        labels = self.labeler(manifest).astype(np.int64)
        if labels.shape != (len(manifest["recording_id"]),):
            raise AssertionError(f"task {self.name}: labeler returned shape {labels.shape}")
        return labels

    def patient_strata(self, manifest: Manifest) -> dict[str, int]:
        """One stratum per patient for stratified splits and label fractions (-1: no usable label).

        Recording- and patient-level tasks: the patient's most frequent label (their only one, when
        labels are constant per patient). Segment-level tasks (crackle, ICBHI 4-class): whether the
        patient has any abnormal (label > 0) segment, since most patients' majority is "normal"."""
        labels = self.labels(manifest)
        strata: dict[str, int] = {}
        for patient in np.unique(manifest["patient_id"]):
            mine = labels[manifest["patient_id"] == patient]
            mine = mine[mine >= 0]
            if not len(mine):
                strata[str(patient)] = -1
            elif self.level == "segment":
                strata[str(patient)] = int((mine > 0).any())
            else:
                strata[str(patient)] = int(np.bincount(mine).argmax())
        return strata


def lookup(values: np.ndarray, mapping: dict[str, int]) -> np.ndarray:
    """Class index of each (stripped, lower-cased) value; -1 for a value the mapping lacks (or empty)."""
    return np.asarray([mapping.get(str(v).strip().lower(), -1) for v in values], dtype=np.int64)


def column_labeler(column: str, classes: tuple[str, ...]) -> Callable[[Manifest], np.ndarray]:
    """A labeler reading one manifest column whose values are class names (case-insensitive)."""
    mapping = {name.lower(): index for index, name in enumerate(classes)}
    return lambda manifest: lookup(manifest[column], mapping)
