"""The data plumbing both data modules share: source -> cache -> patient split -> label fraction ->
the frozen `DataDescription` models see. (The two data modules are in `data.datamodule`.)

Defaults to the embedded synthetic dataset when no ``root`` is given. What a dataset is (reader,
defaults, tasks, extra columns) comes from its `DatasetSpec` in the registry (`lungheart_cl.data.sources`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from lungheart_cl.data.cache import CacheConfig, SegmentCache, build_cache
from lungheart_cl.data.datasets import SegmentDataset, SegmentStore, metadata_codes
from lungheart_cl.data.description import ROW_COLUMNS, DataDescription, FrontendStatistics, RowReader, frozen_array
from lungheart_cl.data.loaders import LoaderLifecycle
from lungheart_cl.data.records import SourceDataset
from lungheart_cl.data.run_report import data_summary, report_data
from lungheart_cl.data.sources import Source, dataset_names, get_spec
from lungheart_cl.data.splits import (DatasetSplit, LabelFractionError, SplitConfig, label_budget_patients,
                                      label_fraction_patients, label_tag, split_dataset)
from lungheart_cl.data.tasks import Task
from lungheart_cl.errors import ConfigError
from lungheart_cl.frontend import LogMelFrontend

log = logging.getLogger("lungheart_cl.data.datamodule")  # the data modules' logger, as before the split


class SoundDataModule(LoaderLifecycle, L.LightningDataModule):
    """Shared data plumbing: source -> cache -> patient split -> label fraction.

    One class over ~200 lines: its methods are the steps of one pipeline that share its state (cache,
    manifest, split, labels); the loaders, the report and the description's types live in their own modules.

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
        frontend / stats_segments: the log-mel front end (`LogMelFrontend`'s arguments but the sample rate;
            {} = its defaults) whose per-mel statistics over up to ``stats_segments`` training segments the
            description carries; None = none (a classifier whose front end comes fitted from its checkpoint).
            The CLI links both from the model's front-end arguments.
    """

    def __init__(self, dataset: str = "icbhi", root: str | None = None, source_options: dict[str, Any] | None = None,
                 cache_dir: str = "cache",
                 synthetic_patients: int = 120, synthetic_seed: int = 0, sample_rate: int | None = None,
                 segment_seconds: float | None = None, padding: str = "zero_center",
                 hop_seconds: float | None = None, normalization: str = "recording_std", skip_bad: bool = False,
                 task: str | None = None, split: str | None = None, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, split_seed: int = 0, label_fraction: float = 1.0, label_seed: int = 0,
                 labelled_patients: int | None = None, batch_size: int = 64, num_workers: int = 2,
                 frontend: dict[str, Any] | None = {}, stats_segments: int = 2000):  # noqa: B006 (never mutated)
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
        self.frontend_settings = None if frontend is None else dict(frontend)
        self.stats_segments = stats_segments
        self.cache: SegmentCache | None = None
        self.description: DataDescription | None = None  # what models see of the data, published at setup
        self.cache_built = False  # whether this process built the cache (else it found it built)
        self.start_epoch = 0  # the epoch a resumed fit continues at (see `state_dict`)
        # log the resolved defaults, not None, so runs compare cleanly and match the model's linked values
        self._save_resolved(sample_rate=self.cache_config.sample_rate, segment_seconds=self.cache_config.segment_seconds,
                            task=self.task_name, split=self.split_config.strategy)

    def _save_resolved(self, **resolved: Any) -> None:
        """Hyperparameters with these resolved values, as Lightning logs and cross-checks them."""
        self.save_hyperparameters({**self.hparams, **resolved})

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
        else:
            self._choose_labelled(train_patients)
        self.description = self.describe()
        self._report_data(notes)

    def _choose_labelled(self, train_patients: list[str]) -> None:
        if self.label_budget is not None:
            self.labelled_patients = label_budget_patients(train_patients, self.strata, self.label_budget,
                                                           self.label_seed)
        else:
            self.labelled_patients = label_fraction_patients(train_patients, self.strata, self.label_fraction,
                                                             self.label_seed)
        labelled = np.isin(self.manifest["patient_id"], self.labelled_patients) & (self.split.segment_split == "train")
        self.labelled_rows = np.flatnonzero(labelled & (self.labels >= 0))
        self._check_labelled_classes()

    def describe(self) -> DataDescription:
        """The frozen description models see (set up data only); front-end statistics computed here."""
        manifest = self.manifest
        return DataDescription(
            dataset=self.dataset, sample_rate=self.sample_rate, task=self.task, cache_config=self.cache_config,
            cache_directory=Path(self.cache.directory), cache_key=self.cache.key, num_rows=len(self.labels),
            row_ids={column: frozen_array(manifest[column]) for column in ROW_COLUMNS},
            labelled_rows=frozen_array(self.labelled_rows), labelled_labels=frozen_array(self.labels[self.labelled_rows]),
            label_seed=self.label_seed, label_fraction=self.label_fraction, label_tag=self.label_tag,
            split_patients={split: tuple(self.split.patients(manifest, split)) for split in ("train", "val", "test")},
            eval_rows={split: frozen_array(self.rows(split)) for split in ("val", "test")},
            read_rows=self._row_reader(),
            frontend_statistics=self._frontend_statistics(), **self._described_for_pretraining())

    def _described_for_pretraining(self) -> dict[str, Any]:
        return {}

    def _frontend_statistics(self) -> FrontendStatistics | None:
        if self.frontend_settings is None:
            return None
        from lungheart_cl.data.statistics import compute_frontend_statistics

        frontend = LogMelFrontend(self.sample_rate, **self.frontend_settings)
        return compute_frontend_statistics(frontend, self.split.indices("train"), self.iterate_rows,
                                           self.cache.directory, max_segments=self.stats_segments)[0]

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

    def _row_reader(self) -> RowReader:
        return RowReader(self.segment_dataset(np.arange(len(self.labels))), self.batch_size)

    def iterate_rows(self, rows: np.ndarray, batch_size: int | None = None):
        """Batches of the given rows read in this process (no workers): for one-off passes."""
        yield from self._row_reader()(rows, batch_size)

    def _report_data(self, notes: list[str]) -> None:
        report_data(self, notes)

    def summary(self) -> dict:
        """What a run stands on (embedded in every results JSON; see `data.run_report.data_summary`)."""
        return data_summary(self)
