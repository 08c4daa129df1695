"""The dataset registry: every module of this package that defines ``SPEC`` (a `DatasetSpec`) is a dataset.

Adding a dataset is one new module here (plus its YAML under ``experiments/``); nothing lists the
modules, they are discovered. A user's own module outside the package is named by its import path
(``data.dataset: mypackage.my_source``). A `Source` is one dataset root with its options; a
pretraining pool is a list of them. `catalogue` holds the download entries' types and lookups.

Every reader has the signature ``read(root, *, skip_bad=False, **options) -> SourceDataset``. A bad
file raises `DataError` naming it; with ``skip_bad=True`` it is left out and listed in
``SourceDataset.problems``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lungheart_cl.data.records import SourceDataset
from lungheart_cl.data.spec import DatasetSpec
from lungheart_cl.data.tasks import Task
from lungheart_cl.errors import ConfigError, MissingPathError


@cache
def _package_specs() -> dict[str, DatasetSpec]:
    """The datasets of this package, by name: each module's SPEC, whose name must be the module's."""
    specs: dict[str, DatasetSpec] = {}
    for module in pkgutil.iter_modules(__path__):
        spec = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SPEC", None)
        if spec is None:
            continue  # a helper module (e.g. wfdb_header)
        if not isinstance(spec, DatasetSpec) or spec.name != module.name:
            raise TypeError(f"{__name__}.{module.name}.SPEC must be a DatasetSpec named {module.name!r}")
        specs[spec.name] = spec
    return specs


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, sorted (a user's module is named by import path instead)."""
    return tuple(sorted(_package_specs()))


@cache
def get_spec(dataset: str) -> DatasetSpec:
    """The spec of a registered dataset name, or of the module a dotted import path names."""
    specs = _package_specs()
    if dataset in specs:
        return specs[dataset]
    if "." not in dataset:
        raise ConfigError(f"unknown dataset {dataset!r}: choose one of {', '.join(specs)}, or name your own "
                          f"module by its import path (e.g. mypackage.my_source) defining SPEC = DatasetSpec(...)")
    try:
        module = importlib.import_module(dataset)
    except ImportError as error:
        raise ConfigError(f"dataset {dataset!r}: cannot import it ({error})") from error
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, DatasetSpec):
        raise ConfigError(f"dataset {dataset!r}: the module defines no SPEC = DatasetSpec(...)")
    if spec.name in specs:
        raise ConfigError(f"dataset {dataset!r}: its SPEC is named {spec.name!r}, a dataset of lungheart-cl; "
                          f"give it another name")
    return spec


@dataclass(frozen=True)
class Source:
    """One source of recordings: a dataset (registered name or import path), its root and its options."""

    dataset: str
    root: Path
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # absolute, so caches keyed on the paths do not depend on the working directory or the spelling
        object.__setattr__(self, "root", Path(self.root).resolve())
        object.__setattr__(self, "options", self.spec.check_options(self.options))

    @property
    def spec(self) -> DatasetSpec:
        return get_spec(self.dataset)

    @property
    def tasks(self) -> dict[str, Task]:
        return self.spec.tasks_for(self.root, self.options)

    def task(self, name: str | None = None) -> Task | None:
        """A task of this source by name; None = the dataset's default (None where it has no labels)."""
        return self.spec.task(name, self.root, self.options)

    def read(self, *, skip_bad: bool = False) -> SourceDataset:
        """The source read by its dataset's reader (a missing root is a MissingPathError)."""
        if not self.root.is_dir():
            raise MissingPathError(f"{self.root}: dataset root does not exist (dataset {self.dataset})")
        return self.spec.read(self.root, skip_bad=skip_bad, **self.options)


def read_source(dataset: str, root: Path | str, *, skip_bad: bool = False,
                options: Mapping[str, Any] | None = None) -> SourceDataset:
    """Read a dataset root with its reader (see `Source`)."""
    return Source(dataset, Path(root), options or {}).read(skip_bad=skip_bad)
