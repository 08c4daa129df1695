"""Synthetic lung and heart sound datasets in the official layouts: the framework's embedded default.

Real datasets cannot always be downloaded, so `synthesize` writes a small dataset that the official
readers (`lungheart_cl.data.sources`) read like the real one, with learnable but not trivial labels.
Each dataset's writer is declared in its `DatasetSpec` (``synthesize``); those of this package:

- ``icbhi``: breath noise with crackles and wheezes in annotated respiratory cycles, and a
  breathing (expiration, breath character) that follows the patient's diagnosis in every cycle;
- ``physionet2016``: heart sounds, normal or abnormal (murmurs, split or extra sounds, arrhythmia);
- ``circor2022``: heart sounds at several chest locations, murmur present / absent / unknown.

Patient traits (age, sex, a persistent chest timbre), devices, noise and gain shift the sound more
than the labelled events do. The same seed always gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lungheart_cl.data.synthetic.files import atomic_directory

# Bumped whenever the generated sound changes, so an embedded default written by an older
# generator is not reused (it is part of the default's folder name).
GENERATOR_VERSION = 3


def synthesize(dataset: str, root: Path | str, *, patients: int, seed: int = 0, **options: Any) -> Path:
    """Write a synthetic `dataset` with `patients` patients in its official layout at `root`; returns `root`.

    The files are generated in a hidden folder beside `root` and renamed to `root` only when
    complete, so a failed or interrupted run never leaves a partial dataset at `root`; an existing
    non-empty `root` raises FileExistsError. `options` are the dataset's own
    (`write_icbhi`: ``recordings_per_patient``, ``duration_s``). For PhysioNet 2016, which has no
    patient ids, every recording is its own patient.
    """
    from lungheart_cl.data.sources import get_spec  # the sources import their writers from this package

    writer = get_spec(dataset).synthesize
    if writer is None:
        raise ValueError(f"dataset {dataset!r} has no synthetic writer; choose one of {', '.join(synthesizable())}")
    root = Path(root)
    with atomic_directory(root) as staging:
        writer(staging, patients=patients, seed=seed, **options)
    return root


def synthesizable() -> tuple[str, ...]:
    """The registered datasets that declare a synthetic writer."""
    from lungheart_cl.data.sources import dataset_names, get_spec

    return tuple(name for name in dataset_names() if get_spec(name).synthesize is not None)
