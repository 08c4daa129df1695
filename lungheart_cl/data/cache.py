"""Decode, resample and cut every recording once (`segments`) into a float16 memmap plus a manifest table.

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

import numpy as np
from tqdm.auto import tqdm

from lungheart_cl.data.build_folders import end_with_parent, new_build_directory, remove_stale_builds
from lungheart_cl.data.manifest import column_types, manifest_row, read_manifest, write_manifest
from lungheart_cl.data.records import DataError, Problem, Recording, SourceDataset
from lungheart_cl.data.segments import CacheConfig, SegmentSpec, decode_segments, plan_segments
from lungheart_cl.data.spec import Column

# 2: one "dropped" list in cache.json; 3: per-dataset extra columns and their types in cache.json,
# the key hashes the records as JSON; 4: the recording's sub-database is the column "site"
CACHE_FORMAT_VERSION = 4


class CacheInfo:
    """What a segment cache and a pool (`pool_cache.PoolCache`) both read from their ``info``."""

    info: dict

    @property
    def key(self) -> str:
        return self.info["key"]

    @property
    def dropped(self) -> list[dict[str, str]]:
        """What the cache leaves out, one entry per file: ``{"stage": "read" | "decode", "file", "problem"}``
        ("read": the reader skipped it, with skip_bad; "decode": its audio failed to decode or cut; a pool's
        entries also name their ``source``)."""
        return list(self.info.get("dropped", []))


@dataclass
class SegmentCache(CacheInfo):
    """A built cache: the memmap of segments and the manifest describing each row."""

    directory: Path
    segments: np.memmap
    manifest: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)
    built: bool = False  # this call decoded and published it; False: an existing cache was found

    def __len__(self) -> int:
        return self.segments.shape[0]

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
        rows = _manifest_rows(source, plans, offsets, valid, keep, columns)
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


def _manifest_rows(source: SourceDataset, plans: list[list[SegmentSpec]], offsets: np.ndarray,
                   valid: dict[int, list[tuple[int, int]]], keep: list[int], columns: tuple[Column, ...]) -> list[dict]:
    """One manifest row per kept segment; `valid` holds each recording's spans by its first row (`offsets`)."""
    rows = []
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
