"""Section 2: segments per second delivered by the pretraining DataLoader, vs a one-item dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lungheart_cl.bench.common import Check, Context, Stopwatch, alternate, batches_of, table

TARGET_SEGMENTS_PER_S = 2000.0


@dataclass
class LoaderResult:
    batch_pairs: int
    workers: int
    batches: int
    segments_per_s: float  # anchor + partner = 2 segments per pair
    naive_batches: int
    naive_segments_per_s: float
    speedup: float

    def checks(self) -> list[Check]:
        return [Check("DataLoader throughput", self.segments_per_s, TARGET_SEGMENTS_PER_S, "segments/s", True)]


class NaiveItemDataset(Dataset):
    """The baseline: one (anchor, partner) dict per ``__getitem__``, one memmap row read each, default collate."""

    def __init__(self, path, shape, pairs: np.ndarray, valid: np.ndarray, codes: dict, labels: np.ndarray):
        self.path, self.shape, self.pairs = path, tuple(shape), pairs
        self.valid, self.codes, self.labels = valid, codes, labels
        self.array = None

    def __len__(self) -> int:
        return len(self.pairs)

    def _fields(self, row: int, prefix: str) -> dict:
        if self.array is None:  # opened in the worker
            self.array = np.memmap(self.path, dtype=np.float16, mode="r", shape=self.shape)
        return {f"{prefix}wave": torch.from_numpy(self.array[row].astype(np.float32)),
                f"{prefix}index": row, f"{prefix}valid": torch.from_numpy(self.valid[row]),
                f"{prefix}meta": {k: int(v[row]) for k, v in self.codes.items()}}

    def __getitem__(self, item: int) -> dict:
        anchor, partner = (int(v) for v in self.pairs[item])
        out = self._fields(anchor, "")
        out.update(self._fields(partner, "partner_"))
        out["label"] = int(self.labels[anchor])
        return out


def epoch_pairs(dm) -> np.ndarray:
    """(anchor, partner) rows of one epoch of the real sampler, flattened: the same pairs for baselines."""
    return np.asarray([pair for batch in dm.train_sampler() for pair in batch], dtype=np.int64)


def naive_loader(dm, batch_size: int, workers: int) -> DataLoader:
    valid = np.stack([dm.manifest["valid_start"], dm.manifest["valid_end"]], 1)
    dataset = NaiveItemDataset(dm.store.path, dm.store.shape, epoch_pairs(dm), valid, dm.codes, dm.labels)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, drop_last=True)


def segments_per_second(loader: DataLoader, warmup: int, batches: int) -> float:
    """Segments delivered per second over `batches` batches after `warmup` batches (workers started)."""
    segments = 0
    with batches_of(loader) as stream:
        for _ in range(warmup):
            next(stream)
        watch = Stopwatch()
        for _ in range(batches):
            batch = next(stream)
            segments += len(batch["wave"]) + len(batch["partner_wave"])
        return segments / watch.lap()


def run(ctx: Context) -> LoaderResult:
    sizes = ctx.sizes
    dm = ctx.datamodule(sizes.loader_batch)
    rounds = alternate(ctx,
                       ours=lambda: segments_per_second(dm.train_dataloader(), sizes.loader_warmup,
                                                        sizes.loader_batches),
                       naive=lambda: segments_per_second(naive_loader(dm, sizes.loader_batch, sizes.workers),
                                                         sizes.loader_warmup, sizes.naive_loader_batches))
    ours, naive = max(rounds["ours"]), max(rounds["naive"])
    result = LoaderResult(sizes.loader_batch, sizes.workers, sizes.loader_batches, ours, sizes.naive_loader_batches,
                          naive, ours / naive)
    table(f"[2] pretraining DataLoader: batch {sizes.loader_batch} pairs, {sizes.workers} workers, "
          f"segments = anchors + partners (2 per pair), after {sizes.loader_warmup} warm-up batches; "
          f"best of {len(rounds['ours'])} alternating rounds",
          ["pipeline", "batches", "segments/s", "pairs/s"],
          [["ours: PairDataset.__getitems__ (whole-batch read)", result.batches, ours, ours / 2],
           ["naive: one item per __getitem__ + default collate", result.naive_batches, naive, naive / 2]])
    print(f"  rounds (segments/s): ours {', '.join(f'{v:,.0f}' for v in rounds['ours'])}; "
          f"naive {', '.join(f'{v:,.0f}' for v in rounds['naive'])};  ratio ours/naive: {result.speedup:.2f}x")
    return result
