"""Batch samplers for pretraining: metadata-stratified batch composition, rank-aware, seeded.

Negatives restricted to one stratum (e.g. same age group and sex) are only useful when a batch
holds many samples of each stratum. `StratifiedPairSampler` fills every batch from a few strata
and shards the batches over DDP ranks itself, so every rank's batch (and therefore the global
batch gathered by the loss) keeps that composition. It yields (anchor, partner) row pairs; the
partner comes from the pair policy, drawn here in the main process so workers stay pure readers.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from lungheart_cl.data.pairs import PairPolicy


class EpochCounter:
    """Where Lightning delivers the epoch: it calls ``set_epoch`` on ``loader.sampler`` and on
    ``loader.batch_sampler.sampler``, never on a batch sampler itself."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class StratifiedPairSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (anchor, partner) cache rows.

    ``strata`` gives a stratum code per pool row (None = unstratified shuffling). Each batch is
    built from chunks of ``batch_size // strata_per_batch`` rows of one stratum; leftovers of each
    stratum are pooled and chunked last, so every row is used once per epoch up to the drop of an
    incomplete final batch. All ranks draw the same permutation (seed, epoch) and take every
    ``world_size``-th batch, truncated to the same count, so ranks stay in lockstep. The epoch
    arrives through ``self.sampler`` (an `EpochCounter`), where Lightning's fit loop sets it.
    """

    def __init__(self, rows: np.ndarray, pair_policy: PairPolicy, batch_size: int, *,
                 strata: np.ndarray | None = None, strata_per_batch: int = 2, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
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

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """For loops outside Lightning (the bench); Lightning sets ``self.sampler``'s epoch."""
        self.sampler.set_epoch(epoch)

    def _batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Pool-local index batches for one epoch, before sharding."""
        if self.strata is None:
            order = rng.permutation(len(self.rows))
            usable = len(order) // self.batch_size * self.batch_size
            return list(order[:usable].reshape(-1, self.batch_size))
        chunk = max(self.batch_size // self.strata_per_batch, 1)
        chunks, leftovers = [], []
        for code in np.unique(self.strata):
            members = rng.permutation(np.flatnonzero(self.strata == code))
            full = len(members) // chunk * chunk
            chunks += list(members[:full].reshape(-1, chunk))
            leftovers.append(members[full:])
        rest = rng.permutation(np.concatenate(leftovers)) if leftovers else np.array([], int)
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
