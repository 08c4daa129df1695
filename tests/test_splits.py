"""Patient-disjoint splits, nested label fractions and label budgets, over several seeds; budgets through the
data module."""

from __future__ import annotations

import numpy as np
import pytest

from lungheart_cl.data.datamodule import ClassificationDataModule
from lungheart_cl.data.splits import (
    LabelBudgetError,
    LabelFractionError,
    LeakageError,
    SplitConfig,
    check_patient_disjoint,
    label_budget_patients,
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


# ---------------------------------------------------------------------------------------------- label budgets
@pytest.mark.parametrize("seed", range(5))
def test_label_budgets_are_exact_nested_and_stratified(seed):
    _, strata = _manifest(n_patients=90, seed=seed)
    strata |= {"unlabelled": -1}
    patients = sorted(strata)
    sizes = np.bincount([s for s in strata.values() if s >= 0])
    previous: set[str] = set()
    for budget in range(2, sizes.sum() + 1):  # every budget, so any rounding flaw between two of them shows
        chosen = set(label_budget_patients(patients, strata, budget, seed))
        assert len(chosen) == budget and "unlabelled" not in chosen
        assert previous <= chosen, budget  # nested: the 20 are inside the 40, inside the 80 ...
        counts = np.bincount([strata[p] for p in chosen], minlength=2)
        quota = budget * sizes / sizes.sum()
        assert (counts >= 1).all() and (np.abs(counts - np.maximum(quota, 1)) < 1).all(), (budget, counts, quota)
        previous = chosen


@pytest.mark.parametrize("seed", range(3))
def test_budgets_nest_over_three_classes_where_per_class_rounding_would_not(seed):
    """Classes of 2, 6 and 9 patients: largest-remainder rounding gives (2, 4, 6) of 12 but (1, 5, 7) of 13, so
    the 13 would not contain the 12 (the Alabama paradox); prefixes of one ordering always do."""
    strata = {f"p{i:02d}": 0 if i < 2 else 1 if i < 8 else 2 for i in range(17)}
    previous: set[str] = set()
    for budget in range(3, 18):
        chosen = set(label_budget_patients(sorted(strata), strata, budget, seed))
        assert len(chosen) == budget and previous <= chosen, budget
        assert {strata[p] for p in chosen} == {0, 1, 2}
        previous = chosen


def test_every_class_is_in_the_smallest_budget_and_seeds_draw_other_patients():
    strata = {f"p{i}": 0 for i in range(50)} | {"q0": 1, "q1": 1} | {"r0": 2, "r1": 2, "r2": 2}
    for seed in range(10):
        chosen = label_budget_patients(sorted(strata), strata, 3, seed)
        assert sorted(strata[p] for p in chosen) == [0, 1, 2]
    draws = {tuple(label_budget_patients(sorted(strata), strata, 10, seed)) for seed in range(5)}
    assert len(draws) == 5


def test_a_budget_beyond_the_training_patients_names_the_maximum():
    strata = {f"p{i}": i % 2 for i in range(12)} | {"u": -1}
    with pytest.raises(LabelBudgetError, match="exceeds the 12 training patients with a label; the largest budget is 12"):
        label_budget_patients(sorted(strata), strata, 13, seed=0)
    with pytest.raises(LabelBudgetError, match="use at least 2"):
        label_budget_patients(sorted(strata), strata, 1, seed=0)
    assert len(label_budget_patients(sorted(strata), strata, 12, seed=0)) == 12


@pytest.fixture(scope="module")
def heart_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _heart(cache, **kwargs) -> ClassificationDataModule:
    data = ClassificationDataModule(dataset="physionet2016", cache_dir=str(cache), synthetic_patients=40,
                                    num_workers=0, **kwargs)
    data.setup("fit")
    return data


def test_a_budget_labels_that_many_recordings_and_the_summary_counts_them(heart_cache):
    """PhysioNet 2016: a patient is a recording, so a budget of n labels n recordings (and more windows)."""
    previous: set[str] = set()
    for budget in (4, 8, 16):
        data = _heart(heart_cache, labelled_patients=budget, label_seed=3)
        summary = data.summary()
        assert set(data.labelled_patients) >= previous
        previous = set(data.labelled_patients)
        assert data.label_fraction is None and data.label_tag == f"n{budget}"
        assert summary["label_budget"] == budget and summary["label_fraction"] is None
        assert summary["labelled_patients"] == summary["labelled_recordings"] == budget
        assert sum(summary["labelled_patients_per_class"]) == sum(summary["labelled_recordings_per_class"]) == budget
        assert min(summary["labelled_patients_per_class"]) >= 1
        assert sum(summary["labelled_segments_per_class"]) == summary["labelled_segments"] > budget  # windows
        assert (data.split.segment_split[data.labelled_rows] == "train").all()
    fraction = _heart(heart_cache, label_fraction=0.5).summary()
    assert fraction["label_budget"] is None and fraction["label_fraction"] == 0.5


def test_a_budget_and_a_fraction_together_are_one_clear_error(heart_cache):
    with pytest.raises(ValueError, match=r"labelled_patients \(8\) and data.label_fraction \(0.1\) both choose"):
        ClassificationDataModule(dataset="physionet2016", cache_dir=str(heart_cache), labelled_patients=8,
                                 label_fraction=0.1)
    everyone = len(_heart(heart_cache, label_fraction=1.0).labelled_patients)
    with pytest.raises(LabelBudgetError, match=f"the largest budget is {everyone}$"):
        _heart(heart_cache, labelled_patients=everyone + 1)
    assert len(_heart(heart_cache, labelled_patients=everyone).labelled_patients) == everyone
