"""What a dataset is, in one frozen declaration: `DatasetSpec`.

Each module of `lungheart_cl.data.sources` (or a user's own module, named by import path) defines
``SPEC = DatasetSpec(...)``: its reader, its default sample rate, segmenting and split, its tasks
(each with its level and metric), its download entry, its synthetic writer, the extra manifest
columns it reads from the `extra` mappings of its patients, recordings and events, and how
`predict` finds annotations beside an audio file. Generic code asks the spec, never the name.

The reader's keyword-only parameters (besides ``skip_bad``) are the source's options: YAML's
``data.source_options`` (or ``data inspect --option KEY=VALUE``) must name only those.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lungheart_cl.data.records import Event, Patient, Recording, SourceDataset
from lungheart_cl.data.tasks import Task
from lungheart_cl.errors import ConfigError
from lungheart_cl.metrics import MetricFn, default_metrics

if TYPE_CHECKING:
    from lungheart_cl.data.sources.catalogue import DatasetSource

Options = Mapping[str, Any]
Reader = Callable[..., SourceDataset]  # read(root, *, skip_bad=False, **options) -> SourceDataset
# write(root, *, patients, seed, **options): the dataset in its own layout (the embedded default)
SyntheticWriter = Callable[..., None]
# annotations(audio_path, duration_s) -> the events annotated beside the file (empty: none there)
AnnotationFinder = Callable[[Path, float], tuple[Event, ...]]
Split = Literal["random", "official", "official_patient_disjoint"]


@dataclass(frozen=True)
class Column:
    """An extra manifest column: the value ``extra[key]`` of the row's patient, recording or event.

    ``kind`` "str" columns hold text ("" where the value is missing or None); "int" columns hold
    integers (booleans as 0/1; -1 where missing, e.g. a window of an event-less recording)."""

    name: str
    of: Literal["patient", "recording", "event"]
    key: str | None = None  # the extra's key; None = the column's name
    kind: Literal["str", "int"] = "str"

    def value(self, recording: Recording, patient: Patient, event: Event | None) -> str | int:
        holder = {"patient": patient, "recording": recording, "event": event}[self.of]
        value = holder.extra.get(self.key or self.name) if holder is not None else None
        if self.kind == "int":
            return -1 if value is None else int(value)
        return "" if value is None else str(value)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, as generic code sees it (see the module docstring).

    ``tasks`` are fixed by the dataset; ``source_tasks``, where set, builds the tasks that depend on
    one source's root and options (a folder's label values) and replaces them."""

    name: str
    description: str
    read: Reader
    sample_rate: int  # default cache rate (Hz)
    segment_seconds: float = 4.0
    hop_seconds: float | None = None  # windows of event-less recordings; None = no overlap
    split: Split = "random"
    tasks: tuple[Task, ...] = ()
    default_task: str | None = None  # None: the dataset has no labels unless its source says otherwise
    source_tasks: Callable[[Path, Options], tuple[Task, ...]] | None = None
    columns: tuple[Column, ...] = ()
    download: DatasetSource | None = None
    synthesize: SyntheticWriter | None = None
    annotations: AnnotationFinder | None = None

    def __post_init__(self) -> None:
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name}: task names repeat: {names}")
        if self.default_task is not None and self.source_tasks is None and self.default_task not in names:
            raise ValueError(f"dataset {self.name}: default task {self.default_task!r} is not one of {names}")

    @property
    def option_names(self) -> tuple[str, ...]:
        """The source options this dataset takes: its reader's keyword-only parameters but ``skip_bad``."""
        parameters = inspect.signature(self.read).parameters.values()
        return tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "skip_bad")

    def check_options(self, options: Options) -> dict[str, Any]:
        """The options as a plain dict; a ConfigError names any option the reader does not take."""
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            allowed = ", ".join(self.option_names) or "none"
            raise ConfigError(f"dataset {self.name} takes no source option(s) {', '.join(unknown)} "
                              f"(its options: {allowed})")
        return dict(options)

    def tasks_for(self, root: Path | None, options: Options) -> dict[str, Task]:
        """The tasks of one source of this dataset, by name."""
        tasks = self.tasks if self.source_tasks is None or root is None else self.source_tasks(root, options)
        return {task.name: task for task in tasks}

    def task(self, name: str | None, root: Path | None = None, options: Options | None = None) -> Task | None:
        """A task by name (None: the default task, which may be None: no labels); ConfigError if unknown."""
        tasks = self.tasks_for(root, options or {})
        if name is None:  # a source without the default task's labels (a folder without a label column) has none
            return tasks.get(self.default_task) if self.default_task is not None else None
        if name not in tasks:
            known = ", ".join(tasks) or "none: this source has no labels"
            raise ConfigError(f"dataset {self.name} has no task {name!r} (its tasks: {known})")
        return tasks[name]

    def metric(self, name: str) -> MetricFn:
        """The metric of a task by name, to score saved predictions without the data: a declared task's own,
        else (a task its source builds from its own files) the default for the predictions' class count."""
        for task in self.tasks:
            if task.name == name:
                return task.score
        if self.source_tasks is None:
            known = ", ".join(task.name for task in self.tasks) or "none"
            raise ConfigError(f"dataset {self.name} has no task {name!r} (its tasks: {known})")
        return default_metrics
