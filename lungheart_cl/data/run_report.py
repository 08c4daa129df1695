"""What a data module says about the data a run stands on: on the console and to the run's loggers at
setup (`report_data`), and in every results JSON (`data_summary`)."""

from __future__ import annotations

import logging

import numpy as np
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger("lungheart_cl.data.datamodule")  # the data modules' logger, as before the split


@rank_zero_only
def report_data(data, notes: list[str]) -> None:
    """Say which cache the run uses (built or hit) and name everything dropped: on the console and
    in the run's loggers (the results JSONs carry the same through `summary()`)."""
    cache = data.cache
    log.info("%s: cache %s: %s (%d segments)", data.dataset, data.cache_status, cache.directory, len(cache))
    if data.task is None:
        log.info("%s: no labels (the dataset defines no task for this source)", data.dataset)
    for note in notes:
        log.info("%s: %s", data.dataset, note)
    if cache.dropped:
        log.warning("%s: %d file(s) dropped (skip_bad):", data.dataset, len(cache.dropped))
    for drop in cache.dropped:
        log.warning("  dropped (%s) %s: %s", drop["stage"], drop["file"], drop["problem"])
    for logger in data.trainer.loggers if data.trainer is not None else []:
        logger.log_hyperparams({"data_cache": str(cache.directory), "data_cache_status": data.cache_status,
                                "data_dropped": len(cache.dropped),
                                "data_dropped_files": [drop["file"] for drop in cache.dropped]})


def data_summary(data) -> dict:
    """What a run stands on (embedded in every results JSON): the cache and whether it was built or
    hit, every file dropped and why, and the counts of patients and segments per split."""
    manifest = data.manifest
    out = {"dataset": data.dataset, "task": data.task_name, "cache": str(data.cache.directory),
           "cache_key": data.cache.key, "cache_status": data.cache_status,
           "dropped_count": len(data.cache.dropped), "dropped": data.cache.dropped,
           **labelled_counts(data)}
    for split in ("train", "val", "test"):
        rows = data.split.indices(split)
        out[f"{split}_patients"] = len(set(manifest["patient_id"][rows].tolist()))
        out[f"{split}_segments"] = int(len(rows))
    return out

def labelled_counts(data) -> dict:
    """The labels in use, counted in patients, recordings and segments (a budget counts patients, not
    windows). Per class: those holding a labelled segment of the class (an exact partition for recording-
    and patient-level tasks; a patient with crackle and normal cycles counts in both)."""
    rows, labels = data.labelled_rows, data.labels[data.labelled_rows]

    def per_class(column: str) -> list[int]:
        return [len(set(data.manifest[column][rows[labels == c]].tolist())) for c in range(data.num_classes)]

    return {"label_fraction": data.label_fraction, "label_budget": data.label_budget,
            "labelled_patients": len(data.labelled_patients),
            "labelled_recordings": len(set(data.manifest["recording_id"][rows].tolist())),
            "labelled_segments": int(len(rows)), "labelled_patients_per_class": per_class("patient_id"),
            "labelled_recordings_per_class": per_class("recording_id"),
            "labelled_segments_per_class": np.bincount(labels, minlength=data.num_classes).tolist()}
