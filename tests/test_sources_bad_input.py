"""One bad-input suite for every registered source: damaged audio, a missing or empty root.

Each source gets a small valid root (its synthetic writer, or a writer here for a source without
one); each damage is applied to the audio file of its first recording, or to the label / header file
beside it that only that recording needs. Strict reading must raise a `DataError` naming that file;
with ``skip_bad`` the file is the one counted problem, naming it, and every other recording is kept.
The format-specific bad inputs (a malformed line, a header that disagrees with the audio, a
dataset-wide metadata file) stay in each reader's own test module.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungheart_cl.data.cache import CacheConfig, build_cache
from lungheart_cl.data.records import DataError
from lungheart_cl.data.sources import Source, dataset_names, get_spec
from lungheart_cl.data.synthetic import synthesize
from lungheart_cl.errors import MissingPathError


def _audio_folder(root: Path) -> None:
    """Three short noise recordings for the folder source (every file its own patient)."""
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav", "sub/c.wav"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, 0.1 * rng.standard_normal(4000 * 6).astype(np.float32), 4000, subtype="PCM_16")


# Writers of a small valid root for the sources without a synthetic writer of their own.
BUILDERS: dict[str, Callable[[Path], None]] = {"folder": _audio_folder}
SMALL = {"icbhi": {"patients": 3, "duration_s": 6.0}}


def _build(dataset: str, root: Path) -> None:
    if dataset in BUILDERS:
        root.mkdir(parents=True)
        BUILDERS[dataset](root)
    elif get_spec(dataset).synthesize is not None:
        synthesize(dataset, root, **{"patients": 3, **SMALL.get(dataset, {})})
    else:
        pytest.skip(f"dataset {dataset} has neither a synthetic writer nor a builder in this suite")


@pytest.fixture(scope="module", params=dataset_names())
def template(request, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(request.param) / "root"
    _build(request.param, root)
    return request.param, root


@pytest.fixture
def copy(template, tmp_path) -> tuple[Source, Path]:
    """A fresh copy of the template root, and the audio file of its first recording."""
    dataset, root = template
    source = Source(dataset, shutil.copytree(root, tmp_path / "root"))
    return source, source.read().recordings[0].audio_path


def _zero_length(audio: Path) -> None:
    audio.write_bytes(b"")


def _not_audio(audio: Path) -> None:
    audio.write_text("not audio at all\n")


def _truncated(audio: Path) -> None:
    audio.write_bytes(audio.read_bytes()[: len(audio.read_bytes()) // 2])


def _no_samples(audio: Path) -> None:
    sf.write(audio, np.zeros(0, dtype=np.float32), sf.info(audio).samplerate)


# damage -> what the error says
DAMAGES = {_zero_length: "empty (0 bytes)", _not_audio: "not a readable audio file", _truncated: "truncated",
           _no_samples: "no samples"}


# the per-recording file beside the audio that a reader needs (None: the audio is all it reads per recording)
COMPANIONS: dict[str, str | None] = {"circor2022": ".hea", "folder": None, "icbhi": ".txt", "physionet2016": ".hea"}


def test_every_registered_source_declares_its_per_recording_companion():
    assert sorted(COMPANIONS) == sorted(dataset_names())


def _companion(template) -> str:
    suffix = COMPANIONS[template[0]]
    if suffix is None:
        pytest.skip(f"{template[0]} reads no per-recording file beside the audio")
    return suffix


@pytest.mark.parametrize("missing", [True, False], ids=["missing", "unreadable"])
def test_a_missing_or_unreadable_label_or_header_file_is_named_or_skipped_and_counted(template, copy, missing):
    suffix = _companion(template)
    source, audio = copy
    recordings = len(source.read().recordings)
    companion = audio.with_suffix(suffix)
    if missing:
        companion.unlink()
    else:
        companion.write_text("@@ not a header or annotation !!\n")
    with pytest.raises(DataError) as raised:
        source.read()
    # a missing annotation may be reported on the audio it belongs to, but the message then names it
    assert raised.value.path == companion or (raised.value.path == audio and companion.name in raised.value.message)
    assert "\n" not in str(raised.value)
    skipped = source.read(skip_bad=True)
    assert [problem.path for problem in skipped.problems] == [raised.value.path]
    assert len(skipped.recordings) == recordings - 1 and audio not in {r.audio_path for r in skipped.recordings}


@pytest.mark.parametrize("damage", DAMAGES, ids=[damage.__name__[1:] for damage in DAMAGES])
def test_damaged_audio_is_named_or_skipped_and_counted(copy, damage):
    source, audio = copy
    recordings = len(source.read().recordings)
    damage(audio)
    with pytest.raises(DataError) as raised:
        source.read()
    assert raised.value.path == audio and DAMAGES[damage] in raised.value.message, raised.value
    skipped = source.read(skip_bad=True)
    assert [problem.path for problem in skipped.problems] == [audio]
    assert len(skipped.recordings) == recordings - 1 and audio not in {r.audio_path for r in skipped.recordings}


def test_samples_that_are_not_numbers_are_named_by_the_cache_build_or_dropped(copy, tmp_path):
    source, audio = copy
    info = sf.info(audio)
    samples = np.zeros((info.frames, info.channels), dtype=np.float32)
    samples[info.frames // 2] = np.nan
    sf.write(audio, samples, info.samplerate, subtype="FLOAT")  # same rate and length: only decoding can tell
    columns, config = source.spec.columns, CacheConfig(source.spec.sample_rate, source.spec.segment_seconds)
    with pytest.raises(DataError) as raised:
        build_cache(source.read(), config, tmp_path / "strict", columns=columns, workers=1, progress=False)
    assert raised.value.path == audio and "NaN" in raised.value.message
    cache = build_cache(source.read(skip_bad=True), config, tmp_path / "skip", columns=columns, skip_bad=True,
                        workers=1, progress=False)
    assert [(drop["stage"], drop["file"]) for drop in cache.dropped] == [("decode", str(audio))]
    assert len(set(cache.manifest["recording_id"].tolist())) == len(source.read().recordings) - 1


@pytest.mark.parametrize("dataset", dataset_names())
def test_a_missing_root_is_named(dataset, tmp_path):
    with pytest.raises(MissingPathError, match=f"{tmp_path / 'nope'}: dataset root does not exist"):
        Source(dataset, tmp_path / "nope").read()


@pytest.mark.parametrize("dataset", dataset_names())
def test_an_empty_root_is_one_error_naming_it(dataset, tmp_path):
    with pytest.raises(DataError) as raised:
        Source(dataset, tmp_path).read(skip_bad=True)  # not a per-file problem: skip_bad cannot skip it
    assert raised.value.path == tmp_path or tmp_path in raised.value.path.parents
