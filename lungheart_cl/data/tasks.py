"""Diagnosis tasks: how a manifest row becomes a class label, and at which level it is scored.

A label of -1 means "not usable for this task" (e.g. CirCor murmur 'unknown' in the binary task,
a patient without a diagnosis); such segments are left out of classification, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

Manifest = dict[str, np.ndarray]
Level = Literal["segment", "recording", "patient"]


@dataclass(frozen=True)
class Task:
    """A classification target. ``level`` is where predictions are aggregated for scoring."""

    name: str
    classes: tuple[str, ...]
    level: Level
    labeler: Callable[[Manifest], np.ndarray]
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2

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


def _lookup(values: np.ndarray, mapping: dict[str, int]) -> np.ndarray:
    return np.asarray([mapping.get(str(v).strip().lower(), -1) for v in values], dtype=np.int64)


def _healthy_vs_disease(m: Manifest) -> np.ndarray:
    diagnosis = np.char.lower(np.char.strip(m["diagnosis"].astype(str)))
    return np.where(diagnosis == "", -1, np.where(diagnosis == "healthy", 0, 1))


def _icbhi_4class(m: Manifest) -> np.ndarray:
    crackle, wheeze = m["crackle"], m["wheeze"]
    labels = crackle + 2 * wheeze  # normal 0, crackle 1, wheeze 2, both 3
    return np.where((crackle < 0) | (wheeze < 0), -1, labels)


def _normal_vs_abnormal(m: Manifest) -> np.ndarray:
    # PhysioNet 2016 labels recordings; CirCor releases with an Outcome label patients
    label = np.where(m["recording_label"] != "", m["recording_label"], m["outcome"])
    return _lookup(label, {"normal": 0, "abnormal": 1})


TASKS: dict[str, Task] = {
    "healthy_vs_disease": Task(
        "healthy_vs_disease", ("healthy", "disease"), "segment", _healthy_vs_disease,
        "ICBHI: patient diagnosis Healthy vs any disease, scored per respiratory cycle (the study's task)"),
    "icbhi_4class": Task(
        "icbhi_4class", ("normal", "crackle", "wheeze", "both"), "segment", _icbhi_4class,
        "ICBHI 2017 challenge: cycle-level normal / crackle / wheeze / both"),
    "crackle": Task(
        "crackle", ("no_crackle", "crackle"), "segment", lambda m: m["crackle"],
        "ICBHI: crackles present in the cycle"),
    "wheeze": Task(
        "wheeze", ("no_wheeze", "wheeze"), "segment", lambda m: m["wheeze"],
        "ICBHI: wheezes present in the cycle"),
    "normal_vs_abnormal": Task(
        "normal_vs_abnormal", ("normal", "abnormal"), "recording", _normal_vs_abnormal,
        "PhysioNet 2016: normal vs abnormal heart sound, window scores averaged per recording"),
    "murmur": Task(
        "murmur", ("absent", "present"), "patient", lambda m: _lookup(m["murmur"], {"absent": 0, "present": 1}),
        "CirCor 2022: murmur present vs absent per patient ('unknown' patients left out)"),
    "murmur_3class": Task(
        "murmur_3class", ("absent", "present", "unknown"), "patient",
        lambda m: _lookup(m["murmur"], {"absent": 0, "present": 1, "unknown": 2}),
        "CirCor 2022: murmur present / unknown / absent per patient (challenge weighted accuracy)"),
}

DEFAULT_TASK = {"icbhi": "healthy_vs_disease", "physionet2016": "normal_vs_abnormal", "circor2022": "murmur"}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]
