"""The preprocessing cache: segmentation, padding policies, keys, atomic builds, skipped files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungheart_cl.data import cache as cache_module
from lungheart_cl.data.cache import CacheConfig, SegmentSpec, build_cache, cache_directory, cut_segment, plan_segments
from lungheart_cl.data.records import DataError, Event, Patient, Recording, SourceDataset


def _write(path: Path, seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    signal = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(seconds * rate), channels)).astype(np.float32)
    sf.write(path, signal if channels > 1 else signal[:, 0], rate, subtype="PCM_16")
    return signal


def _source(tmp_path: Path, specs: list[tuple[str, float, int, tuple[Event, ...]]]) -> SourceDataset:
    recordings = []
    for i, (name, seconds, rate, events) in enumerate(specs):
        path = tmp_path / f"{name}.wav"
        if not path.exists():
            _write(path, seconds, rate, seed=i)
        info = sf.info(path)
        recordings.append(Recording("icbhi", name, f"p{i % 2}", path, rate, info.frames, events=events))
    patients = {f"p{i}": Patient(f"p{i}") for i in range(2)}
    return SourceDataset("icbhi", tmp_path, recordings, patients)


def test_windows_cover_heart_recordings_and_keep_a_long_enough_tail():
    config = CacheConfig(2000, 4.0)
    recording = Recording("physionet2016", "a", "a", Path("a.wav"), 2000, 2000 * 11)
    specs = plan_segments(recording, config)
    assert [(s.start_s, s.end_s) for s in specs] == [(0, 4), (4, 8), (8, 11)]  # 3 s tail >= half a window
    short = replace(recording, num_frames=2000 * 9)
    assert [(s.start_s, s.end_s) for s in plan_segments(short, config)] == [(0, 4), (4, 8)]  # 1 s tail dropped
    tiny = replace(recording, num_frames=2000 * 3)
    assert [(s.start_s, s.end_s) for s in plan_segments(tiny, config)] == [(0, 3)]  # whole recording, padded


def test_events_give_one_segment_each_with_labels():
    recording = Recording("icbhi", "r", "p", Path("r.wav"), 4000, 4000 * 10,
                          events=(Event(0.5, 2.0, True, False), Event(2.0, 3.0, False, True)))
    specs = plan_segments(recording, CacheConfig(4000, 4.0))
    assert [(s.event_index, s.crackle, s.wheeze) for s in specs] == [(0, 1, 0), (1, 0, 1)]


@pytest.mark.parametrize("padding", ["zero_center", "repeat", "context"])
def test_padding_policies_centre_the_cycle(padding):
    audio = np.arange(1, 4001, dtype=np.float32)  # 1 s at 4 kHz, never zero
    config = CacheConfig(4000, 0.5, padding)
    segment, lo, hi = cut_segment(audio, SegmentSpec(0.4, 0.5, event_index=0), config)
    assert segment.shape == (2000,)
    assert (lo, hi) == (800, 1200)
    np.testing.assert_array_equal(segment[lo:hi], audio[1600:2000])  # the cycle itself, centred
    outside = np.concatenate([segment[:lo], segment[hi:]])
    if padding == "zero_center":
        assert not outside.any()
    elif padding == "repeat":
        assert set(outside.tolist()) <= set(audio[1600:2000].tolist()) and outside.all()
    else:  # real context of the recording around the cycle
        np.testing.assert_array_equal(segment, audio[800:2800])


def test_long_cycle_is_centre_cropped():
    audio = np.arange(1, 4001, dtype=np.float32)
    segment, lo, hi = cut_segment(audio, SegmentSpec(0.0, 1.0, event_index=0), CacheConfig(4000, 0.5))
    np.testing.assert_array_equal(segment, audio[1000:3000])
    assert (lo, hi) == (0, 2000)


def test_context_padding_at_the_recording_edge_is_zero():
    audio = np.ones(4000, dtype=np.float32)
    segment, lo, hi = cut_segment(audio, SegmentSpec(0.0, 0.1, event_index=0), CacheConfig(4000, 0.5, "context"))
    assert not segment[:lo].any() and segment[lo:].all()


def test_build_resamples_mixed_rates_and_reopens_as_a_hit(tmp_path):
    source = _source(tmp_path, [("a", 3.0, 44100, (Event(0.0, 1.0),)), ("b", 2.0, 10000, (Event(0.5, 1.5, True),))])
    config = CacheConfig(4000, 1.0)
    built = build_cache(source, config, tmp_path / "cache", workers=1, progress=False)
    assert built.segments.shape == (2, 4000) and built.segments.dtype == np.float16
    assert built.manifest["recording_id"].tolist() == ["a", "b"]
    assert built.manifest["crackle"].tolist() == [0, 1]
    first_mtime = (built.directory / "segments.f16").stat().st_mtime_ns
    again = build_cache(source, config, tmp_path / "cache", workers=1, progress=False)
    assert again.directory == built.directory
    assert (again.directory / "segments.f16").stat().st_mtime_ns == first_mtime  # not rebuilt


def test_key_changes_with_parameters_audio_and_annotations(tmp_path):
    source = _source(tmp_path, [("a", 2.0, 4000, (Event(0.0, 1.0),))])
    base = cache_directory(tmp_path, source, CacheConfig(4000, 1.0))
    assert cache_directory(tmp_path, source, CacheConfig(4000, 1.0, "repeat")) != base
    relabelled = replace(source, recordings=[replace(source.recordings[0], events=(Event(0.0, 1.0, True),))])
    assert cache_directory(tmp_path, relabelled, CacheConfig(4000, 1.0)) != base
    _write(tmp_path / "a.wav", 2.0, 4000, seed=99)  # same size, new content and mtime
    assert cache_directory(tmp_path, source, CacheConfig(4000, 1.0)) != base


def test_parallel_build_equals_serial_build(tmp_path):
    specs = [(f"r{i}", 2.0 + i % 3, [4000, 10000, 44100][i % 3], (Event(0.1, 1.2), Event(1.2, 1.9, False, True)))
             for i in range(6)]
    source = _source(tmp_path, specs)
    serial = build_cache(source, CacheConfig(4000, 1.5), tmp_path / "serial", workers=1, progress=False)
    parallel = build_cache(source, CacheConfig(4000, 1.5), tmp_path / "parallel", workers=2, progress=False)
    np.testing.assert_array_equal(np.asarray(serial.segments), np.asarray(parallel.segments))


def test_bad_audio_fails_naming_the_file_and_leaves_no_cache(tmp_path):
    source = _source(tmp_path, [("good", 2.0, 4000, (Event(0.0, 1.0),)), ("bad", 2.0, 4000, (Event(0.0, 1.0),))])
    signal = np.zeros(8000, dtype=np.float32)
    signal[100] = np.nan
    sf.write(tmp_path / "bad.wav", signal, 4000, subtype="FLOAT")
    with pytest.raises(DataError, match="bad.wav.*NaN"):
        build_cache(source, CacheConfig(4000, 1.0), tmp_path / "cache", workers=1, progress=False)
    assert not any((tmp_path / "cache").iterdir())  # no half cache, not even a temp dir


def test_skip_bad_drops_the_recording_and_reports_it(tmp_path):
    source = _source(tmp_path, [("good", 2.0, 4000, (Event(0.0, 1.0),)), ("bad", 2.0, 4000, (Event(0.0, 1.0),)),
                                ("also_good", 2.0, 4000, (Event(0.5, 1.0),))])
    sf.write(tmp_path / "bad.wav", np.full(8000, np.inf, dtype=np.float32), 4000, subtype="FLOAT")
    built = build_cache(source, CacheConfig(4000, 1.0), tmp_path / "cache", workers=1, skip_bad=True, progress=False)
    assert built.manifest["recording_id"].tolist() == ["good", "also_good"]
    assert len(built.problems) == 1 and "bad.wav" in built.problems[0]
    expected = sf.read(tmp_path / "also_good.wav", dtype="float32")[0]
    expected = (expected - expected.mean()) / expected.std()
    row = np.asarray(built.segments[1], dtype=np.float32)
    lo, hi = built.manifest["valid_start"][1], built.manifest["valid_end"][1]
    np.testing.assert_allclose(row[lo:hi], expected[2000:4000], atol=2e-3)  # compacted rows stay aligned


def test_interrupted_build_leaves_nothing_usable(tmp_path, monkeypatch):
    source = _source(tmp_path, [("a", 2.0, 4000, (Event(0.0, 1.0),))])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        build_cache(source, CacheConfig(4000, 1.0), tmp_path / "cache", workers=1, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_stereo_is_mixed_to_mono(tmp_path):
    stereo = _write(tmp_path / "s.wav", 1.0, 4000, channels=2)
    recording = Recording("icbhi", "s", "p0", tmp_path / "s.wav", 4000, 4000, num_channels=2, events=(Event(0, 1),))
    source = SourceDataset("icbhi", tmp_path, [recording], {"p0": Patient("p0")})
    built = build_cache(source, CacheConfig(4000, 1.0, normalization="none"), tmp_path / "c", workers=1, progress=False)
    quantised = np.round(stereo * 32767) / 32767  # PCM_16
    np.testing.assert_allclose(np.asarray(built.segments[0], np.float32), quantised.mean(1), atol=1e-3)


def test_real_icbhi_subset_caches_every_cycle(shared_data, tmp_path):
    from lungheart_cl.data.sources import read_source

    source = read_source("icbhi", shared_data / "icbhi")
    built = build_cache(source, CacheConfig(4000, 4.0), tmp_path, progress=False)
    assert len(built) == sum(len(r.events) for r in source.recordings) == 146
    assert np.isfinite(np.asarray(built.segments, dtype=np.float32)).all()
    assert set(built.manifest["patient_id"].tolist()) == set(source.patients)
