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


class LogMelFrontend(nn.Module):
    """Log-mel spectrogram (B, L) -> (B, 1, n_mels, frames), normalised per mel band.

    Window and hop are given in milliseconds so one setting suits 2 kHz heart and 4 kHz lung audio.
    """

    def __init__(self, sample_rate: int = 4000, n_mels: int = 64, window_ms: float = 128.0, hop_ms: float = 32.0,
                 f_min: float = 50.0, f_max: float | None = None):
        super().__init__()
        self.sample_rate = sample_rate
        self.win_length = int(round(sample_rate * window_ms / 1000))
        self.hop_length = int(round(sample_rate * hop_ms / 1000))
        self.n_fft = 2 ** math.ceil(math.log2(self.win_length))
        self.n_mels = n_mels
        self.config = {"sample_rate": sample_rate, "n_mels": n_mels, "window_ms": window_ms, "hop_ms": hop_ms,
                       "f_min": f_min, "f_max": f_max}
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

    def forward(self, wave: Tensor) -> Tensor:
        spec = (self.log_mel(wave) - self.mel_mean) / self.mel_std
        return spec.unsqueeze(1)

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
