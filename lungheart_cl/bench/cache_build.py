"""Section 1: building the segment cache of the ICBHI-sized dataset, vs decoding with librosa per file."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass

import librosa

from lungheart_cl.bench.common import Check, Context, table, timed
from lungheart_cl.data.cache import CacheConfig, build_cache
from lungheart_cl.data.datamodule import DEFAULTS
from lungheart_cl.data.sources import read_source

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


def naive_decode(paths: list, sample_rate: int) -> None:
    """The baseline: one process, ``librosa.load(path, sr=...)`` per file (decode + soxr resampling)."""
    for path in paths:
        librosa.load(path, sr=sample_rate)


def run(ctx: Context) -> CacheResult:
    root = ctx.ensure_dataset()
    source, read_s = timed(read_source, "icbhi", root)
    defaults = DEFAULTS["icbhi"]
    config = CacheConfig(defaults.sample_rate, defaults.segment_seconds)  # lung: 4 kHz, 4 s cycles
    audio_s = sum(r.duration_s for r in source.recordings)
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix="fresh-cache-", dir=ctx.data_dir)
    try:
        cache, build_s = timed(build_cache, source, config, fresh, progress=False)  # default worker count
        _, hit_s = timed(build_cache, source, config, fresh, progress=False)
        segments = len(cache)
        del cache
    finally:
        shutil.rmtree(fresh, ignore_errors=True)

    step = max(int(round(1 / ctx.sizes.naive_decode_fraction)), 1)
    subset = source.recordings[::step]
    librosa.load(subset[-1].audio_path, sr=config.sample_rate)  # warm-up: librosa's lazy imports take ~1 s
    _, naive_s = timed(naive_decode, [r.audio_path for r in subset], config.sample_rate)
    naive_audio_s = sum(r.duration_s for r in subset)
    ours_xrt, naive_xrt = audio_s / build_s, naive_audio_s / naive_s
    result = CacheResult(len(source.recordings), segments, audio_s, read_s, build_s, hit_s, ours_xrt,
                         len(subset), naive_audio_s, naive_s, naive_xrt, audio_s / naive_xrt, ours_xrt / naive_xrt)
    table(f"[1] cache build: {result.recordings} recordings, {audio_s / 3600:.2f} h of audio -> {segments} segments "
          f"({config.sample_rate} Hz, {config.segment_seconds:g} s)",
          ["pipeline", "recordings", "audio s", "wall s", "x real time"],
          [["ours: build_cache (fresh dir, default workers)", result.recordings, audio_s, build_s, ours_xrt],
           ["ours: build_cache again (cache hit)", result.recordings, audio_s, hit_s, None],
           [f"naive: librosa.load per file, 1 process (every {step}th)", len(subset), naive_audio_s, naive_s,
            naive_xrt],
           ["naive extrapolated to all recordings", result.recordings, audio_s, result.naive_extrapolated_s,
            naive_xrt]])
    print(f"  read_source (headers + annotations, untimed above): {read_s:.2f} s;  "
          f"ratio ours/naive x real time: {result.speedup:.2f}x")
    return result
