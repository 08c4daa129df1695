"""Patient-disjoint train/val/test splits and nested, seeded label fractions and label budgets.

Every split assigns whole patients (the original study split heart recordings, not subjects).
Validation is always carved from training patients; the test split is only read at the very end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lungheart_cl.errors import UserError

Manifest = dict[str, np.ndarray]
Strategy = Literal["random", "official", "official_patient_disjoint"]
SPLITS = ("train", "val", "test")


class LeakageError(RuntimeError):
    """A patient appears in more than one split."""


class LabelFractionError(UserError, ValueError):
    """A label fraction leaves a class without any labelled patient."""


class LabelBudgetError(LabelFractionError):
    """A label budget cannot be drawn: fewer patients than classes, or more than the training split holds."""


def label_tag(fraction: float | None, budget: int | None) -> str:
    """How run names and sweep keys spell the labelled subset: ``n40`` (a budget) or ``lf0.1`` (a fraction)."""
    return f"n{budget}" if budget is not None else f"lf{fraction:g}"


@dataclass(frozen=True)
class SplitConfig:
    """``random``: stratified by patient label. ``official``: ICBHI's challenge split, per recording
    (patients 156 and 218 sit on both sides, reported as a documented exception).
    ``official_patient_disjoint``: the same, each such patient moved wholly to the side holding
    most of their recordings (test on a tie). Validation is ``val_fraction`` of the training patients."""

    strategy: Strategy = "random"
    val_fraction: float = 0.2
    test_fraction: float = 0.2  # random strategy only
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in ("random", "official", "official_patient_disjoint"):
            raise ValueError(f"unknown split strategy {self.strategy!r}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in [0, 1)")


@dataclass(frozen=True)
class DatasetSplit:
    """The split of every segment, and the patients allowed in two splits (with why)."""

    segment_split: np.ndarray  # "train" | "val" | "test" per manifest row
    shared_patients: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.segment_split == split)

    def patients(self, manifest: Manifest, split: str) -> list[str]:
        return sorted(set(manifest["patient_id"][self.segment_split == split].tolist()))


def _count(n: int, fraction: float) -> int:
    """Patients of one stratum to take; at least one when the stratum can spare it, so small
    datasets still get both classes in every split."""
    wanted = int(round(n * fraction))
    return max(wanted, 1) if fraction > 0 and n >= 3 else wanted


def _shuffled_by_stratum(patients: list[str], strata: dict[str, int], seed: int) -> dict[int, list[str]]:
    rng = np.random.default_rng(seed)
    groups: dict[int, list[str]] = {}
    for patient in sorted(patients):
        groups.setdefault(strata.get(patient, -1), []).append(patient)
    return {k: [groups[k][i] for i in rng.permutation(len(groups[k]))] for k in sorted(groups)}


def _carve(patients: list[str], strata: dict[str, int], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split patients into (rest, carved) with `fraction` of each stratum carved out."""
    rest, carved = [], []
    for group in _shuffled_by_stratum(patients, strata, seed).values():
        k = _count(len(group), fraction)
        carved += group[:k]
        rest += group[k:]
    return rest, carved


def split_dataset(manifest: Manifest, strata: dict[str, int], config: SplitConfig) -> DatasetSplit:
    """Assign every segment to train/val/test by patient (see `SplitConfig`), then check leakage."""
    patient_ids = manifest["patient_id"]
    patients = sorted(set(patient_ids.tolist()))
    notes: list[str] = []
    shared: tuple[str, ...] = ()
    if config.strategy == "random":
        trainval, test = _carve(patients, strata, config.test_fraction, config.seed)
        split = np.where(np.isin(patient_ids, test), "test", "train").astype("<U5")
    else:
        split, shared, notes = _official(manifest, config.strategy)
        trainval = sorted(set(patient_ids[split == "train"].tolist()) - set(shared))
    _, val = _carve(trainval, strata, config.val_fraction, config.seed + 1)
    split[np.isin(patient_ids, val)] = "val"
    check_patient_disjoint(manifest, split, allowed=shared)
    return DatasetSplit(split, shared, tuple(notes))


def _official(manifest: Manifest, strategy: Strategy) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    official = manifest["official_split"]
    if not np.isin(official, ("train", "test")).all():
        missing = sorted(set(manifest["recording_id"][~np.isin(official, ("train", "test"))].tolist()))
        raise ValueError(f"split strategy {strategy!r} needs an official split for every recording; "
                         f"missing for {len(missing)} (e.g. {missing[:3]}); use strategy 'random'")
    split = official.astype("<U5").copy()
    patient_ids = manifest["patient_id"]
    both = sorted(p for p in set(patient_ids.tolist()) if len(set(official[patient_ids == p].tolist())) > 1)
    if not both:
        return split, (), []
    if strategy == "official":
        note = f"official split keeps patients {', '.join(both)} on both sides (as released); reported, not hidden"
        return split, tuple(both), [note]
    notes = []
    for patient in both:
        rows = patient_ids == patient
        recordings = {r: s for r, s in zip(manifest["recording_id"][rows], official[rows])}
        n_test = sum(s == "test" for s in recordings.values())
        side = "test" if n_test * 2 >= len(recordings) else "train"
        split[rows] = side
        notes.append(f"patient {patient}: {n_test} of {len(recordings)} recordings in the official test split; "
                     f"all moved to {side}")
    return split, (), notes


def check_patient_disjoint(manifest: Manifest, segment_split: np.ndarray, allowed: tuple[str, ...] = ()) -> None:
    """Fail loudly if a patient has segments in two splits (other than the documented `allowed`)."""
    seen: dict[str, set[str]] = {}
    for patient, split in zip(manifest["patient_id"].tolist(), segment_split.tolist()):
        seen.setdefault(patient, set()).add(split)
    leaking = {p: sorted(s) for p, s in seen.items() if len(s) > 1 and p not in allowed}
    if leaking:
        examples = "; ".join(f"{p} in {', '.join(s)}" for p, s in sorted(leaking.items())[:5])
        raise LeakageError(f"{len(leaking)} patient(s) appear in more than one split: {examples}")


def label_fraction_patients(patients: list[str], strata: dict[str, int], fraction: float, seed: int) -> list[str]:
    """The labelled patients for a label fraction: ``round(fraction * n)`` patients of each class,
    from one seeded permutation per class, so a smaller fraction's patients are always inside a
    larger one's (nested). Patients without a usable label (stratum -1) are never labelled."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    chosen: list[str] = []
    groups = _shuffled_by_stratum(patients, strata, seed)
    for stratum, group in groups.items():
        if stratum < 0:
            continue
        k = int(round(fraction * len(group)))
        if k == 0:
            smallest = 0.5 / len(group)
            raise LabelFractionError(
                f"label_fraction {fraction} of {len(group)} training patients of class {stratum} selects none; "
                f"every class needs at least one labelled patient (use label_fraction >= {smallest:.3f})")
        chosen += group[:k]
    if len([s for s in groups if s >= 0]) < 2:
        raise LabelFractionError(f"the training patients hold fewer than two classes: {sorted(groups)}")
    return sorted(chosen)


def labelling_order(patients: list[str], strata: dict[str, int], seed: int) -> list[str]:
    """Every training patient with a usable label, in the order a growing label budget labels them.

    One patient of each class comes first (so every budget holds every class); the others follow by
    Webster (Sainte-Lague) priority, the ``i``-th patient of a class of ``n`` at ``(i + 0.5) / n``, so any
    prefix is close to proportional to the class sizes. Budgets are prefixes of this one ordering, hence
    nested by construction (a per-class rounding of each budget would not be: the Alabama paradox)."""
    groups = {k: group for k, group in _shuffled_by_stratum(patients, strata, seed).items() if k >= 0}
    tie_break = np.random.default_rng([seed, 1])  # among equal priorities, independent of the class permutations
    keyed = [(-1.0 if i == 0 else (i + 0.5) / len(group), tie_break.random(), patient)
             for group in groups.values() for i, patient in enumerate(group)]
    return [patient for _, _, patient in sorted(keyed)]


def label_budget_patients(patients: list[str], strata: dict[str, int], budget: int, seed: int) -> list[str]:
    """The labelled patients for a label budget: the first ``budget`` of `labelling_order` (class-stratified,
    at least one per class, nested across budgets for one seed). Patients without a usable label (stratum -1)
    are never labelled."""
    order = labelling_order(patients, strata, seed)
    classes = sorted({strata.get(p, -1) for p in order})
    if len(classes) < 2:
        raise LabelFractionError(f"the training patients hold fewer than two classes: {classes}")
    if budget < len(classes):
        raise LabelBudgetError(f"labelled_patients {budget} cannot hold one patient of each of the {len(classes)} "
                               f"classes; use at least {len(classes)}")
    if budget > len(order):
        raise LabelBudgetError(f"labelled_patients {budget} exceeds the {len(order)} training patients with a "
                               f"label; the largest budget is {len(order)}")
    return sorted(order[:budget])
