"""Data modules on a small synthetic ICBHI: splits, label fractions, batches, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungheart_cl.data.datamodule import ClassificationDataModule, PretrainDataModule
from lungheart_cl.data.synthetic import GENERATOR_VERSION


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _pretrain(cache_dir, **kwargs) -> PretrainDataModule:
    options = dict(dataset="icbhi", cache_dir=str(cache_dir), synthetic_patients=24, batch_size=16, num_workers=0,
                   batch_strata=["age_group", "sex"])
    options.update(kwargs)
    data = PretrainDataModule(**options)
    data.prepare_data()
    data.setup("fit")
    return data


def test_embedded_default_is_written_once_and_split_by_patient(cache_dir):
    data = _pretrain(cache_dir)
    assert (cache_dir / "synthetic" / f"icbhi-v{GENERATOR_VERSION}-24p-seed0" / "ICBHI_final_database").is_dir()
    patients = {s: set(data.split.patients(data.manifest, s)) for s in ("train", "val", "test")}
    assert all(patients.values())
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    summary = data.summary()
    assert summary["train_patients"] + summary["val_patients"] + summary["test_patients"] == 24


def test_summary_says_whether_the_cache_was_built_or_hit(tmp_path):
    first = _pretrain(tmp_path, synthetic_patients=8)
    again = _pretrain(tmp_path, synthetic_patients=8)
    assert (first.summary()["cache_status"], again.summary()["cache_status"]) == ("built", "hit")
    summary = again.summary()
    assert summary["cache"] == str(first.cache.directory) and summary["cache_key"] == first.cache.key
    assert (summary["dropped_count"], summary["dropped"]) == (0, [])


def test_pretraining_batches_carry_pairs_metadata_and_fractional_labels(cache_dir):
    data = _pretrain(cache_dir, pair_policy="same_recording", label_fraction=0.5)
    batch = next(iter(data.train_dataloader()))
    assert batch["wave"].shape == batch["partner_wave"].shape == (16, 16000)
    assert batch["wave"].dtype == torch.float16  # the cache's precision; models convert on the device
    same_recording = batch["meta"]["recording"] == batch["partner_meta"]["recording"]
    assert same_recording.all()
    assert set(batch["meta"]) == {"patient", "recording", "location", "device", "site", "source", "age_group", "sex"}
    pool = set(data.pool_rows().tolist())
    assert set(batch["index"].tolist()) <= pool  # never a validation or test segment
    labelled = set(data.labelled_rows.tolist())
    for row, label in zip(batch["index"].tolist(), batch["label"].tolist()):
        assert (label >= 0) == (row in labelled)  # the online probe sees only the labelled fraction


def test_batches_are_filled_from_few_age_sex_strata(cache_dir):
    data = _pretrain(cache_dir)
    stratum = np.char.add(data.manifest["age_group"], data.manifest["sex"])
    counts = [len(set(stratum[[a for a, _ in batch]].tolist())) for batch in data.train_sampler()]
    assert np.median(counts) <= 2


def test_worker_processes_read_the_memmap(cache_dir):
    data = _pretrain(cache_dir, num_workers=2)
    loader = data.train_dataloader()
    first = next(iter(loader))
    rows = first["index"].numpy()
    expected = np.asarray(data.cache.segments[rows], dtype=np.float32)
    np.testing.assert_array_equal(first["wave"].numpy(), expected)


def test_classification_rows_follow_the_label_fraction_and_are_nested(cache_dir):
    sets = []
    for fraction in (0.25, 0.5, 1.0):
        data = ClassificationDataModule(dataset="icbhi", cache_dir=str(cache_dir), synthetic_patients=24,
                                        label_fraction=fraction, num_workers=0, batch_size=8)
        data.setup("fit")
        assert (data.split.segment_split[data.labelled_rows] == "train").all()
        sets.append(set(data.labelled_patients))
        assert set(data.labels[data.labelled_rows].tolist()) == {0, 1}
    assert sets[0] <= sets[1] <= sets[2]
    val = next(iter(data.val_dataloader()))
    assert (data.split.segment_split[val["index"].numpy()] == "val").all()
    test_rows = np.concatenate([b["index"].numpy() for b in data.test_dataloader()])
    np.testing.assert_array_equal(np.sort(test_rows), data.rows("test"))  # every test row once, no padding


def test_missing_root_is_an_error_not_a_silent_synthetic_dataset(tmp_path):
    data = PretrainDataModule(dataset="icbhi", root=str(tmp_path / "typo"), cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="typo"):
        data.prepare_data()


def test_segment_level_tasks_stratify_patients_by_any_abnormal_cycle(cache_dir):
    data = ClassificationDataModule(dataset="icbhi", cache_dir=str(cache_dir), synthetic_patients=24,
                                    task="crackle", label_fraction=0.3, num_workers=0)
    data.setup("fit")
    strata = data.task.patient_strata(data.manifest)
    assert set(strata.values()) == {0, 1}  # a majority vote would put nearly every patient in class 0
    assert set(data.labels[data.labelled_rows].tolist()) == {0, 1}
    assert data.summary()["labelled_segments_per_class"][1] > 0


def test_balanced_sampling_draws_classes_evenly(cache_dir):
    data = ClassificationDataModule(dataset="icbhi", cache_dir=str(cache_dir), synthetic_patients=24, task="crackle",
                                    balanced_sampling=True, num_workers=0, batch_size=64)
    data.setup("fit")
    natural = np.bincount(data.labels[data.labelled_rows], minlength=2) / len(data.labelled_rows)
    drawn = np.concatenate([b["label"].numpy() for _ in range(5) for b in data.train_dataloader()])
    assert natural[1] < 0.4  # crackle cycles are the minority ...
    assert abs(drawn.mean() - 0.5) < 0.08  # ... but half of what the classifier sees


def test_models_see_a_frozen_description_with_the_statistics_the_data_module_computed(tmp_path):
    import dataclasses

    from lungheart_cl.data.statistics import fit_frontend_statistics
    from lungheart_cl.frontend import LogMelFrontend

    data = PretrainDataModule(dataset="icbhi", cache_dir=str(tmp_path), synthetic_patients=24, num_workers=0,
                              task="icbhi_4class", frontend={"f_min": 25.0}, stats_segments=100)
    data.setup("fit")
    described = data.description
    with pytest.raises(dataclasses.FrozenInstanceError):
        described.sample_rate = 2000
    with pytest.raises(ValueError, match="read-only"):
        described.labelled_rows[0] = 0
    frontend = LogMelFrontend(data.sample_rate, f_min=25.0)
    fit_frontend_statistics(frontend, data, max_segments=100)
    stats = described.frontend_statistics
    assert (stats.config, stats.max_segments) == (frontend.config, 100)
    torch.testing.assert_close(stats.mean, frontend.mel_mean)
    assert set(described.split_patients["test"]) == set(data.split.patients(data.manifest, "test"))
    assert described.labelled_labels.tolist() == data.labels[data.labelled_rows].tolist()
    assert dict(described.pool) == data.pretraining_pool() and described.task is data.task
    assert ClassificationDataModule(dataset="icbhi", cache_dir=str(tmp_path), synthetic_patients=24, num_workers=0,
                                    frontend=None).description is None  # published at setup only
