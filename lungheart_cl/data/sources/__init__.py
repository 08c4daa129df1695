"""Readers from each dataset's official layout to the shared schema (`records.py`).

Every reader has the signature ``read(root, *, skip_bad=False) -> SourceDataset``. A bad file raises
`DataError` naming it; with ``skip_bad=True`` it is left out and listed in ``SourceDataset.problems``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lungheart_cl.data.records import SourceDataset
from lungheart_cl.errors import MissingPathError

DATASETS = ("icbhi", "physionet2016", "circor2022")


def reader_for(dataset: str) -> Callable[..., SourceDataset]:
    """The reader function of a dataset name (imported lazily: each pulls only what it needs)."""
    if dataset == "icbhi":
        from lungheart_cl.data.sources.icbhi import read_icbhi

        return read_icbhi
    if dataset == "physionet2016":
        from lungheart_cl.data.sources.physionet2016 import read_physionet2016

        return read_physionet2016
    if dataset == "circor2022":
        from lungheart_cl.data.sources.circor2022 import read_circor2022

        return read_circor2022
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")


def read_source(dataset: str, root: Path | str, *, skip_bad: bool = False) -> SourceDataset:
    """Read a dataset root with its reader. Paths are made absolute, so caches keyed on them do not
    depend on the working directory or on how the root was spelled."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise MissingPathError(f"{root}: dataset root does not exist (dataset {dataset})")
    return reader_for(dataset)(root, skip_bad=skip_bad)
