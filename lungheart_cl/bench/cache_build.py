"""Section 1: building the segment cache of the ICBHI-sized dataset, vs decoding with librosa per file."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass

import librosa

from lungheart_cl.bench.common import BENCH_DATASET, Check, Context, alternate, table, timed
from lungheart_cl.data.cache import CacheConfig, build_cache
from lungheart_cl.data.sources import get_spec, read_source

BUILD_TARGET_S = 30.0
HIT_TARGET_S = 2.0


@dataclass
class CacheResult:
    recordings: int
    segments: int
    audio_s: float
    read_source_s: float
    build_s: float
    hit_s: float
    x_real_time: float  # audio seconds cached per wall second
    naive_recordings: int
    naive_audio_s: float
    naive_s: float
    naive_x_real_time: float
    naive_extrapolated_s: float  # librosa.load over the whole dataset at its measured rate
    speedup: float  # our x real time / naive x real time

    def checks(self) -> list[Check]:
        return [Check("cache build", self.build_s, BUILD_TARGET_S, "s", False),
                Check("cache hit", self.hit_s, HIT_TARGET_S, "s", False)]


def naive_decode(paths: list, sample_rate: int) -> float:
    """The baseline: one process, ``librosa.load(path, sr=...)`` per file (decode + soxr resampling); seconds."""
    _, seconds = timed(lambda: [librosa.load(path, sr=sample_rate) for path in paths])
    return seconds


def build_twice(source, config: CacheConfig, data_dir) -> tuple[float, float, int]:
    """(build seconds into a fresh directory with the default worker count, cache-hit seconds, segments)."""
    fresh = tempfile.mkdtemp(prefix="fresh-cache-", dir=data_dir)
    columns = get_spec(BENCH_DATASET).columns
    try:
        cache, build_s = timed(build_cache, source, config, fresh, columns=columns, progress=False)
        _, hit_s = timed(build_cache, source, config, fresh, columns=columns, progress=False)
        return build_s, hit_s, len(cache)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def run(ctx: Context) -> CacheResult:
    root = ctx.ensure_dataset()
    source, read_s = timed(read_source, BENCH_DATASET, root)
    spec = get_spec(BENCH_DATASET)
    config = CacheConfig(spec.sample_rate, spec.segment_seconds)  # the dataset's defaults (lung: 4 kHz, 4 s cycles)
    audio_s = sum(r.duration_s for r in source.recordings)
    step = max(int(round(1 / ctx.sizes.naive_decode_fraction)), 1)
    subset = source.recordings[::step]
    naive_audio_s = sum(r.duration_s for r in subset)
    librosa.load(subset[-1].audio_path, sr=config.sample_rate)  # warm-up: librosa's lazy imports take ~1 s
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    rounds = alternate(ctx, ours=lambda: build_twice(source, config, ctx.data_dir),
                       naive=lambda: naive_decode([r.audio_path for r in subset], config.sample_rate))
    build_s, hit_s = min(r[0] for r in rounds["ours"]), min(r[1] for r in rounds["ours"])
    segments, naive_s = rounds["ours"][0][2], min(rounds["naive"])
    ours_xrt, naive_xrt = audio_s / build_s, naive_audio_s / naive_s
    result = CacheResult(len(source.recordings), segments, audio_s, read_s, build_s, hit_s, ours_xrt,
                         len(subset), naive_audio_s, naive_s, naive_xrt, audio_s / naive_xrt, ours_xrt / naive_xrt)
    table(f"[1] cache build: {result.recordings} recordings, {audio_s / 3600:.2f} h of audio -> {segments} segments "
          f"({config.sample_rate} Hz, {config.segment_seconds:g} s); best of {len(rounds['ours'])} alternating rounds",
          ["pipeline", "recordings", "audio s", "wall s", "x real time"],
          [["ours: build_cache (fresh dir, default workers)", result.recordings, audio_s, build_s, ours_xrt],
           ["ours: build_cache again (cache hit)", result.recordings, audio_s, hit_s, None],
           [f"naive: librosa.load per file, 1 process (every {step}th)", len(subset), naive_audio_s, naive_s,
            naive_xrt],
           ["naive extrapolated to all recordings", result.recordings, audio_s, result.naive_extrapolated_s,
            naive_xrt]])
    print(f"  rounds: build {', '.join(f'{r[0]:.2f}' for r in rounds['ours'])} s; naive "
          f"{', '.join(f'{s:.2f}' for s in rounds['naive'])} s;  read_source (untimed above): {read_s:.2f} s")
    print(f"  ratio ours/naive x real time: {result.speedup:.2f}x (ours also cuts, normalises and writes the "
          f"segments; naive only decodes)")
    return result
