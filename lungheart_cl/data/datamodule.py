"""The LightningDataModules: cache once per node (`prepare_data`), split and serve batches per rank (`setup`).

`PretrainDataModule` serves (anchor, partner) pairs from the training patients plus two
validation loaders for the online monitor (a labelled bank from training patients, and the
validation patients). `ClassificationDataModule` serves the labelled fraction of the training
patients, the validation patients and, once, the test patients. Both default to the embedded
synthetic dataset when no ``root`` is given. What a dataset is (reader, defaults, tasks, extra
columns) comes from its `DatasetSpec` in the registry (`lungheart_cl.data.sources`); the plumbing
both share is `data.sound_data.SoundDataModule`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from lungheart_cl.data.cache import SegmentCache
from lungheart_cl.data.datasets import PairDataset
from lungheart_cl.data.description import frozen_array
from lungheart_cl.data.pairs import PairFallbacks, make_pair_policy
from lungheart_cl.data.pool import PoolCache, SourcePool, pool_patients
from lungheart_cl.data.records import SourceDataset
from lungheart_cl.data.sampler import StratifiedPairSampler, batch_strata_codes
from lungheart_cl.data.sound_data import SoundDataModule
from lungheart_cl.errors import ConfigError

__all__ = ["ClassificationDataModule", "PretrainDataModule", "SoundDataModule"]


class PretrainDataModule(SoundDataModule):
    """Contrastive pretraining batches from the training patients (labels unused by the loss).

    Args:
        pair_policy: which segment is the second view: same_segment | same_recording | same_patient |
            same_patient_same_location | same_patient_different_location | same_location |
            same_recording_different_time.
        pair_min_gap_s: same_recording_different_time only: least start-time gap in seconds between the two
            windows (None = the policy's default).
        batch_strata: metadata columns whose value combination forms a batch stratum, e.g.
            [age_group, sex]; empty = plain shuffling.
        strata_per_batch: how many strata fill one batch.
        monitor_bank_size: labelled training segments used as the online kNN bank (a fixed subset).
        seed: batch and pair sampling seed.
        sources: a pretraining pool instead of one dataset (`lungheart_cl.data.pool`): a list of
            ``{dataset, root, ...}`` mappings (each optionally with ``weight``, ``name``, ``source_options``,
            ``task``, ``split`` and its own cache options); the pool's ``sample_rate``, ``segment_seconds``
            and split fractions and seed apply to every source. ``data.dataset`` is then unused, and
            ``root``, ``source_options``, ``task`` and ``split`` are set per source.
        monitor_source: the source (by name) whose task and validation patients the kNN / probe monitor
            uses; None = the first source with a task.
    """

    def __init__(self, *args, pair_policy: str = "same_segment", pair_min_gap_s: float | None = None,
                 batch_strata: list[str] | None = None, strata_per_batch: int = 2, monitor_bank_size: int = 4000,
                 seed: int = 0, sources: list[dict[str, Any]] | None = None, monitor_source: str | None = None,
                 **kwargs):
        if sources is not None:
            given = [key for key in ("root", "source_options", "task", "split") if kwargs.get(key) is not None]
            if given:
                raise ConfigError(f"data.sources names the pool's data; set {', '.join(given)} per source in "
                                  f"data.sources, not as data.{given[0]}")
        super().__init__(*args, **kwargs)
        self.pair_policy_name, self.pair_min_gap_s = pair_policy, pair_min_gap_s
        self.batch_strata = list(batch_strata or [])
        self.strata_per_batch = strata_per_batch
        self.monitor_bank_size = monitor_bank_size
        self.seed = seed
        self.pool: SourcePool | None = None
        self.pair_fallbacks: PairFallbacks | None = None  # which served pairs fell back, once training loads
        if sources is not None:
            self._configure_pool(sources, monitor_source, kwargs)

    def _configure_pool(self, sources: list[dict[str, Any]], monitor_source: str | None, given: dict) -> None:
        """The pool's sources as data modules of their own, with this module's settings (see `SourcePool`)."""
        split = self.split_config
        settings = {"cache_dir": str(self.cache_dir), "synthetic_patients": self.synthetic_patients,
                    "synthetic_seed": self.synthetic_seed, "sample_rate": given.get("sample_rate"),
                    "segment_seconds": given.get("segment_seconds"), "hop_seconds": given.get("hop_seconds"),
                    "padding": self.cache_config.padding, "normalization": self.cache_config.normalization,
                    "skip_bad": self.skip_bad, "val_fraction": split.val_fraction, "test_fraction": split.test_fraction,
                    "split_seed": split.seed, "batch_size": self.batch_size, "num_workers": self.num_workers}
        self.pool = SourcePool.configure(sources, monitor_source, settings)
        self.dataset, self.task, self.cache_config = self.pool.name, self.pool.task, self.pool.cache_config
        self._save_resolved(dataset=self.dataset, sample_rate=self.cache_config.sample_rate,
                            segment_seconds=self.cache_config.segment_seconds, task=self.task_name, split=None)

    def prepare_cache(self, source: SourceDataset | None = None) -> SegmentCache | PoolCache:
        if self.pool is None:
            return super().prepare_cache(source)
        cache = self.pool.open(self.cache_dir)
        self.cache_built = self.cache_built or cache.built or self.pool.built
        return cache

    def load(self) -> list[str]:
        """A pool: every source loaded as on its own, then pooled (see `SourcePool`); else one source."""
        if self.pool is None:
            return super().load()
        self.cache = self.prepare_cache()
        self.manifest, self.store = self.cache.manifest, self.cache.store
        self.labels, self.strata, self.split = self.pool.labels(), self.pool.strata(), self.pool.split()
        self.pool.check_training_rows(self.manifest, self.split)
        monitor = (f"monitor: source {self.pool.monitor}, task {self.task_name}" if self.task is not None
                   else "no source has labels: pretraining without the monitor")
        return [*self.pool.notes, monitor]

    def pool_rows(self) -> np.ndarray:
        """The unlabelled pretraining pool: every training-patient segment (never val or test), of every source."""
        return self.split.indices("train")

    def pretraining_pool(self) -> dict:
        """Which audio an encoder pretrained here saw, per source (`data.pool.pool_patients`), so that a
        classifier can refuse one whose pool held its validation or test patients."""
        rows = self.pool_rows()
        if self.pool is not None:
            return {"dataset": self.dataset, "cache": str(self.cache.directory),
                    "sources": self.pool.describe(self.manifest, rows)}
        source = {"name": self.dataset, "dataset": self.dataset, "root": str(self.data_root),
                  "cache": str(self.cache.directory)}
        return {**source, "sources": pool_patients(self.manifest, rows, [source], namespaced_ids=False)}

    def _described_for_pretraining(self) -> dict[str, Any]:
        if not self.has_monitor:
            return {"monitor_bank_rows": frozen_array(np.array([], dtype=np.int64)), "pool": self.pretraining_pool()}
        return {"monitor_bank_rows": frozen_array(self.monitor_bank_rows()), "pool": self.pretraining_pool(),
                "monitor_strata": self.task.patient_strata(self.manifest)}

    def summary(self) -> dict:
        out = super().summary()
        if self.pool is not None:
            out |= {"monitor_source": self.pool.monitor, "sources": self.pool.summary(self.manifest, self.split)}
        return out

    def train_sampler(self) -> StratifiedPairSampler:
        pool = self.pool_rows()
        pool_manifest = {k: v[pool] for k, v in self.manifest.items()}
        policy = make_pair_policy(self.pair_policy_name, pool_manifest, self.pair_min_gap_s)
        self.pair_fallbacks = PairFallbacks.of(policy, pool, len(self.labels))  # `callbacks.PairFallbackMonitor`
        strata = batch_strata_codes(pool_manifest, self.batch_strata) if self.batch_strata else None
        weights = self.pool.weights if self.pool is not None else None
        sources = self.pool.source_codes(pool_manifest["source"]) if weights is not None else None
        rank, world = self._rank()
        return StratifiedPairSampler(pool, policy, self.batch_size, strata=strata,
                                     strata_per_batch=self.strata_per_batch, seed=self.seed, rank=rank,
                                     world_size=world, sources=sources, source_weights=weights)

    def train_dataloader(self) -> DataLoader:
        # the online probe may only see the labelled fraction's labels
        labels = np.full_like(self.labels, -1)
        labels[self.labelled_rows] = self.labels[self.labelled_rows]
        dataset = PairDataset(self.store, self.manifest, self.codes, labels)
        return self._loader(dataset, batch_sampler=self.train_sampler())

    def monitor_bank_rows(self) -> np.ndarray:
        rows = self.labelled_rows
        if len(rows) > self.monitor_bank_size:
            rows = np.sort(np.random.default_rng(self.seed).choice(rows, self.monitor_bank_size, replace=False))
        return rows

    def val_dataloader(self) -> list[DataLoader]:
        """[labelled bank from training patients, validation patients] for the kNN / probe monitor;
        none for data without labels (pretraining then keeps its last encoder)."""
        if not self.has_monitor:
            return []
        return [self.eval_loader(self.monitor_bank_rows()), self.eval_loader(self.rows("val"))]


class ClassificationDataModule(SoundDataModule):
    """Labelled fraction of the training patients; validation for model selection; test once.

    Args:
        balanced_sampling: draw training batches with class-balanced weights instead of shuffling.
        seed: shuffling seed.
    """

    def __init__(self, *args, balanced_sampling: bool = False, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.task is None:
            raise ConfigError(f"dataset {self.dataset} at {self.data_root} has no labels, so there is nothing to "
                              f"classify; give it labels (see its source options) or use it for pretraining")
        self.balanced_sampling = balanced_sampling
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        dataset = self.segment_dataset(self.labelled_rows)
        rank, world = self._rank()
        if self.balanced_sampling:
            labels = self.labels[self.labelled_rows]
            weights = 1.0 / np.bincount(labels, minlength=self.task.num_classes)[labels]
            generator = torch.Generator().manual_seed(self.seed * 1000 + rank)
            sampler = WeightedRandomSampler(weights.tolist(), len(labels) // world, generator=generator)
        else:
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return self._loader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.rows("val"))

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.rows("test"))
