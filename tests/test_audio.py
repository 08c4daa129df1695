"""`load_audio`: decoding to float32 mono, resampling, and one-line errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lungheart_cl.data.audio import load_audio, probe_audio
from lungheart_cl.data.records import DataError


def _tone(rate: int, seconds: float, hz: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def test_resampling_keeps_duration_frequency_and_level(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(8000, 2.0, 440.0), 8000, subtype="FLOAT")
    out = load_audio(path, target_rate=4000)
    assert out.dtype == np.float32 and out.ndim == 1 and len(out) == 8000
    spectrum = np.abs(np.fft.rfft(out))
    assert np.fft.rfftfreq(len(out), 1 / 4000)[spectrum.argmax()] == pytest.approx(440.0, abs=0.5)
    assert np.sqrt(np.mean(out[500:-500] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    # a tone above the new Nyquist is filtered out, not folded back as an alias
    sf.write(path, _tone(8000, 1.0, 3000.0), 8000, subtype="FLOAT")
    assert np.abs(load_audio(path, target_rate=4000)[200:-200]).max() < 0.01  # edges: filter onset
    same = load_audio(path, target_rate=8000)
    np.testing.assert_array_equal(same, sf.read(path, dtype="float32")[0])  # same rate: untouched


def test_channels_are_averaged_to_mono_and_pcm_is_scaled_to_unit_range(tmp_path):
    left, right = _tone(4000, 0.5, 200.0), _tone(4000, 0.5, 300.0)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], 1), 4000, subtype="PCM_16")
    out = load_audio(path, target_rate=4000)
    np.testing.assert_allclose(out, (left + right) / 2, atol=2 / 2**15)  # 16-bit quantisation of each channel
    assert out.dtype == np.float32


@pytest.mark.parametrize("content, problem", [(b"", "cannot decode audio"),
                                              (b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", "cannot decode audio")])
def test_an_undecodable_file_is_one_line_naming_it(tmp_path, content, problem):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_audio(path, target_rate=4000)
    message = str(caught.value)
    assert message.startswith(f"{path}: {problem}") and "\n" not in message and caught.value.path == path


def test_a_rate_other_than_the_metadata_declares_and_non_finite_samples_are_errors(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(2000, 0.5, 100.0), 2000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"a\.wav: sample rate 2000 Hz differs from the 4000 Hz its metadata"):
        load_audio(path, target_rate=4000, expected_rate=4000)
    samples = _tone(2000, 0.5, 100.0)
    samples[[3, 7]] = [np.nan, np.inf]
    sf.write(path, samples, 2000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"a\.wav: 2 samples are NaN or infinite"):
        load_audio(path, target_rate=2000)


def test_the_header_probe_names_a_truncated_file(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, _tone(4000, 1.0, 100.0), 4000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:-2000])  # 1000 of the 4000 declared frames gone
    with pytest.raises(DataError, match=r"cut\.wav: truncated: header declares 4000 frames but only 3000"):
        probe_audio(path)
