"""Pair policies: which segment becomes the second view of an anchor in contrastive pretraining.

Each policy picks partners for a whole array of anchors at once (vectorised, seeded by the caller).
Where an anchor has no candidate (a recording with one cycle, a patient recorded at one location),
the policy falls back to a nearer candidate or to the anchor itself (so both views come from
augmentation alone). `is_fallback` marks such pairs: pretraining logs their share every epoch
(``train/pair_fallback_fraction``, `callbacks.PairFallbackMonitor`) and warns when most pairs fall back.
"""

from __future__ import annotations

import inspect
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

    def is_fallback(self, anchors: np.ndarray, partners: np.ndarray) -> np.ndarray:
        """Per pair: whether the anchor got itself as partner (no candidate existed)."""
        return np.asarray(partners) == np.asarray(anchors)

    def fallback_fraction(self, anchors: np.ndarray, seed: int = 0) -> float:
        """Share of anchors whose partner is a fallback (`is_fallback`), for one seeded draw."""
        anchors = np.asarray(anchors)
        partners = self.partners(anchors, np.random.default_rng(seed))
        return float(np.mean(self.is_fallback(anchors, partners))) if len(anchors) else 0.0


class SameSegment(PairPolicy):
    """SimCLR: both views are augmentations of the same segment."""

    name = "same_segment"

    def partners(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(anchors).copy()

    def is_fallback(self, anchors: np.ndarray, partners: np.ndarray) -> np.ndarray:
        return np.zeros(len(anchors), dtype=bool)  # the anchor itself is this policy's partner, not a fallback


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

    def is_fallback(self, anchors: np.ndarray, partners: np.ndarray) -> np.ndarray:
        """Pairs at the anchor's own location (the patient has no other), the anchor itself included."""
        return self._by_location.start[np.asarray(partners)] == self._by_location.start[np.asarray(anchors)]


class SameRecordingDifferentTime(PairPolicy):
    """Another window of the same recording whose start (manifest ``start_s``) is ``min_gap_s`` away or more.

    COLA (Saeed et al. 2021) and OPERA's contrastive models take the two positives from different
    times of one recording, so the encoder must match the patient's sound rather than the exact
    waveform. With overlapping windows (``data.hop_seconds`` below the window length) and
    ``RandomTimeCrop`` this gives different-time crops. An anchor whose recording holds no window
    that far away gets another, nearer window of the recording, and one alone in its recording gets
    itself; `fallback_fraction` counts both.
    """

    name = "same_recording_different_time"
    _tolerance_s = 1e-6  # manifest times are rounded to 0.1 ms: a gap of exactly min_gap_s counts

    def __init__(self, min_gap_s: float = 2.0):
        if not min_gap_s > 0:
            raise ValueError(f"min_gap_s must be positive (0 is the same_recording policy), got {min_gap_s}")
        self.min_gap_s = float(min_gap_s)

    def fit(self, manifest: Manifest) -> PairPolicy:
        codes = group_codes(manifest["recording_id"])
        start = np.asarray(manifest["start_s"], dtype=np.float64)
        self._start = start
        self._recording = _Groups.of(codes)
        # one sortable key per row: recordings laid end to end, far enough apart that a gap never crosses one
        span = float(start.max() - start.min()) if len(start) else 0.0
        self._key = codes * (span + 2 * self.min_gap_s + 1.0) + (start - (start.min() if len(start) else 0.0))
        self._order = np.argsort(self._key, kind="stable")
        self._sorted_key = self._key[self._order]
        sorted_codes = codes[self._order]
        self._first = np.searchsorted(sorted_codes, codes, side="left")  # per row: its recording's block
        self._end = np.searchsorted(sorted_codes, codes, side="right")
        return self

    def partners(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        anchors = np.asarray(anchors)
        key, gap = self._key[anchors], self.min_gap_s - self._tolerance_s
        first, end = self._first[anchors], self._end[anchors]
        before = np.searchsorted(self._sorted_key, key - gap, side="right") - first  # starts <= s - gap
        after_start = np.searchsorted(self._sorted_key, key + gap, side="left")  # starts >= s + gap from here
        after = end - after_start
        count = before + after
        pick = rng.integers(0, np.maximum(count, 1))
        sorted_pos = np.where(pick < before, first + pick, after_start + pick - before)
        far = self._order[np.clip(sorted_pos, 0, max(len(self._order) - 1, 0))]
        nearer = self._recording.other_member(anchors, rng)
        return np.where(count > 0, far, nearer)

    def is_fallback(self, anchors: np.ndarray, partners: np.ndarray) -> np.ndarray:
        """Pairs whose partner starts less than ``min_gap_s`` away (a nearer window, or the anchor itself)."""
        gap = np.abs(self._start[np.asarray(partners)] - self._start[np.asarray(anchors)])
        return gap < self.min_gap_s - self._tolerance_s


@dataclass(frozen=True)
class PairFallbacks:
    """A policy fitted on the pool's rows, asked about pairs of cache rows (as batches carry them)."""

    policy: PairPolicy
    local: np.ndarray  # cache row -> its index among the pool's rows (-1: not in the pool)

    @classmethod
    def of(cls, policy: PairPolicy, pool_rows: np.ndarray, num_rows: int) -> PairFallbacks:
        local = np.full(num_rows, -1, dtype=np.int64)
        local[pool_rows] = np.arange(len(pool_rows))
        return cls(policy, local)

    def __call__(self, anchors: np.ndarray, partners: np.ndarray) -> np.ndarray:
        return self.policy.is_fallback(self.local[np.asarray(anchors)], self.local[np.asarray(partners)])


PAIR_POLICIES: dict[str, type[PairPolicy]] = {
    cls.name: cls for cls in (SameSegment, SameRecording, SamePatient, SamePatientSameLocation, SameLocation,
                              SamePatientDifferentLocation, SameRecordingDifferentTime)
}


def make_pair_policy(name: str, manifest: Manifest, min_gap_s: float | None = None) -> PairPolicy:
    """The named policy fitted on ``manifest``; ``min_gap_s`` (None = its default) only where it takes one."""
    if name not in PAIR_POLICIES:
        raise ValueError(f"unknown pair policy {name!r}; choose one of {sorted(PAIR_POLICIES)}")
    cls = PAIR_POLICIES[name]
    if min_gap_s is None:
        return cls().fit(manifest)
    if "min_gap_s" not in inspect.signature(cls).parameters:
        raise ValueError(f"pair_min_gap_s applies to {SameRecordingDifferentTime.name} only, not to pair policy {name!r}")
    return cls(min_gap_s=min_gap_s).fit(manifest)
