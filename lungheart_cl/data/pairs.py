"""Pair policies: which segment becomes the second view of an anchor in contrastive pretraining.

Each policy picks partners for a whole array of anchors at once (vectorised, seeded by the caller).
Where an anchor has no candidate (a recording with one cycle, a patient recorded at one location),
the policy falls back to the anchor itself, so both views come from augmentation alone; the
fraction of such fallbacks is reported by `fallback_fraction`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Manifest = dict[str, np.ndarray]


def group_codes(*columns: np.ndarray) -> np.ndarray:
    """Integer code per row for the tuple of column values."""
    keys = np.stack([np.unique(c, return_inverse=True)[1] for c in columns], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)


@dataclass
class _Groups:
    """Rows sorted by group; each row knows its group's start and size in that order."""

    order: np.ndarray
    position: np.ndarray  # position of each row inside `order`
    start: np.ndarray  # per row: where its group starts in `order`
    size: np.ndarray  # per row: its group's size

    @classmethod
    def of(cls, codes: np.ndarray) -> _Groups:
        order = np.argsort(codes, kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        _, first, counts = np.unique(codes[order], return_index=True, return_counts=True)
        group_of_sorted = np.repeat(np.arange(len(first)), counts)
        start = first[group_of_sorted][position]
        size = counts[group_of_sorted][position]
        return cls(order, position, start, size)

    def other_member(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random other member of each anchor's group (the anchor itself if it is alone)."""
        size = self.size[anchors]
        step = 1 + rng.integers(0, np.maximum(size - 1, 1))
        offset = (self.position[anchors] - self.start[anchors] + step) % size
        return np.where(size > 1, self.order[self.start[anchors] + offset], anchors)


class PairPolicy:
    """Base class: `partners(anchors, rng)` returns one partner row per anchor row."""

    name = "base"

    def fit(self, manifest: Manifest) -> PairPolicy:
        return self

    def partners(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def fallback_fraction(self, anchors: np.ndarray, seed: int = 0) -> float:
        """Share of anchors that got themselves as partner (no candidate existed)."""
        partners = self.partners(anchors, np.random.default_rng(seed))
        return float(np.mean(partners == anchors)) if len(anchors) else 0.0


class SameSegment(PairPolicy):
    """SimCLR: both views are augmentations of the same segment."""

    name = "same_segment"

    def partners(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(anchors).copy()


class _SameKey(PairPolicy):
    columns: tuple[str, ...] = ()

    def fit(self, manifest: Manifest) -> PairPolicy:
        self._groups = _Groups.of(group_codes(*(manifest[c] for c in self.columns)))
        return self

    def partners(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._groups.other_member(np.asarray(anchors), rng)


class SameRecording(_SameKey):
    """Another segment (cycle or window) of the same recording."""

    name = "same_recording"
    columns = ("recording_id",)


class SamePatient(_SameKey):
    """Another segment of the same patient, from any recording."""

    name = "same_patient"
    columns = ("patient_id",)


class SamePatientSameLocation(_SameKey):
    """Another segment of the same patient at the same chest location (any of its recordings)."""

    name = "same_patient_same_location"
    columns = ("patient_id", "location")


class SameLocation(_SameKey):
    """A segment from the same chest location, any patient (the study's same-location scheme)."""

    name = "same_location"
    columns = ("location",)


class SamePatientDifferentLocation(PairPolicy):
    """A segment of the same patient at another chest location; same location when there is none."""

    name = "same_patient_different_location"

    def fit(self, manifest: Manifest) -> PairPolicy:
        patient = group_codes(manifest["patient_id"])
        location = group_codes(manifest["patient_id"], manifest["location"])
        # sort by (patient, location) so each location block sits inside its patient block
        self._by_location = _Groups.of(location)
        order = self._by_location.order
        self._order = order
        self._patient_start = np.empty(len(order), dtype=np.int64)
        self._patient_size = np.empty(len(order), dtype=np.int64)
        sorted_patient = patient[order]
        _, first, counts = np.unique(sorted_patient, return_index=True, return_counts=True)
        group = np.repeat(np.arange(len(first)), counts)
        self._patient_start[order] = first[group]
        self._patient_size[order] = counts[group]
        return self

    def partners(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        anchors = np.asarray(anchors)
        loc_start, loc_size = self._by_location.start[anchors], self._by_location.size[anchors]
        pat_start, pat_size = self._patient_start[anchors], self._patient_size[anchors]
        candidates = pat_size - loc_size
        pick = rng.integers(0, np.maximum(candidates, 1))
        # skip over the anchor's own location block inside its patient block
        sorted_pos = pat_start + pick + np.where(pat_start + pick >= loc_start, loc_size, 0)
        other_location = self._order[np.minimum(sorted_pos, len(self._order) - 1)]
        same_location = self._by_location.other_member(anchors, rng)
        return np.where(candidates > 0, other_location, same_location)


PAIR_POLICIES: dict[str, type[PairPolicy]] = {
    cls.name: cls for cls in (SameSegment, SameRecording, SamePatient, SamePatientSameLocation, SameLocation,
                              SamePatientDifferentLocation)
}


def make_pair_policy(name: str, manifest: Manifest) -> PairPolicy:
    if name not in PAIR_POLICIES:
        raise ValueError(f"unknown pair policy {name!r}; choose one of {sorted(PAIR_POLICIES)}")
    return PAIR_POLICIES[name]().fit(manifest)
