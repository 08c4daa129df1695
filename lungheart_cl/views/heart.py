"""Listen2YourHeart's waveform views (Ballas et al. 2022), used by the heart schemes: reversal, inversion, pass filter.

``x`` is ``(B, L)`` audio before the front end; spans are in samples.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lungheart_cl.views.base import View, check_range, expand, full_valid, in_span, uniform


class TimeReversal(View):
    """Play each cycle backwards inside its own valid range; the padding stays where it was.

    Sample ``t`` of ``[start, end)`` takes sample ``start + end - 1 - t``, so ``valid`` is unchanged
    and reversing twice gives the input back. A reversed heart sound keeps its spectrum, its
    cycle length and the durations of systole and diastole (a systolic murmur stays between S1 and
    S2) while the order of events flips: Listen2YourHeart (Ballas et al. 2022) uses it as a
    contrastive view, and flipping heart-sound spectrograms in time was the best single
    augmentation of Zhou, Chen and Chien (BMC Med Inform Decis Mak 2022). Padding outside
    ``valid`` (zeros, or the repeat/context padding of ICBHI cycles) is not reversed.
    """

    domain = "wave"

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        n = x.shape[-1]
        rng = full_valid(x) if valid is None else valid.long().clamp(0, n)
        t = torch.arange(n, device=x.device)[None, :]
        mirrored = (rng[:, :1] + rng[:, 1:] - 1 - t).clamp(0, n - 1)
        src = torch.where(in_span(x, valid) & self._select(x)[:, None], mirrored, t)  # padding reads itself
        return x.gather(-1, src), valid


class PolarityInversion(View):
    """Negate each waveform (the whole window, like a gain of -1).

    A stethoscope's sign convention is arbitrary, so a waveform encoder should not depend on it
    (Listen2YourHeart's "inversion"). The log-mel front end of this package computes power
    spectra, which are identical for ``x`` and ``-x``: behind it this view changes nothing the
    encoder sees, and the heart schemes leave it out. It is here for waveform encoders and
    for pipelines whose later views are not sign-symmetric.
    """

    domain = "wave"

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        return torch.where(expand(self._select(x), x), -x, x), valid


class RandomPassFilter(View):
    """A random low- or high-pass filter per sample, batched as one FFT-domain mask.

    Each selected sample is low-passed with probability ``low_pass_probability`` and high-passed
    otherwise, at a cut-off drawn uniformly from ``[min_cutoff_hz, max_cutoff_hz]``
    (Listen2YourHeart, Ballas et al. 2022, cut heart sounds at about 200-250 Hz, so a view keeps
    either the S1/S2 band or the murmur band). The response has the magnitude of an order-``order``
    Butterworth filter, ``1 / sqrt(1 + (f / fc)^(2 order))`` (low-pass; ``f <-> fc`` for high-pass):
    -3 dB at the cut-off, ``10 log10(1 + 4^order)`` dB one octave into the stop band (24 dB for
    order 4), and zero phase, so S1 and S2 do not move in time.

    The valid range is filtered as a clip of its own (zero outside it, FFT of twice the window
    length so its ends do not wrap into each other), the padding is returned unchanged, and
    ``valid`` is unchanged. Arithmetic is float32; the output has the input's dtype.
    ``sample_rate`` must be the audio's rate; `ViewPipeline.render` checks it against the front end.
    With ``channel_norm`` in the front end a fixed filter is largely subtracted away (it is a
    per-band constant in the log domain), leaving mainly the changed noise floor in the stop band.
    """

    domain = "wave"

    def __init__(self, sample_rate: int, min_cutoff_hz: float = 200.0, max_cutoff_hz: float = 250.0,
                 low_pass_probability: float = 0.5, order: int = 4, p: float = 1.0):
        super().__init__(p)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        check_range("RandomPassFilter cut-off Hz", min_cutoff_hz, max_cutoff_hz, 1e-3, sample_rate / 2)
        if not 0.0 <= low_pass_probability <= 1.0:
            raise ValueError(f"low_pass_probability must lie in [0, 1], got {low_pass_probability}")
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.sample_rate, self.order = int(sample_rate), int(order)
        self.min_cutoff_hz, self.max_cutoff_hz = float(min_cutoff_hz), float(max_cutoff_hz)
        self.low_pass_probability = float(low_pass_probability)

    def response(self, cutoff_hz: Tensor, low_pass: Tensor, n_fft: int) -> Tensor:
        """(B, n_fft // 2 + 1) float32 magnitude response per sample at the rfft bins of ``n_fft``."""
        freqs = torch.fft.rfftfreq(n_fft, d=1.0 / self.sample_rate, device=cutoff_hz.device)
        ratio_2n = (freqs[None, :] / cutoff_hz[:, None]).pow(2 * self.order)
        low = torch.rsqrt(1.0 + ratio_2n)
        high = torch.rsqrt(1.0 + ratio_2n.reciprocal())  # 0 at DC (1 / 0 = inf), no inf / inf at high orders
        return torch.where(low_pass[:, None], low, high)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        b, n = x.shape[0], x.shape[-1]
        cutoff = uniform(b, self.min_cutoff_hz, self.max_cutoff_hz, x.device)
        low_pass = torch.rand(b, device=x.device) < self.low_pass_probability
        inside = in_span(x, valid)
        with torch.autocast(device_type=x.device.type, enabled=False):  # FFTs in float32 at any AMP setting
            x32 = x.float()
            spectrum = torch.fft.rfft(x32 * inside, n=2 * n, dim=-1)
            filtered = torch.fft.irfft(spectrum * self.response(cutoff, low_pass, 2 * n), n=2 * n, dim=-1)[:, :n]
        changed = inside & self._select(x)[:, None]
        return torch.where(changed, filtered, x32).to(x.dtype), valid
