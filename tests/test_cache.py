"""The preprocessing cache: segmentation, padding policies, keys, atomic builds, skipped files, permissions,
and what a killed build leaves (checked with a real kill -9 of `lungheart-cl data cache`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungheart_cl.cli import main
from lungheart_cl.data import cache as cache_module
from lungheart_cl.data.build_folders import remove_stale_builds
from lungheart_cl.data.cache import CacheConfig, build_cache, cache_directory
from lungheart_cl.data.manifest import manifest_row
from lungheart_cl.data.records import DataError, Event, Patient, Recording, SourceDataset
from lungheart_cl.data.segments import SegmentSpec, cut_segment, plan_segments
from lungheart_cl.data.spec import Column
from lungheart_cl.data.synthetic import synthesize

# An event-level label, as ICBHI's crackle flag: -1 in the rows of windows.
CRACKLE = (Column("crackle", "event", kind="int"),)


def _event(start: float, end: float, crackle: bool = False) -> Event:
    return Event(start, end, {"crackle": crackle})

REPO = Path(__file__).resolve().parents[1]


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


def test_events_give_one_segment_each_labelled_by_their_extras():
    recording = Recording("icbhi", "r", "p", Path("r.wav"), 4000, 4000 * 10,
                          events=(_event(0.5, 2.0, True), _event(2.0, 3.0)))
    specs = plan_segments(recording, CacheConfig(4000, 4.0))
    assert [(s.start_s, s.end_s, s.event_index) for s in specs] == [(0.5, 2.0, 0), (2.0, 3.0, 1)]
    rows = [manifest_row(recording, Patient("p"), CRACKLE, s.event_index, s.start_s, s.end_s) for s in specs]
    assert [row["crackle"] for row in rows] == [1, 0]
    window = replace(recording, events=())
    assert manifest_row(window, Patient("p"), CRACKLE, -1, 0.0, 4.0)["crackle"] == -1


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
    source = _source(tmp_path, [("a", 3.0, 44100, (_event(0.0, 1.0),)), ("b", 2.0, 10000, (_event(0.5, 1.5, True),))])
    config = CacheConfig(4000, 1.0)
    built = build_cache(source, config, tmp_path / "cache", columns=CRACKLE, workers=1, progress=False)
    assert built.segments.shape == (2, 4000) and built.segments.dtype == np.float16
    assert built.manifest["recording_id"].tolist() == ["a", "b"]
    assert built.manifest["crackle"].tolist() == [0, 1] and built.manifest["crackle"].dtype == np.int64
    first_mtime = (built.directory / "segments.f16").stat().st_mtime_ns
    again = build_cache(source, config, tmp_path / "cache", columns=CRACKLE, workers=1, progress=False)
    assert again.directory == built.directory
    assert (again.directory / "segments.f16").stat().st_mtime_ns == first_mtime  # not rebuilt


def test_key_changes_with_parameters_audio_annotations_extras_and_columns(tmp_path):
    source = _source(tmp_path, [("a", 2.0, 4000, (_event(0.0, 1.0),))])
    base = cache_directory(tmp_path, source, CacheConfig(4000, 1.0))
    assert cache_directory(tmp_path, source, CacheConfig(4000, 1.0, "repeat")) != base
    relabelled = replace(source, recordings=[replace(source.recordings[0], events=(_event(0.0, 1.0, True),))])
    assert cache_directory(tmp_path, relabelled, CacheConfig(4000, 1.0)) != base
    diagnosed = replace(source, patients={**source.patients, "p0": Patient("p0", extra={"diagnosis": "COPD"})})
    assert cache_directory(tmp_path, diagnosed, CacheConfig(4000, 1.0)) != base
    assert cache_directory(tmp_path, source, CacheConfig(4000, 1.0), CRACKLE) != base
    _write(tmp_path / "a.wav", 2.0, 4000, seed=99)  # same size, new content and mtime
    assert cache_directory(tmp_path, source, CacheConfig(4000, 1.0)) != base


def test_parallel_build_equals_serial_build(tmp_path):
    specs = [(f"r{i}", 2.0 + i % 3, [4000, 10000, 44100][i % 3], (_event(0.1, 1.2), _event(1.2, 1.9, True)))
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
    assert [(d["stage"], Path(d["file"]).name) for d in built.dropped] == [("decode", "bad.wav")]
    assert "infinite" in built.dropped[0]["problem"]
    expected = sf.read(tmp_path / "also_good.wav", dtype="float32")[0]
    expected = (expected - expected.mean()) / expected.std()
    row = np.asarray(built.segments[1], dtype=np.float32)
    lo, hi = built.manifest["valid_start"][1], built.manifest["valid_end"][1]
    np.testing.assert_allclose(row[lo:hi], expected[2000:4000], atol=2e-3)  # compacted rows stay aligned


def test_parallel_build_drops_a_recording_that_fails_to_decode(tmp_path):
    """The worker's DataError reaches the builder intact (it once broke the whole process pool)."""
    source = _source(tmp_path, [(f"r{i}", 2.0, 4000, (Event(0.0, 1.0),)) for i in range(4)])
    signal = np.zeros(8000, dtype=np.float32)
    signal[7] = np.nan
    sf.write(tmp_path / "r2.wav", signal, 4000, subtype="FLOAT")
    built = build_cache(source, CacheConfig(4000, 1.0), tmp_path / "cache", workers=2, skip_bad=True, progress=False)
    assert built.manifest["recording_id"].tolist() == ["r0", "r1", "r3"]
    assert built.dropped == [{"stage": "decode", "file": str(tmp_path / "r2.wav"),
                              "problem": "1 samples are NaN or infinite"}]


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


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_published_cache_follows_the_umask(tmp_path, umask):
    """A cache on shared storage is readable by the group when the umask says so (not mkdtemp's 0700)."""
    source = _source(tmp_path, [("a", 2.0, 4000, (Event(0.0, 1.0),)), ("b", 2.0, 4000, (Event(0.0, 1.0),))])
    previous = os.umask(umask)
    try:
        built = build_cache(source, CacheConfig(4000, 1.0), tmp_path / "cache", workers=2, progress=False)
    finally:
        os.umask(previous)
    assert built.directory.stat().st_mode & 0o777 == 0o777 & ~umask
    for path in built.directory.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_build_folders_of_dead_builders_are_removed_live_ones_kept(tmp_path):
    host = socket.gethostname()
    names = {
        "dead": f".building-icbhi-4000hz-0123456789abcdef.{_dead_pid()}@{host}.00ff",
        "live": f".building-icbhi-4000hz-0123456789abcdef.{os.getpid()}@{host}.00fe",  # a concurrent build
        "other host": f".building-icbhi-4000hz-0123456789abcdef.{_dead_pid()}@not-{host}.00fd",
        "unknown builder": ".building-icbhi-4000hz-0123456789abcdef-x1y2z3",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "segments.f16").write_bytes(b"partial")
    assert remove_stale_builds(tmp_path) == [tmp_path / names["dead"]]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(n for k, n in names.items() if k != "dead")


# `lungheart-cl data cache` whose two pool workers wait, mid-recording, until the file {release} exists.
HELD_BUILD = """
import os, sys, time
from lungheart_cl.data import build_folders, cache

decode = cache.decode_segments

def held(*args, **kwargs):
    for _ in range(12000):  # at most 10 minutes, so a failed test leaves no process behind for long
        if os.path.exists({release!r}):
            return decode(*args, **kwargs)
        time.sleep(0.05)
    os._exit(3)

cache.decode_segments = held
os.cpu_count = lambda: 2  # two pool workers, whatever this machine has
{patch}
from lungheart_cl.cli import main
sys.exit(main(sys.argv[1:]))
"""
# Without prctl (not Linux) the workers watch their parent instead.
WITHOUT_PRCTL = "build_folders._kill_me_when_parent_dies = lambda: False"
needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to see the workers")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers until init reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _wait_for(condition, what: str, seconds: float = 300.0) -> None:
    """Poll until `condition()` holds; the bound only stops a broken run from hanging the suite."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def _cache_options(root: Path, cache: Path) -> list[str]:
    return ["data", "cache", "--data.dataset", "physionet2016", "--data.root", str(root),
            "--data.cache_dir", str(cache)]


def _held_build(root: Path, cache: Path, release: Path, log: Path, patch: str = "") -> subprocess.Popen:
    """A `data cache` subprocess whose workers hold, once its build folder and both workers exist. Its
    output goes to `log`, not to pipes, which orphaned workers would keep open."""
    script = HELD_BUILD.format(release=str(release), patch=patch)
    with log.open("w") as output:
        builder = subprocess.Popen([sys.executable, "-c", script, *_cache_options(root, cache)],
                                   env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=output, stderr=output, text=True)
    _wait_for(lambda: builder.poll() is not None or (list(cache.glob(".building-*"))
                                                      and len(_children(builder.pid)) == 2),
              "the build folder and two pool workers")
    assert builder.poll() is None, log.read_text()[-2000:]
    return builder


def _end(processes: list[int]) -> None:
    """Kill what a failed test left running (a passing one leaves nothing)."""
    for pid in processes:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def heart_root(tmp_path_factory) -> Path:
    return synthesize("physionet2016", tmp_path_factory.mktemp("heart") / "physionet2016", patients=6)


@needs_proc
@pytest.mark.parametrize("patch", ["", WITHOUT_PRCTL], ids=["prctl", "watching the parent"])
def test_kill_9_of_a_build_leaves_no_workers_and_the_next_build_removes_its_folder(heart_root, tmp_path, patch,
                                                                                    capsys):
    cache = tmp_path / "cache"
    builder = _held_build(heart_root, cache, tmp_path / "never", tmp_path / "builder.log", patch)
    workers = _children(builder.pid)
    os.kill(builder.pid, signal.SIGKILL)
    builder.wait()
    try:
        _wait_for(lambda: not any(_running(pid) for pid in workers), "the workers to end with their builder")
    finally:
        _end(workers)
    [debris] = cache.glob(".building-*")
    assert f".{builder.pid}@{socket.gethostname()}." in debris.name
    capsys.readouterr()
    assert main(_cache_options(heart_root, cache)) == 0
    assert "cache built: " in capsys.readouterr().out
    assert not debris.exists() and not list(cache.glob(".building-*"))


@needs_proc
def test_a_build_beside_a_live_concurrent_build_keeps_it_and_both_succeed(heart_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    release = tmp_path / "release"
    log = tmp_path / "first.log"
    first = _held_build(heart_root, cache, release, log)
    try:
        [building] = cache.glob(".building-*")
        capsys.readouterr()
        assert main(_cache_options(heart_root, cache)) == 0  # builds and publishes while the first is mid-build
        assert "cache built: " in capsys.readouterr().out
        assert building.is_dir()  # the live builder's folder was left alone
    finally:
        release.touch()
    assert first.wait(timeout=600) == 0, log.read_text()[-2000:]
    assert "cache found (already built): " in log.read_text()  # it lost the race and kept the published cache
    assert len([path for path in cache.iterdir()]) == 1 and not building.exists()
