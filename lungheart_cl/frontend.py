"""Waveform batch -> normalised log-mel spectrogram, on the device, in float32 even under AMP.

Per-mel mean and standard deviation come from the training split (`fit_statistics`) and are
buffers, so they travel inside every checkpoint and exported encoder.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torchaudio
from torch import Tensor, nn


def frames_from_samples(valid: Tensor, hop_length: int, num_frames: int) -> Tensor:
    """Convert a ``(B, 2)`` ``[start, end)`` sample range into spectrogram frames.

    Frame ``t`` covers samples ``[t*hop, t*hop + n_fft)``, so the frames touching real audio are
    ``[start // hop, ceil(end / hop))``, clipped to ``[0, num_frames]``.
    """
    if hop_length <= 0:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    start = torch.div(valid[:, 0], hop_length, rounding_mode="floor")
    end = torch.div(valid[:, 1] + hop_length - 1, hop_length, rounding_mode="floor")  # ceil division
    start = start.clamp(0, num_frames)
    end = torch.maximum(end.clamp(0, num_frames), start)  # never an inverted range
    return torch.stack([start, end], 1).to(valid.dtype)


class LogMelFrontend(nn.Module):
    """Log-mel spectrogram (B, L) -> (B, 1, n_mels, frames), normalised per mel band.

    Window and hop are given in milliseconds so one setting suits 2 kHz heart and 4 kHz lung audio.
    With ``channel_norm`` each segment's own per-band mean over its valid frames is subtracted
    (cepstral-mean-style): a stationary channel colour (stethoscope response, chest wall, skin
    contact) is additive in the log domain and vanishes, while transient and tonal events remain;
    padded frames are set to 0.
    """

    def __init__(self, sample_rate: int = 4000, n_mels: int = 64, window_ms: float = 128.0, hop_ms: float = 32.0,
                 f_min: float = 50.0, f_max: float | None = None, channel_norm: bool = False):
        super().__init__()
        self.channel_norm = channel_norm
        self.sample_rate = sample_rate
        self.win_length = int(round(sample_rate * window_ms / 1000))
        self.hop_length = int(round(sample_rate * hop_ms / 1000))
        self.n_fft = 2 ** math.ceil(math.log2(self.win_length))
        self.n_mels = n_mels
        self.config = {"sample_rate": sample_rate, "n_mels": n_mels, "window_ms": window_ms, "hop_ms": hop_ms,
                       "f_min": f_min, "f_max": f_max, "channel_norm": channel_norm}
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=self.n_fft, win_length=self.win_length, hop_length=self.hop_length,
            f_min=f_min, f_max=f_max or sample_rate / 2, n_mels=n_mels, power=2.0, center=True, norm="slaney",
            mel_scale="slaney")
        self.register_buffer("mel_mean", torch.zeros(n_mels, 1))
        self.register_buffer("mel_std", torch.ones(n_mels, 1))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length + 1

    def log_mel(self, wave: Tensor) -> Tensor:
        """Un-normalised log-mel power (dB-like, natural log), computed in float32."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            power = self.mel(wave.float())
            return torch.log(power + 1e-6)

    def valid_frames(self, valid: Tensor, num_frames: int) -> Tensor:
        return frames_from_samples(valid, self.hop_length, num_frames)

    def forward(self, wave: Tensor, valid: Tensor | None = None) -> Tensor:
        """`valid` (B, 2) = [start, end) samples of real audio; used by ``channel_norm``."""
        spec = (self.log_mel(wave) - self.mel_mean) / self.mel_std
        if self.channel_norm:
            spec = self._subtract_segment_mean(spec, valid)
        return spec.unsqueeze(1)

    def _subtract_segment_mean(self, spec: Tensor, valid: Tensor | None) -> Tensor:
        frames = torch.arange(spec.shape[-1], device=spec.device)
        if valid is None:
            mask = torch.ones_like(spec[:, :1, :])
        else:
            bounds = self.valid_frames(valid, spec.shape[-1])
            mask = ((frames >= bounds[:, :1]) & (frames < bounds[:, 1:])).unsqueeze(1).to(spec.dtype)
        mean = (spec * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1)
        return (spec - mean) * mask

    @torch.no_grad()
    def fit_statistics(self, batches: Iterable[Tensor]) -> None:
        """Per-mel mean/std over all frames of the given waveform batches (the training split)."""
        total, total_sq, count = torch.zeros(self.n_mels, 1), torch.zeros(self.n_mels, 1), 0
        for wave in batches:
            spec = self.log_mel(wave.to(self.mel_mean.device)).double().cpu()
            total += spec.sum(dim=(0, 2)).unsqueeze(1)
            total_sq += (spec ** 2).sum(dim=(0, 2)).unsqueeze(1)
            count += spec.shape[0] * spec.shape[2]
        if count == 0:
            raise ValueError("no training audio to compute front-end statistics from")
        mean = total / count
        std = (total_sq / count - mean ** 2).clamp_min(1e-8).sqrt()
        self.set_statistics(mean.float(), std.float())

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        self.mel_mean.copy_(mean.reshape(self.n_mels, 1))
        self.mel_std.copy_(std.reshape(self.n_mels, 1))
        self.fitted.fill_(True)
