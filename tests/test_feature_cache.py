"""The on-disk frozen-feature store: keyed by the weights, merged by concurrent writers, never read half-written."""

from __future__ import annotations

import logging
import multiprocessing

import numpy as np
import torch

from lungheart_cl.encoders import SmallCNN
from lungheart_cl.feature_cache import FeatureStore, feature_key
from lungheart_cl.frontend import LogMelFrontend


def _modules(seed: int = 0):
    torch.manual_seed(seed)
    return SmallCNN(channels=(4,)), LogMelFrontend(4000)


def test_the_key_changes_with_the_weights_the_front_end_and_the_segment_cache():
    encoder, frontend = _modules()
    key = feature_key(encoder, frontend, "segments-a")
    assert key == feature_key(*_modules(), "segments-a")  # same weights, same key
    assert key != feature_key(*_modules(seed=1), "segments-a")
    assert key != feature_key(encoder, frontend, "segments-b")
    frontend.set_statistics(torch.full((64,), -5.0), torch.full((64,), 2.0))
    assert key != feature_key(encoder, frontend, "segments-a")
    encoder.features[1].running_mean += 1  # batch-norm statistics are weights of a frozen encoder too
    assert feature_key(encoder, frontend, "segments-a") != feature_key(*_modules(), "segments-a")


def test_rows_accumulate_across_saves(tmp_path):
    store = FeatureStore(tmp_path, "k" * 64, num_rows=10, dim=3)
    assert [len(a) for a in store.load()] == [0, 0]
    store.save(np.array([4, 1]), np.array([[4.0] * 3, [1.0] * 3]))
    store.save(np.array([7, 4]), np.array([[7.0] * 3, [4.0] * 3]))
    rows, features = FeatureStore(tmp_path, "k" * 64, 10, 3).load()
    assert rows.tolist() == [1, 4, 7] and features.dtype == np.float32
    np.testing.assert_array_equal(features[:, 0], [1.0, 4.0, 7.0])
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_or_foreign_file_is_reported_and_ignored(tmp_path, caplog):
    store = FeatureStore(tmp_path, "d" * 64, num_rows=10, dim=3)
    store.path.write_bytes(b"PK\x03\x04 half a zip")
    with caplog.at_level(logging.WARNING):
        assert [len(a) for a in store.load()] == [0, 0]
    assert "unreadable feature store" in caplog.text and store.path.name in caplog.text
    store.save(np.array([2]), np.ones((1, 3)))  # the damaged file is replaced, not merged
    assert store.load()[0].tolist() == [2]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert [len(a) for a in FeatureStore(tmp_path, "d" * 64, num_rows=2, dim=3).load()] == [0, 0]
    assert "do not fit 2 rows x 3" in caplog.text


def _writer(directory: str, worker: int, rounds: int) -> None:
    store = FeatureStore(directory, "c" * 64, num_rows=10_000, dim=16)
    for r in range(rounds):
        rows = np.arange(worker * 1000 + r * 10, worker * 1000 + r * 10 + 10)
        store.save(rows, np.repeat(rows[:, None], 16, axis=1).astype(np.float32))


def _reader(directory: str, rounds: int, failures) -> None:
    store = FeatureStore(directory, "c" * 64, num_rows=10_000, dim=16)
    for _ in range(rounds):
        if store.path.is_file():
            rows, features = store.load()
            if not len(rows) or not np.array_equal(features[:, 0], rows.astype(np.float32)):
                failures.value += 1


def test_concurrent_writers_merge_and_readers_never_see_a_partial_file(tmp_path):
    context = multiprocessing.get_context("fork")
    failures = context.Value("i", 0)
    workers = [context.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(3)]
    workers.append(context.Process(target=_reader, args=(str(tmp_path), 200, failures)))
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    rows, features = FeatureStore(tmp_path, "c" * 64, 10_000, 16).load()
    expected = sorted(w * 1000 + i for w in range(3) for i in range(150))
    assert rows.tolist() == expected  # no writer's rows were lost
    np.testing.assert_array_equal(features[:, -1], rows.astype(np.float32))
    assert failures.value == 0
