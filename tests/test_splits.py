"""Patient-disjoint splits and nested label fractions, over several seeds."""

from __future__ import annotations

import numpy as np
import pytest

from lungheart_cl.data.splits import (
    LabelFractionError,
    LeakageError,
    SplitConfig,
    check_patient_disjoint,
    label_fraction_patients,
    split_dataset,
)


def _manifest(n_patients: int = 40, segments_per_patient: int = 5, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i:03d}" for i in range(n_patients)], segments_per_patient)
    strata = {f"p{i:03d}": int(rng.random() < 0.3) for i in range(n_patients)}
    manifest = {"patient_id": patients, "recording_id": np.asarray([f"{p}_r{i % 2}" for i, p in enumerate(patients)]),
                "official_split": np.where(np.arange(len(patients)) % 7 < 4, "train", "test")}
    return manifest, strata


@pytest.mark.parametrize("seed", range(5))
def test_random_split_is_patient_disjoint_and_stratified(seed):
    manifest, strata = _manifest(seed=seed)
    split = split_dataset(manifest, strata, SplitConfig("random", 0.2, 0.2, seed))
    groups = {name: set(split.patients(manifest, name)) for name in ("train", "val", "test")}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    assert set().union(*groups.values()) == set(strata)
    for name, members in groups.items():  # both classes in every split
        assert {strata[p] for p in members} == {0, 1}, name
    assert len(groups["test"]) == pytest.approx(8, abs=1)


def test_split_depends_on_seed_and_is_reproducible():
    manifest, strata = _manifest()
    a = split_dataset(manifest, strata, SplitConfig(seed=1)).segment_split
    b = split_dataset(manifest, strata, SplitConfig(seed=1)).segment_split
    c = split_dataset(manifest, strata, SplitConfig(seed=2)).segment_split
    assert (a == b).all() and (a != c).any()


def test_leakage_check_fails_loudly():
    manifest = {"patient_id": np.asarray(["a", "a", "b"])}
    with pytest.raises(LeakageError, match="a in test, train"):
        check_patient_disjoint(manifest, np.asarray(["train", "test", "train"]))
    check_patient_disjoint(manifest, np.asarray(["train", "test", "train"]), allowed=("a",))  # documented exception


def _official_manifest() -> tuple[dict, dict]:
    patients = np.asarray(["101"] * 2 + ["156"] * 3 + ["218"] * 2 + ["300"] * 4 + ["301"] * 2 + ["302"] * 2)
    official = np.asarray(["test"] * 2 + ["train", "test", "test"] + ["train", "test"] + ["train"] * 4
                          + ["train"] * 2 + ["train"] * 2)
    recordings = np.asarray([f"{p}_{i}" for i, p in enumerate(patients)])
    strata = {"101": 1, "156": 1, "218": 0, "300": 0, "301": 1, "302": 0}
    return {"patient_id": patients, "official_split": official, "recording_id": recordings}, strata


def test_official_split_reports_patients_on_both_sides():
    manifest, strata = _official_manifest()
    split = split_dataset(manifest, strata, SplitConfig("official", val_fraction=0.0))
    assert split.shared_patients == ("156", "218")
    assert "156, 218" in split.notes[0]
    assert (split.segment_split == manifest["official_split"]).all()


def test_official_patient_disjoint_moves_each_patient_to_one_side():
    manifest, strata = _official_manifest()
    split = split_dataset(manifest, strata, SplitConfig("official_patient_disjoint", val_fraction=0.0))
    assert split.shared_patients == ()
    side = {p: set(split.segment_split[manifest["patient_id"] == p].tolist()) for p in ("156", "218")}
    assert side == {"156": {"test"}, "218": {"test"}}  # 2 of 3 in test; a 1-1 tie goes to test
    check_patient_disjoint(manifest, split.segment_split)


def test_validation_is_carved_from_training_patients_only():
    manifest, strata = _official_manifest()
    split = split_dataset(manifest, strata, SplitConfig("official", val_fraction=0.5))
    val = split.patients(manifest, "val")
    assert val and set(val) <= {"300", "301", "302"}  # never a test patient, never a shared one


@pytest.mark.parametrize("seed", range(5))
def test_label_fractions_are_nested_and_stratified(seed):
    _, strata = _manifest(n_patients=60, seed=seed)
    patients = sorted(strata)
    previous: set[str] = set()
    for fraction in (0.05, 0.1, 0.25, 0.5, 1.0):
        chosen = set(label_fraction_patients(patients, strata, fraction, seed))
        assert previous <= chosen  # nested
        for label in (0, 1):
            n_class = sum(strata[p] == label for p in patients)
            assert sum(strata[p] == label for p in chosen) == round(fraction * n_class)
        previous = chosen
    assert previous == set(patients)


def test_label_fraction_changes_with_seed_and_skips_unlabelled_patients():
    strata = {f"p{i}": i % 2 for i in range(20)} | {"u1": -1, "u2": -1}
    a = label_fraction_patients(sorted(strata), strata, 0.3, seed=0)
    b = label_fraction_patients(sorted(strata), strata, 0.3, seed=1)
    assert a != b and not {"u1", "u2"} & set(a) & set(b)


def test_too_small_label_fraction_names_the_smallest_usable_one():
    strata = {f"p{i}": int(i < 3) for i in range(30)}  # 3 diseased, 27 healthy
    with pytest.raises(LabelFractionError, match=r"class 1 selects none.*>= 0\.167"):
        label_fraction_patients(sorted(strata), strata, 0.1, seed=0)


def test_a_single_class_cannot_be_trained():
    strata = {f"p{i}": 0 for i in range(10)}
    with pytest.raises(LabelFractionError, match="fewer than two classes"):
        label_fraction_patients(sorted(strata), strata, 1.0, seed=0)
