"""Section 7: a pretraining pool of two synthetic heart sources, vs the same sources on their own.

Cache build: the pool from scratch (each source's cache built, then pooled), in audio seconds cached per
wall second, against building the two sources' caches one by one as single-source runs do. DataLoader:
batches per second of the weighted pool (reads from two cache files) against one source alone, same
batch size and workers.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lungheart_cl.bench.common import Check, Context, Stopwatch, alternate, batches_of, table, timed
from lungheart_cl.data.datamodule import PretrainDataModule
from lungheart_cl.data.sources import read_source

# Synthetic patients per source: PhysioNet 2016 (one recording each) and CirCor 2022 (one per chest location).
SOURCES = {False: {"physionet2016": 240, "circor2022": 48}, True: {"physionet2016": 10, "circor2022": 6}}
LOADER_BATCHES = {False: 60, True: 6}
TARGET_RATIO = 0.7  # pooling may cost some speed, not most of it


@dataclass
class PoolResult:
    recordings: dict[str, int]  # per source
    audio_s: float
    pool_build_s: float
    pool_hit_s: float
    pool_x_real_time: float
    single_build_s: float  # the sources' caches built one by one
    single_x_real_time: float
    build_ratio: float  # pool x real time / single-source x real time
    batch_pairs: int
    workers: int
    pool_batches_per_s: float
    single_batches_per_s: float  # the larger source alone
    loader_ratio: float

    def checks(self) -> list[Check]:
        return [Check("pool cache build vs single-source builds", self.build_ratio, TARGET_RATIO, "x", True),
                Check("pool DataLoader vs one source", self.loader_ratio, TARGET_RATIO, "x", True)]


def ensure_sources(ctx: Context) -> dict[str, Path]:
    """The synthetic sources, written once (untimed)."""
    from lungheart_cl.data.synthetic import synthesize

    roots = {}
    for dataset, patients in SOURCES[ctx.quick].items():
        roots[dataset] = ctx.data_dir / f"pool-{dataset}-{patients}p"
        if not roots[dataset].exists():
            print(f"generating the pool's synthetic {dataset} under {roots[dataset]} (once, untimed) ...", flush=True)
            synthesize(dataset, roots[dataset], patients=patients, seed=0)
    return roots


def _pool(roots: dict[str, Path], cache_dir: str, batch_size: int, workers: int) -> PretrainDataModule:
    sources = [{"dataset": dataset, "root": str(root), "weight": 1.0} for dataset, root in roots.items()]
    return PretrainDataModule(sources=sources, cache_dir=cache_dir, batch_size=batch_size, num_workers=workers,
                              batch_strata=["source"])


def _single(dataset: str, root: Path, cache_dir: str, batch_size: int, workers: int) -> PretrainDataModule:
    return PretrainDataModule(dataset=dataset, root=str(root), cache_dir=cache_dir, batch_size=batch_size,
                              num_workers=workers)


def build_pool(roots: dict[str, Path], data_dir: Path) -> tuple[float, float]:
    """(seconds to build the pool into a fresh directory, seconds to find it built)."""
    fresh = tempfile.mkdtemp(prefix="fresh-pool-", dir=data_dir)
    try:
        _, build_s = timed(_pool(roots, fresh, 16, 0).prepare_data)
        _, hit_s = timed(_pool(roots, fresh, 16, 0).prepare_data)
        return build_s, hit_s
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def build_singles(roots: dict[str, Path], data_dir: Path) -> float:
    """Seconds to build each source's cache on its own (fresh directories), one after the other."""
    seconds = 0.0
    for dataset, root in roots.items():
        fresh = tempfile.mkdtemp(prefix="fresh-single-", dir=data_dir)
        try:
            seconds += timed(_single(dataset, root, fresh, 16, 0).prepare_data)[1]
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
    return seconds


def batches_per_second(data: PretrainDataModule, warmup: int, batches: int) -> float:
    with batches_of(data.train_dataloader()) as stream:
        for _ in range(warmup):
            next(stream)
        watch = Stopwatch()
        for _ in range(batches):
            next(stream)
        return batches / watch.lap()


def run(ctx: Context) -> PoolResult:
    sizes = ctx.sizes
    roots = ensure_sources(ctx)
    recordings = {dataset: read_source(dataset, root).recordings for dataset, root in roots.items()}
    audio_s = sum(r.duration_s for found in recordings.values() for r in found)
    rounds = alternate(ctx, pool=lambda: build_pool(roots, ctx.data_dir),
                       single=lambda: build_singles(roots, ctx.data_dir))
    pool_build_s, pool_hit_s = min(r[0] for r in rounds["pool"]), min(r[1] for r in rounds["pool"])
    single_build_s = min(rounds["single"])

    cache = str(ctx.cache_root)
    pool = _pool(roots, cache, sizes.loader_batch, sizes.workers)
    pool.setup("fit")  # persistent caches (untimed)
    larger = max(pool.summary()["sources"], key=lambda source: source["train_segments"])["name"]
    single = _single(larger, roots[larger], cache, sizes.loader_batch, sizes.workers)
    single.setup("fit")
    batches = LOADER_BATCHES[ctx.quick]
    loads = alternate(ctx, pool=lambda: batches_per_second(pool, sizes.loader_warmup, batches),
                      single=lambda: batches_per_second(single, sizes.loader_warmup, batches))
    pool_rate, single_rate = max(loads["pool"]), max(loads["single"])
    counts = {dataset: len(found) for dataset, found in recordings.items()}
    result = PoolResult(counts, audio_s, pool_build_s, pool_hit_s, audio_s / pool_build_s, single_build_s,
                        audio_s / single_build_s, single_build_s / pool_build_s, sizes.loader_batch, sizes.workers,
                        pool_rate, single_rate, pool_rate / single_rate)
    table(f"[7] pretraining pool: synthetic {', '.join(f'{d} ({n} recordings)' for d, n in counts.items())}, "
          f"{audio_s / 3600:.2f} h at 2 kHz, 4 s; best of {len(rounds['pool'])} alternating rounds",
          ["pipeline", "audio s", "wall s", "x real time"],
          [["pool: every source's cache + the pool (fresh dir)", audio_s, pool_build_s, result.pool_x_real_time],
           ["pool again (every cache hit)", audio_s, pool_hit_s, None],
           ["single-source caches, built one by one", audio_s, single_build_s, result.single_x_real_time]])
    table(f"  DataLoader: batch {sizes.loader_batch} pairs, {sizes.workers} workers, {batches} batches after "
          f"{sizes.loader_warmup} warm-up",
          ["pipeline", "batches/s", "pairs/s"],
          [["pool, weights 1:1, batch_strata [source] (two cache files)", pool_rate, pool_rate * sizes.loader_batch],
           [f"{larger} alone (one cache file)", single_rate, single_rate * sizes.loader_batch]])
    print(f"  ratios pool/single: cache build {result.build_ratio:.2f}x, DataLoader {result.loader_ratio:.2f}x")
    return result
