"""Additive noise at a controlled signal-to-noise ratio, measured on each sample's valid span.

``x`` is ``(B, L)`` audio before the front end; spans are in samples.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor

from lungheart_cl.views.base import View, check_range, in_span, uniform


class AddNoise(View):
    """Add white, pink or uniform noise at a random SNR in ``[min_snr_db, max_snr_db]`` per sample.

    Auscultation is noisy (friction, ambient sound, electronics); noise at a controlled SNR keeps
    the views recognisable while removing fine detail the encoder could memorise. The SNR is
    relative to each sample's power over its valid region, and the drawn noise is renormalised to
    exactly that power, so the achieved SNR equals the target. ``only_valid=True`` adds noise only
    inside the valid range, so zero padding stays silent. Pink noise (1/f power) resembles
    body/handling noise more than white.

    ``color="uniform"`` is white noise whose samples are uniform in ``[-a, a]`` (bounded, no
    Gaussian tails): Listen2YourHeart's (Ballas et al. 2022) "small uniform noise". Its amplitude
    is set by the SNR like the others: ``a = r * std`` of the valid audio is
    ``SNR = 20 log10(sqrt(3) / r)`` dB, e.g. r = 0.1 -> 24.8 dB, r = 0.01 -> 44.8 dB. Spectrally it
    is white noise; only its amplitude distribution differs, which is why it is a ``color`` here
    and not a class of its own (a uniform draw coloured pink would be Gaussian again).
    """

    domain = "wave"

    def __init__(self, min_snr_db: float = 10.0, max_snr_db: float = 30.0,
                 color: Literal["white", "pink", "uniform"] = "white", only_valid: bool = True, p: float = 1.0):
        super().__init__(p)
        check_range("AddNoise SNR", min_snr_db, max_snr_db)
        if color not in ("white", "pink", "uniform"):
            raise ValueError(f"color must be 'white', 'pink' or 'uniform', got {color!r}")
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)
        self.color, self.only_valid = color, bool(only_valid)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        b, n = x.shape[0], x.shape[-1]
        inside = in_span(x, valid).float()
        count = inside.sum(-1).clamp(min=1.0)
        x32 = x.float()  # statistics in float32: half precision squares overflow/underflow
        signal_power = (x32.square() * inside).sum(-1) / count
        if self.color == "uniform":
            noise = 2.0 * torch.rand(b, n, device=x.device) - 1.0
        else:
            noise = torch.randn(b, n, device=x.device)
        if self.color == "pink":
            spectrum = torch.fft.rfft(noise, dim=-1)
            k = torch.arange(spectrum.shape[-1], device=x.device, dtype=torch.float32)
            spectrum = spectrum * torch.where(k > 0, k.clamp(min=1.0).rsqrt(), torch.zeros_like(k))  # 1/f power, no DC
            noise = torch.fft.irfft(spectrum, n=n, dim=-1)
        region = inside if self.only_valid else torch.ones_like(inside)
        noise = noise * region
        noise_power = noise.square().sum(-1) / region.sum(-1).clamp(min=1.0)
        snr_db = uniform(b, self.min_snr_db, self.max_snr_db, x.device)
        # not torchaudio's add_noise: it takes both energies over one prefix, not signal over the valid span
        scale = torch.sqrt(signal_power / (noise_power.clamp(min=1e-20) * torch.pow(10.0, snr_db / 10.0)))
        scale = torch.where(self._select(x), scale, torch.zeros_like(scale))  # unselected: no noise
        return (x32 + noise * scale[:, None]).to(x.dtype), valid
