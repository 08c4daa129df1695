"""Synthetic lung and heart sound datasets in the official layouts: the framework's embedded default.

Real datasets cannot always be downloaded, so `synthesize` writes a small dataset that the official
readers (`lungheart_cl.data.sources`) read like the real one, with learnable but not trivial labels:

- ``icbhi``: breath noise with crackles and wheezes in annotated respiratory cycles, and a
  breathing (expiration, breath character) that follows the patient's diagnosis in every cycle;
- ``physionet2016``: heart sounds, normal or abnormal (murmurs, split or extra sounds, arrhythmia);
- ``circor2022``: heart sounds at several chest locations, murmur present / absent / unknown.

Patient traits (age, sex, a persistent chest timbre), devices, noise and gain shift the sound more
than the labelled events do. The same seed always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lungheart_cl.data.synthetic.circor2022 import write_circor2022
from lungheart_cl.data.synthetic.files import atomic_directory
from lungheart_cl.data.synthetic.icbhi import write_icbhi
from lungheart_cl.data.synthetic.physionet2016 import write_physionet2016

WRITERS: dict[str, Callable[..., None]] = {
    "icbhi": write_icbhi,
    "physionet2016": write_physionet2016,
    "circor2022": write_circor2022,
}
# Bumped whenever the generated sound changes, so an embedded default written by an older
# generator is not reused (it is part of the default's folder name).
GENERATOR_VERSION = 3
# About the size of the real ICBHI database: 126 patients, ~920 recordings, ~5.5 hours.
ICBHI_SIZED = {"patients": 126, "recordings_per_patient": 920 / 126, "duration_s": 20.0}


def synthesize(dataset: str, root: Path | str, *, patients: int, seed: int = 0, **options: Any) -> Path:
    """Write a synthetic `dataset` with `patients` patients in its official layout at `root`; returns `root`.

    The files are generated in a hidden folder beside `root` and renamed to `root` only when
    complete, so a failed or interrupted run never leaves a partial dataset at `root`; an existing
    non-empty `root` raises FileExistsError. `options` are the dataset's own
    (`write_icbhi`: ``recordings_per_patient``, ``duration_s``). For PhysioNet 2016, which has no
    patient ids, every recording is its own patient.
    """
    if dataset not in WRITERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {tuple(WRITERS)}")
    root = Path(root)
    with atomic_directory(root) as staging:
        WRITERS[dataset](staging, patients=patients, seed=seed, **options)
    return root


def synthesize_icbhi_sized(root: Path | str, seed: int = 0) -> Path:
    """A synthetic ICBHI about the size of the real one (benchmarks): 126 patients, ~920 recordings, ~5.5 h."""
    return synthesize("icbhi", root, seed=seed, **ICBHI_SIZED)
