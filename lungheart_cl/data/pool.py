"""A pretraining pool: several sources, each cached and split as it would be on its own, served as one.

``data.sources`` lists the pool's sources, each a mapping (see `PoolSource`)::

    data:
      sample_rate: 2000          # every source is cached at the pool's rate and segment length
      segment_seconds: 4.0
      sources:
        - {dataset: physionet2016, root: ../shared/data/physionet2016, weight: 1, normalization: none}
        - {dataset: circor2022, root: ../shared/data/circor2022, weight: 1}
      monitor_source: physionet2016   # the labelled source of the kNN / probe monitor (default: the first with a task)

Each source is a data module of its own (`SoundDataModule`): its cache is built or found exactly as a
single-source run with the pool's cache options builds it (and so is reused by that run, and it by
the pool), and it is split with its own task's strata and the pool's ``split``, ``val_fraction``,
``test_fraction`` and ``split_seed``, so its validation and test patients are the ones a
classification run on that source with the same split settings holds out. The pool serves the
training patients of every source; its segments are read from the sources' own cache files
(`pool_cache.PooledStore`), never copied.

In the pool's manifest patient and recording ids carry their source's name (``physionet2016/a0001``),
so two sources never share a patient; ``source`` names the segment's source (a metadata key: the loss's
``negative_keys: [source]`` keeps negatives within one source, cancelling device and site shortcuts;
``batch_strata: [source]`` fills batches by source); ``site`` keeps the recording's sub-database.
A metadata value a source lacks is the explicit "unknown", which never equals another unknown
(`datasets.metadata_codes`). Per-source ``weight`` sets each source's share of an epoch
(`sampler.StratifiedPairSampler`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lungheart_cl.data.pool_cache import SEPARATOR, Manifest, PoolCache, open_pool, own_ids, pooled_split
from lungheart_cl.data.splits import DatasetSplit
from lungheart_cl.errors import ConfigError

if TYPE_CHECKING:
    from lungheart_cl.data.cache import CacheConfig
    from lungheart_cl.data.datamodule import SoundDataModule
    from lungheart_cl.data.tasks import Task

# What a source may set for itself instead of taking the pool's setting.
OWN_CACHE_OPTIONS = ("normalization", "padding", "hop_seconds", "synthetic_patients")


@dataclass(frozen=True)
class PoolSource:
    """One entry of ``data.sources``: a dataset and root with the settings that may differ per source.

    Args:
        dataset: a registered dataset or a user's module (import path), as ``data.dataset``.
        root: its files; None = its embedded synthetic default.
        name: the name its ids carry (``NAME/patient``); default the dataset's. Unique in the pool.
        weight: its share of each epoch, relative to the others (all sources or none; none = by size).
        source_options: the reader's options, as ``data.source_options``.
        task: the task whose strata split it (and the monitor's task); None = the dataset's default.
        split: its split strategy; None = the dataset's default (ICBHI: official_patient_disjoint in its YAML).
        normalization / padding / hop_seconds: its cache options; None = the pool's (hop: the dataset's default).
        synthetic_patients: size of its synthetic default; None = the pool's ``synthetic_patients``.
    """

    dataset: str
    root: str | None = None
    name: str | None = None
    weight: float | None = None
    source_options: Mapping[str, Any] = field(default_factory=dict)
    task: str | None = None
    split: str | None = None
    normalization: str | None = None
    padding: str | None = None
    hop_seconds: float | None = None
    synthetic_patients: int | None = None

    @property
    def label(self) -> str:
        return self.name or self.dataset


def parse_sources(entries: Sequence[Mapping[str, Any]]) -> list[PoolSource]:
    """``data.sources`` as `PoolSource`s; a ConfigError names a bad entry, a repeated name or mixed weights."""
    allowed = [f.name for f in fields(PoolSource)]
    sources = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "dataset" not in entry:
            raise ConfigError(f"data.sources[{index}]: each source is a mapping with at least a dataset, "
                              f"got {entry!r}")
        unknown = sorted(set(entry) - set(allowed))
        if unknown:
            raise ConfigError(f"data.sources[{index}] ({entry['dataset']}): unknown key(s) {', '.join(unknown)} "
                              f"(a source takes {', '.join(allowed)})")
        source = PoolSource(**{**entry, "source_options": dict(entry.get("source_options") or {})})
        if SEPARATOR in source.label or not source.label:
            raise ConfigError(f"data.sources[{index}]: name {source.label!r} must be non-empty without {SEPARATOR!r}")
        if source.weight is not None and not source.weight > 0:
            raise ConfigError(f"data.sources[{index}] ({source.label}): weight must be positive, got {source.weight}")
        sources.append(source)
    if not sources:
        raise ConfigError("data.sources is empty; list at least one {dataset, root} source")
    names = [s.label for s in sources]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"data.sources: two sources are named {', '.join(repeated)}; give each its own name")
    weighted = [s.weight is not None for s in sources]
    if any(weighted) and not all(weighted):
        named = ", ".join(s.label for s in sources if s.weight is not None)
        raise ConfigError(f"data.sources: weight set for {named} only; "
                          f"give every source a weight, or none (then each counts by its size)")
    return sources


def pool_patients(manifest: Manifest, rows: np.ndarray, sources: Sequence[Mapping[str, Any]],
                  namespaced_ids: bool = True) -> list[dict]:
    """What a pretraining saw, per source (``{name, dataset, root, cache}``): those entries with the patients,
    by the source's own ids, whose segments are among `rows`. A classifier refuses an encoder that saw its
    validation or test patients. `namespaced_ids`: the manifest's ids carry the source's name (a pool's do)."""
    names, patients = manifest["source"][rows], manifest["patient_id"][rows]
    out = []
    for source in sources:
        mine = np.unique(patients[names == source["name"]])
        ids = own_ids(source["name"], mine) if namespaced_ids else [str(p) for p in mine]
        out.append({**source, "pool_patients": sorted(ids)})
    return out


def pretrained_sources(description: Mapping[str, Any]) -> list[dict]:
    """The sources a pretraining description (`pool_patients`) lists; a checkpoint written before pools
    holds one source's ``dataset`` and ``pool_patients`` at the top level."""
    if "sources" in description:
        return list(description["sources"])
    if "pool_patients" in description:
        return [{"name": description.get("dataset"), "dataset": description.get("dataset"),
                 "pool_patients": description["pool_patients"]}]
    return []


class SourcePool:
    """The sources of a pool, each a `SoundDataModule` of its own, and the pool made of them.

    `configure` builds every source's data module with the pool's settings (``settings``: the pretraining
    data module's cache, split and synthetic options, ``sample_rate`` / ``segment_seconds`` None = the
    sources' common default); `open` loads them (cache built or found, labelled, split) and returns the
    `PoolCache`. The monitor's labels and strata are those of ``monitor`` (a source's name) alone.
    """

    def __init__(self, sources: list[PoolSource], members: list[SoundDataModule], monitor: str | None):
        self.sources, self.members, self.monitor = sources, members, monitor
        self.notes: list[str] = []

    @classmethod
    def configure(cls, entries: Sequence[Mapping[str, Any]], monitor_source: str | None,
                  settings: Mapping[str, Any]) -> SourcePool:
        from lungheart_cl.data.datamodule import SoundDataModule
        from lungheart_cl.data.sources import get_spec

        sources = parse_sources(entries)
        specs = {source.label: get_spec(source.dataset) for source in sources}
        common = dict(settings)
        for option in ("sample_rate", "segment_seconds"):
            if common.get(option) is None:
                defaults = {name: getattr(spec, option) for name, spec in specs.items()}
                if len(set(defaults.values())) > 1:
                    raise ConfigError(f"the pool's sources default to different {option} "
                                      f"({', '.join(f'{n} {v:g}' for n, v in defaults.items())}); set data.{option}")
                common[option] = next(iter(defaults.values()))
        members = []
        for source in sources:
            own = {key: getattr(source, key) for key in OWN_CACHE_OPTIONS if getattr(source, key) is not None}
            members.append(SoundDataModule(**{**common, **own, "dataset": source.dataset, "root": source.root,
                                              "source_options": dict(source.source_options), "task": source.task,
                                              "split": source.split}))
        tasks = {source.label: member.task for source, member in zip(sources, members)}
        if monitor_source is None:
            monitor = next((name for name, task in tasks.items() if task is not None), None)
        elif monitor_source not in tasks:
            raise ConfigError(f"data.monitor_source {monitor_source!r} is not a source of data.sources "
                              f"(its sources: {', '.join(tasks)})")
        elif tasks[monitor_source] is None:
            raise ConfigError(f"data.monitor_source {monitor_source!r} has no labels to monitor with; "
                              f"name a source with a task")
        else:
            monitor = monitor_source
        return cls(sources, members, monitor)

    @property
    def name(self) -> str:
        """The pool as runs name its data: its sources' names joined by '+'."""
        return "+".join(source.label for source in self.sources)

    @property
    def task(self) -> Task | None:
        """The monitor's task (None: no source has labels, so no monitor)."""
        return self._monitor_member.task if self.monitor is not None else None

    @property
    def cache_config(self) -> CacheConfig:
        """The cache options every source shares (rate and segment length; the first source's others)."""
        return self.members[0].cache_config

    @property
    def weights(self) -> list[float] | None:
        return [source.weight for source in self.sources] if self.sources[0].weight is not None else None

    @property
    def built(self) -> bool:
        return any(member.cache_built for member in self.members)

    @property
    def _monitor_member(self) -> SoundDataModule:
        return self.members[[source.label for source in self.sources].index(self.monitor)]

    def _pairs(self) -> list[tuple[PoolSource, SoundDataModule]]:
        return list(zip(self.sources, self.members))

    def open(self, cache_root: Path) -> PoolCache:
        """Load every source not loaded yet (its cache built if missing, labelled, split), then the pool."""
        for source, member in self._pairs():
            if member.cache is None:
                notes = member.load()
                self.notes += [f"source {source.label} ({source.dataset}, {member.data_root}): cache "
                               f"{member.cache_status}: {member.cache.directory} ({len(member.cache)} segments)"]
                self.notes += [f"source {source.label}: {note}" for note in notes]
        return open_pool(self._pairs(), cache_root)

    def labels(self) -> np.ndarray:
        """Per pool row: its task label where it is a row of the monitor's source, else -1."""
        return np.concatenate([member.labels if source.label == self.monitor
                               else np.full(len(member.cache), -1, dtype=np.int64) for source, member in self._pairs()])

    def strata(self) -> dict[str, int]:
        """The monitor source's patients' task strata, by pool id (none without a monitor)."""
        if self.monitor is None:
            return {}
        return {f"{self.monitor}{SEPARATOR}{patient}": k for patient, k in self._monitor_member.strata.items()}

    def split(self) -> DatasetSplit:
        return pooled_split(self._pairs())

    def check_training_rows(self, manifest: Manifest, split: DatasetSplit) -> None:
        """Every source must lend the pool training segments (a source of none cannot be weighted or sampled)."""
        training = set(manifest["source"][split.segment_split == "train"].tolist())
        empty = [source.label for source in self.sources if source.label not in training]
        if empty:
            raise ConfigError(f"pool source(s) {', '.join(empty)}: no training patients left after the split "
                              f"(val_fraction / test_fraction); the pool cannot draw from them")

    def source_codes(self, names: np.ndarray) -> np.ndarray:
        """Per row: the index in ``data.sources`` of the source it names."""
        order = {source.label: index for index, source in enumerate(self.sources)}
        unique, inverse = np.unique(names, return_inverse=True)
        return np.asarray([order[name] for name in unique], dtype=np.int64)[inverse]

    def summary(self, manifest: Manifest, split: DatasetSplit) -> list[dict]:
        """Per source: where it comes from, its weight and its patients and segments per split."""
        out = []
        for source, member in self._pairs():
            mine = manifest["source"] == source.label
            entry = {"name": source.label, "dataset": source.dataset, "root": str(member.data_root),
                     "cache": str(member.cache.directory), "cache_key": member.cache.key,
                     "cache_status": member.cache_status, "weight": source.weight,
                     "task": member.task_name, "split": member.split_config.strategy,
                     "monitor": source.label == self.monitor}
            for part in ("train", "val", "test"):
                rows = mine & (split.segment_split == part)
                entry[f"{part}_patients"] = len(set(manifest["patient_id"][rows].tolist()))
                entry[f"{part}_segments"] = int(rows.sum())
            out.append(entry)
        return out

    def describe(self, manifest: Manifest, rows: np.ndarray) -> list[dict]:
        """What a pretraining on `rows` saw, per source (`pool_patients`)."""
        sources = [{"name": source.label, "dataset": source.dataset, "root": str(member.data_root),
                    "cache": str(member.cache.directory)} for source, member in self._pairs()]
        return pool_patients(manifest, rows, sources)
