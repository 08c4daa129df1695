"""The pool as one cache: its sources' rows in source order, ids namespaced, a harmonised manifest, each
source's own split, and a small directory of its own (``pool.json``); see `lungheart_cl.data.pool`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lungheart_cl.data.cache import CacheInfo
from lungheart_cl.data.datasets import SegmentStore
from lungheart_cl.data.records import UNKNOWN, is_unknown
from lungheart_cl.data.splits import DatasetSplit
from lungheart_cl.errors import ConfigError

if TYPE_CHECKING:
    from lungheart_cl.data.datamodule import SoundDataModule
    from lungheart_cl.data.pool import PoolSource

Manifest = dict[str, np.ndarray]
SEPARATOR = "/"  # between a source's name and its own patient or recording id
POOL_FORMAT_VERSION = 1
# Metadata every source has; a source's empty value is written as the explicit unknown.
HARMONISED = ("location", "device", "site", "age_group", "sex")
_FILL = {"str": "", "int": -1, "float": np.nan}


def namespaced(name: str, ids: np.ndarray) -> np.ndarray:
    """A source's ids as the pool writes them: ``NAME/id``."""
    return np.char.add(f"{name}{SEPARATOR}", ids.astype(str))


def own_ids(name: str, ids: np.ndarray) -> list[str]:
    """Pool ids back to the ids their source uses (``NAME/a0001`` -> ``a0001``)."""
    prefix = len(name) + len(SEPARATOR)
    return [str(value)[prefix:] for value in ids]


class PooledStore:
    """The rows of several sources' segment files as one store (the pool's rows, in source order)."""

    def __init__(self, stores: Sequence[SegmentStore]):
        lengths = {store.shape[1] for store in stores}
        if len(lengths) != 1:
            raise ValueError(f"pooled caches must share one segment length, got {sorted(lengths)} samples")
        self.stores = list(stores)
        self.offsets = np.concatenate([[0], np.cumsum([store.shape[0] for store in stores])]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), lengths.pop())

    def read(self, rows: np.ndarray) -> torch.Tensor:
        """float16 rows as stored, one sorted read per source file (see `SegmentStore.read`)."""
        rows = np.asarray(rows, dtype=np.int64)
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), self.shape[1]), dtype=np.float16)
        for p in np.unique(part):
            mine = part == p
            out[mine] = self.stores[p].read(rows[mine] - self.offsets[p]).numpy()
        return torch.from_numpy(out)


@dataclass
class PoolCache(CacheInfo):
    """The pool as a cache: its harmonised manifest, its store over the sources' files, and a small directory
    of its own (``pool.json``: the sources and their caches; the front end's statistics of the pool)."""

    directory: Path
    manifest: Manifest
    store: PooledStore
    info: dict
    built: bool = False  # this call wrote the pool's directory (whether a source's cache was built: `SourcePool`)

    def __len__(self) -> int:
        return self.store.shape[0]


def pooled_manifest(members: Sequence[tuple[PoolSource, SoundDataModule]]) -> Manifest:
    """The sources' manifests, one after the other: ids namespaced, ``source`` the source's name, missing
    metadata the explicit unknown, and every source's extra columns (empty / -1 / NaN for the others)."""
    types: dict[str, tuple[str, str]] = {}  # column -> (kind, first source declaring it)
    for source, member in members:
        for column in member.manifest:
            kind = member.cache.info["column_types"].get(column, "str")
            seen = types.setdefault(column, (kind, source.label))
            if seen[0] != kind:
                raise ConfigError(f"sources {seen[1]} and {source.label} both have a manifest column {column!r}, "
                                  f"as {seen[0]} and {kind}; a pool needs one type per column")
    parts: dict[str, list[np.ndarray]] = {column: [] for column in types}
    for source, member in members:
        manifest, rows = member.manifest, len(member.cache)
        for column, (kind, _) in types.items():
            values = manifest.get(column)
            if values is None:
                values = np.full(rows, _FILL[kind], dtype=object if kind == "str" else None)
            elif column in ("patient_id", "recording_id"):
                values = namespaced(source.label, values)
            elif column == "source":
                values = np.full(rows, source.label)
            elif column in HARMONISED:
                values = np.where(is_unknown(values), UNKNOWN, values)
            parts[column].append(values)
    return {column: np.concatenate(values).astype(str) if types[column][0] == "str" else np.concatenate(values)
            for column, values in parts.items()}


def pooled_split(members: Sequence[tuple[PoolSource, SoundDataModule]]) -> DatasetSplit:
    """Each source's own split, row for row: the pool holds out what each source's own run holds out."""
    segment_split = np.concatenate([member.split.segment_split for _, member in members])
    shared = tuple(f"{source.label}{SEPARATOR}{patient}" for source, member in members
                   for patient in member.split.shared_patients)
    notes = tuple(f"{source.label}: {note}" for source, member in members for note in member.split.notes)
    return DatasetSplit(segment_split, shared, notes)


def pool_key(members: Sequence[tuple[PoolSource, SoundDataModule]]) -> str:
    """Hash of the sources' names and cache keys: a pool of the same caches has the same directory."""
    entries = [[source.label, member.cache.key] for source, member in members]
    return hashlib.sha256(json.dumps({"version": POOL_FORMAT_VERSION, "sources": entries}).encode()).hexdigest()


def open_pool(members: Sequence[tuple[PoolSource, SoundDataModule]], cache_root: Path) -> PoolCache:
    """The pool of these loaded sources (each with its cache, manifest and split), its directory written
    if missing (atomically, so concurrent ranks agree)."""
    key = pool_key(members)
    directory = Path(cache_root) / "pools" / f"pool-{key[:16]}"
    info = {"format_version": POOL_FORMAT_VERSION, "key": key,
            "sources": [{"name": source.label, "dataset": source.dataset, "root": str(member.data_root),
                         "cache": str(member.cache.directory), "cache_key": member.cache.key,
                         "segments": len(member.cache)} for source, member in members],
            "num_segments": sum(len(member.cache) for _, member in members),
            "num_recordings": sum(member.cache.info["num_recordings"] for _, member in members),
            "dropped": [{**drop, "source": source.label} for source, member in members
                        for drop in member.cache.dropped]}
    built = not (directory / "pool.json").is_file()
    if built:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".pool.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps({k: v for k, v in info.items() if k != "dropped"}, indent=2))
        os.replace(tmp, directory / "pool.json")
    store = PooledStore([member.store for _, member in members])
    return PoolCache(directory, pooled_manifest(members), store, info, built)
