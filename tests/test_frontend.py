"""The log-mel front end: shapes, training-split statistics, channel normalisation, AMP safety."""

from __future__ import annotations

import math

import torch

from lungheart_cl.frontend import LogMelFrontend, frames_from_samples


def _tone(freq: float, seconds: float = 2.0, rate: int = 4000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return torch.sin(2 * math.pi * freq * t)


def test_shape_and_window_settings_follow_the_sample_rate():
    lung, heart = LogMelFrontend(4000), LogMelFrontend(2000)
    assert lung(torch.randn(3, 16000)).shape == (3, 1, 64, lung.num_frames(16000)) == (3, 1, 64, 126)
    assert (lung.hop_length, heart.hop_length) == (128, 64)  # 32 ms at either rate
    assert lung.n_fft >= lung.win_length and heart.n_fft >= heart.win_length


def test_a_tone_lands_in_the_right_mel_band():
    frontend = LogMelFrontend(4000)
    low, high = frontend(_tone(200.0).unsqueeze(0)), frontend(_tone(1500.0).unsqueeze(0))
    assert low[0, 0].mean(-1).argmax() < high[0, 0].mean(-1).argmax()


def test_statistics_normalise_the_training_audio():
    frontend = LogMelFrontend(4000)
    batches = [torch.randn(8, 8000) * (i + 1) for i in range(3)]
    frontend.fit_statistics(batches)
    spec = torch.cat([frontend(b) for b in batches])
    assert bool(frontend.fitted)
    assert spec.mean().abs() < 0.05 and (spec.std() - 1).abs() < 0.05
    restored = LogMelFrontend(4000)
    restored.load_state_dict(frontend.state_dict())  # statistics travel in the state dict
    torch.testing.assert_close(restored(batches[0]), frontend(batches[0]))


def test_channel_norm_removes_a_stationary_channel_colour_and_blanks_padding():
    frontend = LogMelFrontend(4000, channel_norm=True)
    wave = torch.randn(1, 16000)
    valid = torch.tensor([[4000, 12000]])
    wave[:, :4000] = 0
    wave[:, 12000:] = 0
    spec = frontend(wave, valid)[0, 0]
    frames = frontend.valid_frames(valid, spec.shape[-1])[0]
    assert (spec[:, : frames[0]] == 0).all() and (spec[:, frames[1]:] == 0).all()
    torch.testing.assert_close(spec[:, frames[0]: frames[1]].mean(-1), torch.zeros(64), atol=1e-4, rtol=0)


def test_a_filtered_copy_looks_like_the_original_after_channel_norm():
    """A fixed filter shifts every frame of a band by the same log gain: channel_norm cancels it."""
    torch.manual_seed(0)
    wave = torch.randn(1, 16000) * torch.linspace(0.2, 1.0, 16000)  # content that changes over time
    gain = torch.logspace(-1, 1, 64).reshape(1, 64, 1)  # a per-band channel gain
    frontend = LogMelFrontend(4000, channel_norm=True)
    power = frontend.mel(wave)
    normalised = frontend._subtract_segment_mean(torch.log(power + 1e-6), None)
    coloured = frontend._subtract_segment_mean(torch.log(power * gain + 1e-6), None)
    torch.testing.assert_close(normalised, coloured, atol=1e-3, rtol=0)


def test_autocast_keeps_the_spectrogram_in_float32():
    frontend = LogMelFrontend(4000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spec = frontend(torch.randn(2, 8000))
    assert spec.dtype == torch.float32 and torch.isfinite(spec).all()


def test_frames_from_samples():
    valid = torch.tensor([[0, 16000], [1000, 1001], [160, 320], [15990, 16000], [0, 0]])
    frames = frames_from_samples(valid, hop_length=160, num_frames=101)
    assert frames.tolist() == [[0, 100], [6, 7], [1, 2], [99, 100], [0, 0]]
    assert frames.dtype == valid.dtype
    clipped = frames_from_samples(torch.tensor([[0, 16000]]), hop_length=160, num_frames=50)
    assert clipped.tolist() == [[0, 50]]
