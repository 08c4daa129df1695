"""Batch samplers for pretraining: metadata-stratified batch composition, rank-aware, seeded.

Negatives restricted to one stratum (e.g. same age group and sex) are only useful when a batch
holds many samples of each stratum. `StratifiedPairSampler` fills every batch from a few strata
and shards the batches over DDP ranks itself, so every rank's batch (and therefore the global
batch gathered by the loss) keeps that composition. It yields (anchor, partner) row pairs; the
partner comes from the pair policy, drawn here in the main process so workers stay pure readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from lungheart_cl.data.pairs import PairPolicy, group_codes
from lungheart_cl.data.records import is_unknown


class EpochCounter:
    """Where Lightning delivers the epoch: it calls ``set_epoch`` on ``loader.sampler`` and on
    ``loader.batch_sampler.sampler``, never on a batch sampler itself."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def batch_strata_codes(manifest: dict[str, np.ndarray], columns: Sequence[str]) -> np.ndarray:
    """A stratum code per row for the value combination of `columns`; -1 where any value is unknown
    (`records.is_unknown`): an unknown age group or sex is no stratum, so it never gathers rows as if
    they shared one (the loss never treats them as the same stratum either)."""
    codes = group_codes(*(manifest[c] for c in columns))
    unknown = np.any([is_unknown(manifest[c]) for c in columns], axis=0)
    return np.where(unknown, -1, codes)


def draw_counts(sizes: Sequence[int], weights: Sequence[float], total: int) -> np.ndarray:
    """Segments to draw from each source per epoch: ``total`` split in proportion to ``weights`` (largest
    remainders round, ties to the earlier source), so the counts are the same every epoch."""
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) != len(sizes) or not np.all(weights > 0) or not np.all(np.asarray(sizes) > 0):
        raise ValueError(f"every source needs segments and a positive weight; sizes {list(sizes)}, "
                         f"weights {weights.tolist()}")
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]] += 1
    return counts


class StratifiedPairSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (anchor, partner) cache rows.

    ``strata`` gives a stratum code per pool row (None = unstratified shuffling; -1 = no stratum, an
    unknown value). Each batch is built from chunks of ``batch_size // strata_per_batch`` rows of one
    stratum; leftovers of each stratum and the rows without one are pooled and chunked last, so every
    row is used once per epoch up to the drop of an incomplete final batch. All ranks draw the same
    permutation (seed, epoch) and take every ``world_size``-th batch, truncated to the same count, so
    ranks stay in lockstep. The epoch arrives through ``self.sampler`` (an `EpochCounter`), where
    Lightning's fit loop sets it.

    ``sources`` (a source code 0..S-1 per pool row) with ``source_weights`` (one per source) weight a
    pool's sources: an epoch keeps the pool's size in segments, and source ``s`` supplies the share
    ``w_s / sum(w)`` of them (`draw_counts`). A source whose share exceeds its size repeats each of its
    segments ``floor`` or ``ceil`` (share / size) times (whole permutations, then a random subset); a
    larger one shows a new random subset every epoch. The drawn segments then fill strata and batches
    as above, so a batch holds each source in about its weight's proportion and an oversampled segment
    may appear twice in one batch (its two copies are views of the same sample: positives). Without
    weights every row is drawn once, as in an unweighted pool.
    """

    def __init__(self, rows: np.ndarray, pair_policy: PairPolicy, batch_size: int, *,
                 strata: np.ndarray | None = None, strata_per_batch: int = 2, seed: int = 0,
                 rank: int = 0, world_size: int = 1, sources: np.ndarray | None = None,
                 source_weights: Sequence[float] | None = None):
        if batch_size < 2:
            raise ValueError("contrastive batches need batch_size >= 2")
        if strata is not None and len(strata) != len(rows):
            raise ValueError("strata must give one code per pool row")
        self.rows = np.asarray(rows)
        self.pair_policy = pair_policy
        self.batch_size = batch_size
        self.strata = None if strata is None or strata_per_batch <= 0 else np.asarray(strata)
        self.strata_per_batch = max(strata_per_batch, 1)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.sampler = EpochCounter()
        if len(self.rows) < batch_size * world_size:
            raise ValueError(f"the pretraining pool has {len(self.rows)} segments, fewer than one batch of "
                             f"{batch_size} per rank x {world_size} rank(s); lower the batch size")
        self.source_members: list[np.ndarray] | None = None
        if source_weights is not None:
            sources = np.asarray(sources)
            if len(sources) != len(self.rows):
                raise ValueError("sources must give one code per pool row")
            self.source_members = [np.flatnonzero(sources == s) for s in range(len(source_weights))]
            self.draws = draw_counts([len(m) for m in self.source_members], source_weights, len(self.rows))

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """For loops outside Lightning (the bench); Lightning sets ``self.sampler``'s epoch."""
        self.sampler.set_epoch(epoch)

    def _drawn(self, rng: np.random.Generator) -> np.ndarray:
        """The pool-local rows of one epoch: each once, or by source weight (see the class docstring)."""
        if self.source_members is None:
            return np.arange(len(self.rows))
        parts = []
        for members, count in zip(self.source_members, self.draws):
            repeats, extra = divmod(int(count), len(members))
            parts += [members] * repeats + [rng.choice(members, extra, replace=False)]
        return np.concatenate(parts)

    def _batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Pool-local index batches for one epoch, before sharding."""
        drawn = self._drawn(rng)
        if self.strata is None:
            order = rng.permutation(drawn)
            usable = len(order) // self.batch_size * self.batch_size
            return list(order[:usable].reshape(-1, self.batch_size))
        chunk = max(self.batch_size // self.strata_per_batch, 1)
        chunks, leftovers = [], []
        codes = self.strata[drawn]
        for code in np.unique(codes[codes >= 0]):
            members = rng.permutation(drawn[codes == code])
            full = len(members) // chunk * chunk
            chunks += list(members[:full].reshape(-1, chunk))
            leftovers.append(members[full:])
        leftovers.append(drawn[codes < 0])  # no stratum: mixed chunks only
        rest = rng.permutation(np.concatenate(leftovers))
        chunks += list(rest[: len(rest) // chunk * chunk].reshape(-1, chunk))
        flat = np.concatenate([chunks[i] for i in rng.permutation(len(chunks))]) if chunks else rest[:0]
        usable = len(flat) // self.batch_size * self.batch_size
        return list(flat[:usable].reshape(-1, self.batch_size))

    def _num_batches_total(self) -> int:
        return len(self._batches(np.random.default_rng(self.seed)))

    def __len__(self) -> int:
        return self._num_batches_total() // self.world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        batches = self._batches(rng)
        per_rank = len(batches) // self.world_size
        for batch in batches[self.rank: per_rank * self.world_size: self.world_size]:
            partners = self.pair_policy.partners(batch, rng)
            yield list(zip(self.rows[batch].tolist(), self.rows[partners].tolist()))
