"""LightningDataModules: cache once per node (`prepare_data`), split and serve batches per rank (`setup`).

`PretrainDataModule` serves (anchor, partner) pairs from the training patients plus two
validation loaders for the online monitor (a labelled bank from training patients, and the
validation patients). `ClassificationDataModule` serves the labelled fraction of the training
patients, the validation patients and, once, the test patients. Both default to the embedded
synthetic dataset when no ``root`` is given. What a dataset is (reader, defaults, tasks, extra
columns) comes from its `DatasetSpec` in the registry (`lungheart_cl.data.sources`).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.combined_loader import _shutdown_workers_and_reset_iterator
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from lungheart_cl.data.cache import CacheConfig, SegmentCache, build_cache
from lungheart_cl.data.datasets import PairDataset, SegmentDataset, SegmentStore, collate_batch, metadata_codes
from lungheart_cl.data.pairs import make_pair_policy
from lungheart_cl.data.pool import PoolCache, SourcePool, pool_patients
from lungheart_cl.data.records import SourceDataset
from lungheart_cl.data.sampler import StratifiedPairSampler, batch_strata_codes
from lungheart_cl.data.sources import Source, dataset_names, get_spec
from lungheart_cl.data.splits import (DatasetSplit, LabelFractionError, SplitConfig, label_budget_patients,
                                      label_fraction_patients, label_tag, split_dataset)
from lungheart_cl.data.tasks import Task
from lungheart_cl.errors import ConfigError

log = logging.getLogger(__name__)


class SoundDataModule(L.LightningDataModule):
    """Shared data plumbing: source -> cache -> patient split -> label fraction.

    Args:
        dataset: a registered dataset ("icbhi" (lung), "physionet2016", "circor2022" (heart), ...; see
            `lungheart_cl.data.sources.dataset_names`), or the import path of a user's module defining SPEC.
        root: the dataset in its official layout; None = the embedded synthetic default, written
            under ``cache_dir/synthetic`` on first use.
        source_options: the dataset reader's own options (its keyword-only parameters), e.g. a folder's
            ``{metadata: labels.csv}``; None = none.
        cache_dir: where caches (and the synthetic default) live.
        synthetic_patients / synthetic_seed: size and seed of the synthetic default.
        sample_rate / segment_seconds: None = the dataset's default (lung 4 kHz, heart 2 kHz; 4 s).
        padding: how annotated events (ICBHI cycles) are fitted to the segment: zero_center | repeat | context.
        hop_seconds: window hop for event-less recordings (heart sounds; None = the dataset's default, no overlap).
        normalization: per-recording standardisation (recording_std) or none.
        skip_bad: skip unreadable files instead of failing; each is named in the log, in `summary()` and
            so in every results JSON.
        task: diagnosis task (None = the dataset's default, e.g. healthy_vs_disease for ICBHI; a dataset
            without labels has none: pretraining then runs without its validation monitor).
        split: random | official | official_patient_disjoint (ICBHI).
        val_fraction / test_fraction / split_seed: patient-level split parameters.
        label_fraction / label_seed: nested patient-level subset of training labels.
        labelled_patients: a label budget instead of a fraction: exactly this many labelled training patients
            (on PhysioNet 2016 a patient is a recording), class-stratified, nested across budgets for one
            ``label_seed``; needs ``label_fraction`` 1.0.
        batch_size / num_workers: DataLoader settings (batch size per rank).
    """

    def __init__(self, dataset: str = "icbhi", root: str | None = None, source_options: dict[str, Any] | None = None,
                 cache_dir: str = "cache",
                 synthetic_patients: int = 120, synthetic_seed: int = 0, sample_rate: int | None = None,
                 segment_seconds: float | None = None, padding: str = "zero_center",
                 hop_seconds: float | None = None, normalization: str = "recording_std", skip_bad: bool = False,
                 task: str | None = None, split: str | None = None, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, split_seed: int = 0, label_fraction: float = 1.0, label_seed: int = 0,
                 labelled_patients: int | None = None, batch_size: int = 64, num_workers: int = 2):
        super().__init__()
        self.spec = spec = get_spec(dataset)
        self.save_hyperparameters()
        self.dataset = dataset
        self.root = root
        self.cache_dir = Path(cache_dir)
        if root is None and spec.synthesize is None:
            raise ConfigError(f"dataset {dataset} has no embedded synthetic default; set data.root (datasets with "
                              f"one: {', '.join(n for n in dataset_names() if get_spec(n).synthesize)})")
        self.source_options = spec.check_options(source_options or {})
        self.cache_config = CacheConfig(sample_rate or spec.sample_rate, segment_seconds or spec.segment_seconds,
                                        padding, hop_seconds if hop_seconds is not None else spec.hop_seconds,
                                        normalization)  # type: ignore[arg-type]
        self.split_config = SplitConfig(split or spec.split, val_fraction, test_fraction, split_seed)  # type: ignore[arg-type]
        # a source's own tasks (a folder's label values, from its metadata) are known now, when the CLI links
        # data.num_classes to the model; the embedded default's are the dataset's
        self.task: Task | None = spec.task(task, Path(root) if root is not None else None, self.source_options)
        if labelled_patients is not None and label_fraction < 1:
            raise ValueError(f"data.labelled_patients ({labelled_patients}) and data.label_fraction ({label_fraction}) "
                             f"both choose the labelled patients; set one: a budget with label_fraction 1.0, or a "
                             f"fraction with labelled_patients null")
        # a budget run has no label fraction: None, so no results file claims 100 % of the labels
        self.label_fraction = None if labelled_patients is not None else label_fraction
        self.label_budget, self.label_seed = labelled_patients, label_seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.skip_bad = skip_bad
        self.synthetic_patients, self.synthetic_seed = synthetic_patients, synthetic_seed
        self.cache: SegmentCache | None = None
        self.cache_built = False  # whether this process built the cache (else it found it built)
        self.start_epoch = 0  # the epoch a resumed fit continues at (see `state_dict`)
        # log the resolved defaults, not None, so runs compare cleanly and match the model's linked values
        self.hparams.update(sample_rate=self.cache_config.sample_rate, segment_seconds=self.cache_config.segment_seconds,
                            task=self.task_name, split=self.split_config.strategy)
        self._hparams_initial = copy.deepcopy(self.hparams)  # what Lightning logs and cross-checks

    @property
    def sample_rate(self) -> int:
        return self.cache_config.sample_rate

    @property
    def num_classes(self) -> int:
        """Classes of the task; 0 for a dataset without labels."""
        return self.task.num_classes if self.task is not None else 0

    @property
    def task_name(self) -> str | None:
        return self.task.name if self.task is not None else None

    @property
    def has_monitor(self) -> bool:
        """Whether validation can score the model (pretraining's kNN / probe monitor): the data has labels."""
        return self.task is not None

    @property
    def data_root(self) -> Path:
        if self.root is not None:
            return Path(self.root)
        from lungheart_cl.data.synthetic import GENERATOR_VERSION

        name = f"{self.dataset}-v{GENERATOR_VERSION}-{self.synthetic_patients}p-seed{self.synthetic_seed}"
        return self.cache_dir / "synthetic" / name

    def source(self) -> Source:
        """The dataset, root and options this data module reads."""
        return Source(self.dataset, self.data_root, self.source_options)

    def _source(self) -> SourceDataset:
        root = self.data_root
        if self.root is None and not root.exists():
            from lungheart_cl.data.synthetic import synthesize

            log.info("writing the embedded synthetic %s dataset to %s", self.dataset, root)
            synthesize(self.dataset, root, patients=self.synthetic_patients, seed=self.synthetic_seed)
        return self.source().read(skip_bad=self.skip_bad)

    def prepare_cache(self, source: SourceDataset | None = None) -> SegmentCache:
        """The cache these options select, built if missing (what `lungheart-cl data cache` builds ahead)."""
        cache = build_cache(source or self._source(), self.cache_config, self.cache_dir, columns=self.spec.columns,
                            skip_bad=self.skip_bad)
        self.cache_built = self.cache_built or cache.built
        return cache

    def prepare_data(self) -> None:
        """Once per node: synthesise the default if needed, read the source, build the cache."""
        self.prepare_cache()

    def setup(self, stage: str | None = None) -> None:
        if self.cache is not None:
            return
        notes = self.load()
        self.codes = metadata_codes(self.manifest)
        train_patients = self.split.patients(self.manifest, "train")
        if self.task is None:  # nothing to label: no label fraction, no classes to check
            self.labelled_patients, self.labelled_rows = [], np.array([], dtype=np.int64)
            self._report_data(notes)
            return
        if self.label_budget is not None:
            self.labelled_patients = label_budget_patients(train_patients, self.strata, self.label_budget,
                                                           self.label_seed)
        else:
            self.labelled_patients = label_fraction_patients(train_patients, self.strata, self.label_fraction,
                                                             self.label_seed)
        labelled = np.isin(self.manifest["patient_id"], self.labelled_patients) & (self.split.segment_split == "train")
        self.labelled_rows = np.flatnonzero(labelled & (self.labels >= 0))
        self._check_labelled_classes()
        self._report_data(notes)

    def load(self) -> list[str]:
        """Read the source, open its cache (built if missing), label it and split it by patient: sets
        ``cache``, ``manifest`` (with ``source``, the dataset's name), ``store``, ``labels``, ``strata`` (the
        patients' task strata) and ``split``. Returns the notes to report. A pool member stops here."""
        source = self._source()
        self.cache = self.prepare_cache(source)
        self.manifest = {**self.cache.manifest, "source": np.full(len(self.cache), self.dataset)}
        unlabelled = self.task is None
        self.labels = np.full(len(self.cache), -1, dtype=np.int64) if unlabelled else self.task.labels(self.manifest)
        self.store = SegmentStore(self.cache.directory / "segments.f16", self.cache.segments.shape)
        self.strata: dict[str, int] = {} if unlabelled else self.task.patient_strata(self.manifest)
        self.split: DatasetSplit = split_dataset(self.manifest, self.strata, self.split_config)
        return [*source.notes, *self.split.notes]

    @property
    def cache_status(self) -> str:
        """'built' when this process built the cache, 'hit' when it found it built (e.g. by `data cache`)."""
        return "built" if self.cache_built else "hit"

    @rank_zero_only
    def _report_data(self, notes: list[str]) -> None:
        """Say which cache the run uses (built or hit) and name everything dropped: on the console and
        in the run's loggers (the results JSONs carry the same through `summary()`)."""
        cache = self.cache
        log.info("%s: cache %s: %s (%d segments)", self.dataset, self.cache_status, cache.directory, len(cache))
        if self.task is None:
            log.info("%s: no labels (the dataset defines no task for this source)", self.dataset)
        for note in notes:
            log.info("%s: %s", self.dataset, note)
        if cache.dropped:
            log.warning("%s: %d file(s) dropped (skip_bad):", self.dataset, len(cache.dropped))
        for drop in cache.dropped:
            log.warning("  dropped (%s) %s: %s", drop["stage"], drop["file"], drop["problem"])
        for logger in self.trainer.loggers if self.trainer is not None else []:
            logger.log_hyperparams({"data_cache": str(cache.directory), "data_cache_status": self.cache_status,
                                    "data_dropped": len(cache.dropped),
                                    "data_dropped_files": [drop["file"] for drop in cache.dropped]})

    @property
    def label_tag(self) -> str:
        """The labelled subset as run names spell it: ``n40`` (label budget) or ``lf0.1`` (label fraction)."""
        return label_tag(self.label_fraction, self.label_budget)

    def _labels_in_use(self) -> str:
        if self.label_budget is not None:
            return f"labelled_patients {self.label_budget}"
        return f"label_fraction {self.label_fraction}"

    def _check_labelled_classes(self) -> None:
        """Two classes are the minimum to train on; a missing class of a multi-class task is reported."""
        present = set(np.unique(self.labels[self.labelled_rows]).tolist())
        missing = [name for i, name in enumerate(self.task.classes) if i not in present]
        if len(present) < 2:
            raise LabelFractionError(
                f"{self._labels_in_use()} (seed {self.label_seed}) labels {len(self.labelled_patients)} "
                f"patient(s) whose segments hold only class(es) {sorted(present)} of task {self.task.name}; "
                f"increase the label fraction or budget")
        if missing:
            log.warning("%s: no labelled segment of class(es) %s; the classifier cannot learn them",
                        self._labels_in_use(), missing)

    def rows(self, split: str, labelled_only: bool = True) -> np.ndarray:
        rows = self.split.indices(split)
        return rows[self.labels[rows] >= 0] if labelled_only else rows

    def segment_dataset(self, rows: np.ndarray) -> SegmentDataset:
        return SegmentDataset(self.store, self.manifest, self.codes, self.labels, rows)

    def iterate_rows(self, rows: np.ndarray, batch_size: int | None = None):
        """Batches of the given rows read in this process (no workers): for one-off passes."""
        dataset = self.segment_dataset(np.arange(len(self.labels)))
        size = batch_size or self.batch_size
        for start in range(0, len(rows), size):
            yield dataset.__getitems__(rows[start:start + size].tolist())

    def _loader(self, dataset, **kwargs) -> DataLoader:
        # worker seeds come from the loader's own generator: a new iterator (every epoch, or after a
        # resume with persistent workers) never draws from the global RNG that the views use
        loader = DataLoader(dataset, num_workers=self.num_workers, collate_fn=collate_batch,
                            persistent_workers=self.num_workers > 0, pin_memory=False,
                            generator=torch.Generator().manual_seed(0), **kwargs)
        for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(self.start_epoch)
        return loader

    def state_dict(self) -> dict[str, int]:
        """The epoch a fit resumed from this checkpoint continues at. Lightning builds the first training
        iterator, which workers prefetch from at once, before it sets the samplers' epoch (and before it
        restores its loops), so the loaders must start the samplers there themselves."""
        trainer = self.trainer
        return {"epoch": int(trainer.fit_loop.epoch_progress.current.processed)} if trainer is not None else {}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.start_epoch = int(state_dict.get("epoch", 0))

    def teardown(self, stage: str) -> None:
        """End the persistent workers of every loader of the run, so that none outlives it."""
        trainer = self.trainer
        if trainer is None:
            return
        for loaders in (trainer.train_dataloader, trainer.val_dataloaders, trainer.test_dataloaders):
            for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
                _shutdown_workers_and_reset_iterator(loader)  # how Lightning resets the loaders of a loop it ends

    def on_exception(self, exception: BaseException) -> None:
        # A run stopped mid-validation or mid-test: Lightning then resets only that loop's loaders, and the
        # training loader's workers would live on until the trainer is garbage-collected.
        self.teardown("exception")

    def eval_loader(self, rows: np.ndarray) -> DataLoader:
        """Every given row, in order, on every rank (evaluation is exact, never padded by a sampler)."""
        return self._loader(self.segment_dataset(rows), batch_size=self.batch_size, shuffle=False)

    def summary(self) -> dict:
        """What a run stands on (embedded in every results JSON): the cache and whether it was built or
        hit, every file dropped and why, and the counts of patients and segments per split."""
        manifest = self.manifest
        out = {"dataset": self.dataset, "task": self.task_name, "cache": str(self.cache.directory),
               "cache_key": self.cache.key, "cache_status": self.cache_status,
               "dropped_count": len(self.cache.dropped), "dropped": self.cache.dropped,
               **self._labelled_counts()}
        for split in ("train", "val", "test"):
            rows = self.split.indices(split)
            out[f"{split}_patients"] = len(set(manifest["patient_id"][rows].tolist()))
            out[f"{split}_segments"] = int(len(rows))
        return out

    def _labelled_counts(self) -> dict:
        """The labels in use, counted in patients, recordings and segments (a budget counts patients, not
        windows). Per class: those holding a labelled segment of the class (an exact partition for recording-
        and patient-level tasks; a patient with crackle and normal cycles counts in both)."""
        rows, labels = self.labelled_rows, self.labels[self.labelled_rows]

        def per_class(column: str) -> list[int]:
            return [len(set(self.manifest[column][rows[labels == c]].tolist())) for c in range(self.num_classes)]

        return {"label_fraction": self.label_fraction, "label_budget": self.label_budget,
                "labelled_patients": len(self.labelled_patients),
                "labelled_recordings": len(set(self.manifest["recording_id"][rows].tolist())),
                "labelled_segments": int(len(rows)), "labelled_patients_per_class": per_class("patient_id"),
                "labelled_recordings_per_class": per_class("recording_id"),
                "labelled_segments_per_class": np.bincount(labels, minlength=self.num_classes).tolist()}

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


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
        self.hparams.update(dataset=self.dataset, sample_rate=self.cache_config.sample_rate,
                            segment_seconds=self.cache_config.segment_seconds, task=self.task_name, split=None)
        self._hparams_initial = copy.deepcopy(self.hparams)

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

    def summary(self) -> dict:
        out = super().summary()
        if self.pool is not None:
            out |= {"monitor_source": self.pool.monitor, "sources": self.pool.summary(self.manifest, self.split)}
        return out

    def train_sampler(self) -> StratifiedPairSampler:
        pool = self.pool_rows()
        pool_manifest = {k: v[pool] for k, v in self.manifest.items()}
        policy = make_pair_policy(self.pair_policy_name, pool_manifest, self.pair_min_gap_s)
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
