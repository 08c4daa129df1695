"""Decode, resample and cut every recording once into a float16 memmap plus a manifest table.

A cache directory holds ``segments.f16`` (N x L float16, row i = segment i), ``manifest.csv``
(one row per segment: ids, metadata, the dataset's extra columns, where the segment sits in its
recording; see `manifest`) and ``cache.json`` (parameters, key, counts, the manifest's column types,
and one list of what was dropped: files the reader skipped and recordings that failed to decode).
Its name carries a hash of the reader's output, the audio files' sizes and mtimes, the extra columns
and the parameters, so a changed input or setting selects a new directory.
It is built in a hidden folder named after its builder and renamed into place, so an interrupted
build never leaves a usable-looking half cache; what a killed build leaves is handled in
`build_folders`. Folders and files get the umask's permissions, so a group can share a cache.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from lungheart_cl.data.audio import load_audio
from lungheart_cl.data.build_folders import end_with_parent, new_build_directory, remove_stale_builds
from lungheart_cl.data.manifest import column_types, manifest_row, read_manifest, write_manifest
from lungheart_cl.data.records import DataError, Problem, Recording, SourceDataset
from lungheart_cl.data.spec import Column

# 2: one "dropped" list in cache.json; 3: per-dataset extra columns and their types in cache.json,
# the key hashes the records as JSON; 4: the recording's sub-database is the column "site"
CACHE_FORMAT_VERSION = 4
Padding = Literal["zero_center", "repeat", "context"]
Normalization = Literal["none", "recording_std"]


@dataclass(frozen=True)
class CacheConfig:
    """How recordings become fixed-length segments.

    Recordings with annotated events (ICBHI cycles) give one segment per event, fitted to
    ``segment_seconds`` by ``padding``: ``zero_center`` (the study's choice: the cycle centred in
    zeros, longer cycles centre-cropped), ``repeat`` (the cycle tiled), ``context`` (real audio of
    the recording around the centred cycle). Recordings without events (heart sounds) are cut
    into windows of ``segment_seconds`` every ``hop_seconds``; a last partial window is kept,
    zero-padded, when the audio it adds is at least half a window (or when it is the whole recording).
    """

    sample_rate: int
    segment_seconds: float
    padding: Padding = "zero_center"
    hop_seconds: float | None = None  # windows of event-less recordings; None = segment_seconds
    normalization: Normalization = "recording_std"  # removes per-recording gain (device, placement)

    def __post_init__(self) -> None:
        if self.padding not in ("zero_center", "repeat", "context"):
            raise ValueError(f"padding must be zero_center, repeat or context, not {self.padding!r}")
        if self.normalization not in ("none", "recording_std"):
            raise ValueError(f"normalization must be none or recording_std, not {self.normalization!r}")
        if self.sample_rate <= 0 or self.segment_seconds <= 0:
            raise ValueError("sample_rate and segment_seconds must be positive")

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round((self.hop_seconds or self.segment_seconds) * self.sample_rate))


@dataclass(frozen=True)
class SegmentSpec:
    """Where one segment comes from: a span of its recording, and its event (whose extras label it)."""

    start_s: float
    end_s: float
    event_index: int = -1  # index into Recording.events; -1 for windows


@dataclass
class SegmentCache:
    """A built cache: the memmap of segments and the manifest describing each row."""

    directory: Path
    segments: np.memmap
    manifest: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)
    built: bool = False  # this call decoded and published it; False: an existing cache was found

    def __len__(self) -> int:
        return self.segments.shape[0]

    @property
    def key(self) -> str:
        return self.info["key"]

    @property
    def dropped(self) -> list[dict[str, str]]:
        """What the cache leaves out, one entry per file: ``{"stage": "read" | "decode", "file", "problem"}``
        ("read": the reader skipped it, with skip_bad; "decode": its audio failed to decode or cut)."""
        return list(self.info.get("dropped", []))

    @classmethod
    def open(cls, directory: Path, source: SourceDataset | None = None, *, built: bool = False) -> SegmentCache:
        """Open a built cache. With `source`, the reader's drops are those of this read: a bad file that is
        skipped changes no recording, hence not the key, but must still be reported."""
        directory = Path(directory)
        info = json.loads((directory / "cache.json").read_text())
        if source is not None:
            info["dropped"] = reader_drops(source) + [d for d in info["dropped"] if d["stage"] == "decode"]
        segments = np.memmap(directory / "segments.f16", dtype=np.float16, mode="r",
                             shape=(info["num_segments"], info["segment_samples"]))
        return cls(directory, segments, read_manifest(directory / "manifest.csv", info["column_types"]), info, built)


def _drop(stage: str, problem: Problem) -> dict[str, str]:
    return {"stage": stage, "file": str(problem.path), "problem": problem.message}


def reader_drops(source: SourceDataset) -> list[dict[str, str]]:
    """The files the reader skipped (skip_bad), as entries of `SegmentCache.dropped`."""
    return [_drop("read", problem) for problem in source.problems]


def plan_segments(recording: Recording, config: CacheConfig) -> list[SegmentSpec]:
    """The segments a recording yields, from metadata alone (so offsets are known before decoding)."""
    if recording.events:
        return [SegmentSpec(e.start_s, e.end_s, i) for i, e in enumerate(recording.events)]
    seconds = recording.duration_s
    window, hop = config.segment_seconds, config.hop_seconds or config.segment_seconds
    starts = np.arange(0.0, max(seconds - window, 0.0) + 1e-9, hop)
    specs = [SegmentSpec(float(s), float(min(s + window, seconds))) for s in starts]
    uncovered = seconds - (starts[-1] + window)
    if uncovered >= window / 2:
        specs.append(SegmentSpec(float(starts[-1] + hop), float(seconds)))
    return specs


def cut_segment(audio: np.ndarray, spec: SegmentSpec, config: CacheConfig) -> tuple[np.ndarray, int, int]:
    """One fixed-length segment and the [valid_start, valid_end) samples that hold its own audio."""
    rate, length = config.sample_rate, config.segment_samples
    start = int(round(spec.start_s * rate))
    end = min(max(int(round(spec.end_s * rate)), start + 1), len(audio))
    piece = audio[start:end]
    if len(piece) == 0:
        raise ValueError(f"segment {spec} lies outside the audio ({len(audio)} samples)")
    out = np.zeros(length, dtype=np.float32)
    if spec.event_index < 0:  # windows start at their own time; only the tail is padded
        out[: len(piece)] = piece[:length]
        return out, 0, min(len(piece), length)
    if len(piece) >= length:  # long cycle: keep its centre
        offset = (len(piece) - length) // 2
        return piece[offset: offset + length].copy(), 0, length
    left = (length - len(piece)) // 2
    if config.padding == "zero_center":
        out[left: left + len(piece)] = piece
    elif config.padding == "repeat":
        reps = int(np.ceil(length / len(piece))) + 1
        tiled = np.tile(piece, reps)
        out[:] = np.roll(tiled[:length], left)  # the original cycle stays at the centre
    else:  # context: the recording's own audio around the centred cycle
        ctx_start = start - left
        lo, hi = max(ctx_start, 0), min(ctx_start + length, len(audio))
        out[lo - ctx_start: hi - ctx_start] = audio[lo:hi]
    return out, left, left + len(piece)


def decode_segments(recording: Recording, specs: list[SegmentSpec],
                    config: CacheConfig) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Decode one recording and cut its segments as float16 (the cache's storage precision), with
    each segment's valid span. Training caches and `predict` both prepare audio through this."""
    audio = load_audio(recording.audio_path, config.sample_rate, expected_rate=recording.sample_rate)
    if config.normalization == "recording_std":
        audio = audio - audio.mean()
        std = float(audio.std())
        if std > 0:
            audio = audio / std
    segments = np.empty((len(specs), config.segment_samples), dtype=np.float16)
    valid = []
    for row, spec in enumerate(specs):
        try:
            segment, lo, hi = cut_segment(audio, spec, config)
        except ValueError as error:
            raise DataError(recording.audio_path, str(error)) from error
        segments[row] = np.clip(segment, -65000, 65000)  # float16 range
        valid.append((lo, hi))
    return segments, valid


def _decode_into(directory: str, shape: tuple[int, int], offset: int, recording: Recording,
                 specs: list[SegmentSpec], config: CacheConfig) -> tuple[int, list[tuple[int, int]]]:
    """Worker: decode one recording and write its segments at rows [offset, offset+len(specs))."""
    segments, valid = decode_segments(recording, specs, config)
    store = np.memmap(Path(directory) / "segments.f16", dtype=np.float16, mode="r+", shape=shape)
    store[offset: offset + len(specs)] = segments  # the shared page cache makes it visible; fsync'd once at the end
    return offset, valid


def _canonical(value) -> bytes:
    """Plain data as JSON with sorted keys (paths as text): the same records hash the same in any process."""
    return json.dumps(value, sort_keys=True, default=str).encode()


def cache_key(source: SourceDataset, config: CacheConfig, columns: tuple[Column, ...] = ()) -> str:
    """Hash of everything the cache depends on: parsed metadata, audio file stats, extra columns, parameters."""
    digest = hashlib.sha256()
    digest.update(_canonical({"version": CACHE_FORMAT_VERSION, "dataset": source.name, "config": asdict(config),
                              "columns": [asdict(column) for column in columns]}))
    for recording in source.recordings:
        stat = recording.audio_path.stat()
        digest.update(_canonical([asdict(recording), asdict(source.patients[recording.patient_id]),
                                  stat.st_size, stat.st_mtime_ns]))
    return digest.hexdigest()


def cache_directory(cache_root: Path, source: SourceDataset, config: CacheConfig,
                    columns: tuple[Column, ...] = ()) -> Path:
    return Path(cache_root) / f"{source.name}-{config.sample_rate}hz-{cache_key(source, config, columns)[:16]}"


def build_cache(source: SourceDataset, config: CacheConfig, cache_root: Path, *, columns: tuple[Column, ...] = (),
                skip_bad: bool = False, workers: int | None = None, progress: bool = True) -> SegmentCache:
    """Return the cache for (source, config), building it if it does not exist yet (`SegmentCache.built`
    says which). `columns` are the dataset's extra manifest columns (`DatasetSpec.columns`). Its
    `dropped` lists every file the reader skipped and every recording that failed."""
    target = cache_directory(cache_root, source, config, columns)
    if (target / "cache.json").is_file():
        return SegmentCache.open(target, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(target.parent)
    plans = [plan_segments(r, config) for r in source.recordings]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in plans])]).astype(int)
    shape = (int(offsets[-1]), config.segment_samples)
    tmp = new_build_directory(target)
    try:
        np.memmap(tmp / "segments.f16", dtype=np.float16, mode="w+", shape=shape).flush()
        valid, problems = _decode_all(tmp, shape, offsets, source, plans, config, skip_bad, workers, progress)
        keep = [i for i, r in enumerate(source.recordings) if r.recording_id not in problems]
        if len(keep) < len(source.recordings):
            shape = _compact(tmp, shape, offsets, keep)
        rows = _manifest_rows(source, plans, valid, keep, columns)
        write_manifest(tmp / "manifest.csv", rows)
        info = {"format_version": CACHE_FORMAT_VERSION, "dataset": source.name, "root": str(source.root),
                "config": asdict(config), "key": cache_key(source, config, columns),
                "column_types": column_types(columns),
                "num_segments": shape[0], "segment_samples": shape[1],
                "num_recordings": len(keep), "notes": list(source.notes),
                "dropped": reader_drops(source) + [_drop("decode", p) for p in problems.values()]}
        (tmp / "cache.json").write_text(json.dumps(info, indent=2))
        _fsync(tmp / "segments.f16")
        built = _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SegmentCache.open(target, source, built=built)


def _decode_all(tmp: Path, shape: tuple[int, int], offsets: np.ndarray, source: SourceDataset,
                plans: list[list[SegmentSpec]], config: CacheConfig, skip_bad: bool, workers: int | None,
                progress: bool) -> tuple[dict[int, list[tuple[int, int]]], dict[str, Problem]]:
    """Decode every recording in worker processes; returns valid spans by offset and skipped files."""
    valid: dict[int, list[tuple[int, int]]] = {}
    problems: dict[str, Problem] = {}
    jobs = [(str(tmp), shape, int(offsets[i]), rec, plans[i], config) for i, rec in enumerate(source.recordings)]
    workers = min(workers or os.cpu_count() or 1, 8, len(jobs))
    bar = tqdm(total=len(jobs), desc=f"caching {source.name}", unit="rec",
               disable=None if progress else True)  # None: off when stderr is not a terminal (log files)

    def collect(recording: Recording, run) -> None:
        try:
            offset, spans = run()
            valid[offset] = spans
        except DataError as error:
            if not skip_bad:
                raise
            problems[recording.recording_id] = Problem.from_error(error)
        bar.update()

    try:
        if workers <= 1:
            for job in jobs:
                collect(job[3], lambda job=job: _decode_into(*job))
        else:  # fork, like DataLoader workers: no re-import of the user's main script (spawn would)
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=end_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(_decode_into, *job): job[3] for job in jobs}
                try:
                    for future in as_completed(futures):
                        collect(futures[future], future.result)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return valid, problems


def _compact(tmp: Path, shape: tuple[int, int], offsets: np.ndarray, keep: list[int]) -> tuple[int, int]:
    """Drop the rows of skipped recordings (rare: only with skip_bad)."""
    old = np.memmap(tmp / "segments.f16", dtype=np.float16, mode="r", shape=shape)
    rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in keep]) if keep else np.array([], int)
    new_shape = (len(rows), shape[1])
    new = np.memmap(tmp / "segments.tmp", dtype=np.float16, mode="w+", shape=new_shape)
    if len(rows):
        new[:] = old[rows]
    new.flush()
    del old, new
    os.replace(tmp / "segments.tmp", tmp / "segments.f16")
    return new_shape


def _manifest_rows(source: SourceDataset, plans: list[list[SegmentSpec]], valid: dict[int, list[tuple[int, int]]],
                   keep: list[int], columns: tuple[Column, ...]) -> list[dict]:
    rows = []
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in plans])]).astype(int)
    for i in keep:
        recording = source.recordings[i]
        patient = source.patients[recording.patient_id]
        for spec, (lo, hi) in zip(plans[i], valid[int(offsets[i])]):
            row = manifest_row(recording, patient, columns, spec.event_index, spec.start_s, spec.end_s)
            rows.append({**row, "valid_start": lo, "valid_end": hi})
    return rows


def _fsync(path: Path) -> None:
    """Durable on disk before the rename publishes it (one sync instead of one per recording)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _publish(tmp: Path, target: Path) -> bool:
    """Atomic rename into place; if another process won the race, keep theirs (returns False)."""
    try:
        os.rename(tmp, target)
    except OSError:
        if (target / "cache.json").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise
    return True
