"""Pair policies pick valid partners; the stratified sampler keeps batch composition across ranks."""

from __future__ import annotations

import numpy as np
import pytest

from lungheart_cl.data.pairs import PAIR_POLICIES, SameRecordingDifferentTime, make_pair_policy
from lungheart_cl.data.sampler import StratifiedPairSampler


def _manifest(seed: int = 0, n: int = 400) -> dict:
    rng = np.random.default_rng(seed)
    patient = rng.integers(0, 30, n)
    location = rng.choice(["Al", "Ar", "Tc"], n)
    location[patient == 0] = "Al"  # a patient recorded at one location only
    recording = np.char.add(np.char.add(patient.astype(str), "_"), location)
    return {"patient_id": patient.astype(str), "location": location, "recording_id": recording,
            "age_group": rng.choice(["child", "adult"], n), "sex": rng.choice(["female", "male"], n),
            "start_s": rng.uniform(0, 60, n).round(4)}


@pytest.mark.parametrize("seed", range(3))
def test_every_policy_returns_valid_partners(seed):
    m = _manifest(seed)
    anchors = np.arange(len(m["patient_id"]))
    rng = np.random.default_rng(seed)
    same = lambda col, p: m[col][p] == m[col][anchors]  # noqa: E731
    partners = {name: make_pair_policy(name, m).partners(anchors, rng) for name in PAIR_POLICIES}
    assert (partners["same_segment"] == anchors).all()
    for name in ("same_recording", "same_patient", "same_patient_same_location", "same_patient_different_location",
                 "same_location", "same_recording_different_time"):
        p = partners[name]
        assert (p != anchors).mean() > 0.9, name  # a real other segment nearly always exists here
    assert same("recording_id", partners["same_recording"]).all()
    assert same("recording_id", partners["same_recording_different_time"]).all()
    assert same("patient_id", partners["same_patient"]).all()
    assert (same("patient_id", partners["same_patient_same_location"])
            & same("location", partners["same_patient_same_location"])).all()
    assert same("location", partners["same_location"]).all()
    different = partners["same_patient_different_location"]
    assert same("patient_id", different).all()
    multi_location = np.asarray([len(set(m["location"][m["patient_id"] == p])) > 1 for p in m["patient_id"]])
    assert (~same("location", different))[multi_location].all()
    assert same("location", different)[~multi_location].all()  # documented fallback
    policy = make_pair_policy("same_patient_different_location", m)
    assert policy.fallback_fraction(anchors, seed) == pytest.approx(float(np.mean(~multi_location)))  # and counted


def test_partners_are_random_over_the_whole_group():
    m = _manifest()
    policy = make_pair_policy("same_patient", m)
    anchor = np.asarray([0])
    seen = {int(policy.partners(anchor, np.random.default_rng(s))[0]) for s in range(300)}
    group = set(np.flatnonzero(m["patient_id"] == m["patient_id"][0]).tolist()) - {0}
    assert seen == group


def test_lonely_segments_fall_back_to_themselves_and_are_counted():
    m = {"recording_id": np.asarray(["a", "a", "b"]), "patient_id": np.asarray(["1", "1", "2"]),
         "location": np.asarray(["x", "x", "y"])}
    policy = make_pair_policy("same_recording", m)
    assert policy.partners(np.arange(3), np.random.default_rng(0)).tolist() == [1, 0, 2]
    assert policy.fallback_fraction(np.arange(3)) == pytest.approx(1 / 3)


def _sampler(m, rank=0, world=1, batch=32, seed=0, strata_per_batch=2):
    rows = np.arange(len(m["patient_id"])) + 1000  # pool rows are cache rows, not 0..n-1
    strata = np.unique(np.char.add(m["age_group"], m["sex"]), return_inverse=True)[1]
    policy = make_pair_policy("same_patient", m)
    return StratifiedPairSampler(rows, policy, batch, strata=strata, strata_per_batch=strata_per_batch, seed=seed,
                                 rank=rank, world_size=world)


def test_batches_hold_few_strata_and_each_row_once():
    m = _manifest(n=2000)
    sampler = _sampler(m)
    anchors = []
    stratum = np.char.add(m["age_group"], m["sex"])
    mostly_two = 0
    for batch in sampler:
        rows = np.asarray([a for a, _ in batch]) - 1000
        anchors += rows.tolist()
        mostly_two += len(set(stratum[rows].tolist())) <= 2
    assert len(anchors) == len(set(anchors)) == len(sampler) * 32
    assert mostly_two >= len(sampler) - 2  # only the pooled-leftover batches may mix more strata
    partners_ok = all(m["patient_id"][b - 1000] == m["patient_id"][a - 1000] for batch in sampler for a, b in batch)
    assert partners_ok


def test_ranks_get_disjoint_equal_batches_and_epochs_differ():
    m = _manifest(n=2000)
    shards = [list(_sampler(m, rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(_sampler(m, rank=0, world=2))
    seen = [{a for batch in shard for a, _ in batch} for shard in shards]
    assert not seen[0] & seen[1]
    sampler = _sampler(m)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first  # seeded


def test_unstratified_sampling_and_too_small_pool():
    m = _manifest(n=100)
    sampler = _sampler(m, strata_per_batch=0)
    assert len(sampler) == 3 and all(len(b) == 32 for b in sampler)
    with pytest.raises(ValueError, match="fewer than one batch"):
        _sampler(m, world=4)


def _windows(durations_s: list[float], window_s: float = 4.0, hop_s: float = 1.0, shuffle_seed: int = 0) -> dict:
    """A manifest of overlapping windows (the cache's layout for heart recordings), rows shuffled."""
    recording, start = [], []
    for i, seconds in enumerate(durations_s):
        starts = np.arange(0.0, max(seconds - window_s, 0.0) + 1e-9, hop_s)
        recording += [f"r{i}"] * len(starts)
        start += starts.round(4).tolist()
    order = np.random.default_rng(shuffle_seed).permutation(len(start))
    recording, start = np.asarray(recording)[order], np.asarray(start)[order]
    return {"recording_id": recording, "patient_id": recording, "start_s": start}


@pytest.mark.parametrize("gap", [1.0, 2.0, 3.5])
def test_different_time_partners_are_far_enough_when_the_recording_allows(gap):
    m = _windows([4.0, 5.0, 6.0, 9.0, 20.0, 33.0, 60.0])
    anchors = np.arange(len(m["start_s"]))
    policy = make_pair_policy("same_recording_different_time", m, min_gap_s=gap)
    start, rec = m["start_s"], m["recording_id"]
    # the candidates, by brute force over rows
    far_exists = np.asarray([((rec == rec[a]) & (np.abs(start - start[a]) >= gap)).any() for a in anchors])
    alone = np.asarray([(rec == rec[a]).sum() == 1 for a in anchors])
    for seed in range(5):
        partners = policy.partners(anchors, np.random.default_rng(seed))
        distance = np.abs(start[partners] - start[anchors])
        assert (rec[partners] == rec[anchors]).all()
        assert (distance[far_exists] >= gap).all()
        assert (partners[~far_exists & ~alone] != anchors[~far_exists & ~alone]).all()  # a nearer window first
        assert (partners[alone] == anchors[alone]).all()
    expected = float(np.mean(~far_exists))
    assert 0 < expected < 1 and policy.fallback_fraction(anchors) == pytest.approx(expected)


def test_different_time_partners_cover_every_far_window():
    m = _windows([20.0])  # windows start at 0, 1, ..., 16 s
    anchor = int(np.flatnonzero(m["start_s"] == 8.0)[0])
    policy = make_pair_policy("same_recording_different_time", m, min_gap_s=3.0)
    seen = {float(m["start_s"][policy.partners(np.asarray([anchor]), np.random.default_rng(s))[0]]) for s in range(400)}
    assert seen == {float(t) for t in range(17) if abs(t - 8) >= 3}  # exactly 3 s away counts; nothing nearer


def test_different_time_default_gap_and_bad_arguments():
    m = _windows([10.0])
    assert make_pair_policy("same_recording_different_time", m).min_gap_s == SameRecordingDifferentTime().min_gap_s
    with pytest.raises(ValueError, match="min_gap_s must be positive"):
        make_pair_policy("same_recording_different_time", m, min_gap_s=0.0)
    with pytest.raises(ValueError, match="applies to same_recording_different_time only"):
        make_pair_policy("same_recording", m, min_gap_s=2.0)


def test_the_pretraining_data_module_serves_different_time_pairs(tmp_path):
    from lungheart_cl.data.datamodule import PretrainDataModule

    data = PretrainDataModule(dataset="physionet2016", cache_dir=str(tmp_path), synthetic_patients=16, hop_seconds=1.0,
                              batch_size=16, num_workers=0, pair_policy="same_recording_different_time",
                              pair_min_gap_s=2.5)
    data.prepare_data()
    data.setup("fit")
    m = data.manifest
    pairs = np.asarray([pair for batch in data.train_sampler() for pair in batch])
    anchor, partner = pairs[:, 0], pairs[:, 1]
    assert (m["recording_id"][anchor] == m["recording_id"][partner]).all()
    gap = np.abs(m["start_s"][anchor] - m["start_s"][partner])
    pool = data.pool_rows()
    far_exists = np.asarray([(np.abs(m["start_s"][pool] - m["start_s"][a]) >= 2.5)[
        m["recording_id"][pool] == m["recording_id"][a]].any() for a in anchor])
    assert (gap[far_exists] >= 2.5).all() and far_exists.mean() > 0.8
    wrong = PretrainDataModule(dataset="physionet2016", cache_dir=str(tmp_path), synthetic_patients=16,
                               hop_seconds=1.0, batch_size=16, num_workers=0, pair_min_gap_s=2.5)
    wrong.prepare_data()
    wrong.setup("fit")
    with pytest.raises(ValueError, match="pair_min_gap_s applies to same_recording_different_time only"):
        wrong.train_sampler()
