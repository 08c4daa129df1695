"""SpecAugment-style masks on the log-mel spectrogram: blank mel rows, runs of frames, or all but one band.

``x`` is ``(B, ..., n_mels, T)``; spans are in frames. Masks never change ``valid``; time masks are
placed inside it, so they never land on padding.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from lungheart_cl.views.base import View, Width, check_range, check_width, full_valid, uniform_int


def _max_width_bins(max_width: Width, size: Tensor) -> Tensor:
    """Per-sample largest mask width in bins: a fraction of ``size`` if float <= 1, else bins; within [0, size]."""
    if isinstance(max_width, float) and max_width <= 1.0:
        bins = torch.round(size.float() * max_width).long().clamp(min=1)  # at least one bin, so p=1 always masks
    else:
        bins = torch.full_like(size, int(round(max_width)))
    return torch.minimum(bins, size.clamp(min=0))


def _random_bands(lo: Tensor, hi: Tensor, max_width: Tensor, size: int, num: int) -> Tensor:
    """(B, size) bool: the union of ``num`` bands per sample, each 1..max_width wide, inside [lo, hi)."""
    span = (hi - lo).clamp(min=0)
    max_width = torch.minimum(max_width, span)
    idx = torch.arange(size, device=lo.device)
    mask = torch.zeros(lo.shape[0], size, dtype=torch.bool, device=lo.device)
    for _ in range(num):  # small fixed count of masks, not a loop over samples
        width = torch.where(max_width > 0, 1 + uniform_int(max_width), torch.zeros_like(max_width))
        start = lo + uniform_int(span - width + 1)
        mask |= (idx >= start[:, None]) & (idx < (start + width)[:, None])
    return mask


def _freq_bands(x: Tensor, max_width: Width, num: int) -> Tensor:
    """(B, n_mels) bool: ``num`` random bands of mel rows per sample (see `FrequencyMask`)."""
    b, f = x.shape[0], x.shape[-2]
    size = torch.full((b,), f, dtype=torch.long, device=x.device)
    return _random_bands(torch.zeros_like(size), size, _max_width_bins(max_width, size), f, num)


def _time_bands(x: Tensor, valid: Optional[Tensor], max_width: Width, num: int) -> Tensor:
    """(B, T) bool: ``num`` random runs of frames per sample inside its valid frames (see `TimeMask`)."""
    t = x.shape[-1]
    valid = full_valid(x) if valid is None else valid.long().clamp(0, t)
    lo, hi = valid[:, 0], valid[:, 1]
    return _random_bands(lo, hi, _max_width_bins(max_width, (hi - lo).clamp(min=0)), t, num)


class _Bands(View):
    """``num_masks`` bands of 1..``max_width`` each, set to ``mask_value``: what both SpecAugment masks take."""

    domain = "spec"

    def __init__(self, max_width: Width = 0.2, num_masks: int = 1, mask_value: float = 0.0, p: float = 1.0):
        super().__init__(p)
        check_width(max_width)
        if num_masks < 1:
            raise ValueError(f"num_masks must be >= 1, got {num_masks}")
        self.max_width, self.num_masks, self.mask_value = max_width, int(num_masks), float(mask_value)


class FrequencyMask(_Bands):
    """SpecAugment frequency masking: blank ``num_masks`` random bands of mel rows per sample.

    Hides a band of frequencies so the encoder cannot rely on any single band (e.g. only the
    wheeze range). Each band is 1..``max_width`` rows wide (``max_width`` a fraction of n_mels if a
    float <= 1, else rows) and is set to ``mask_value`` (0 = the per-mel mean after normalisation).
    """

    def mask(self, x: Tensor) -> Tensor:
        """(B, n_mels) bool of the rows to blank (before the ``p`` selection)."""
        return _freq_bands(x, self.max_width, self.num_masks)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        rows = self.mask(x) & self._select(x)[:, None]
        rows = rows.reshape((x.shape[0],) + (1,) * (x.dim() - 3) + (x.shape[-2], 1))
        return x.masked_fill(rows, self.mask_value), valid


class TimeMask(_Bands):
    """SpecAugment time masking: blank ``num_masks`` random runs of frames inside each sample's valid frames.

    Hides short stretches of the cycle (a crackle, part of a wheeze) so the views must agree from
    the rest. Masks are placed inside ``valid`` so they never land on padding (as in the study).
    ``max_width`` is a fraction of each sample's *valid* length if a float <= 1 (so short cycles
    are not wiped out), else frames (clipped to the valid length).
    """

    def mask(self, x: Tensor, valid: Optional[Tensor]) -> Tensor:
        """(B, T) bool of the frames to blank (before the ``p`` selection)."""
        return _time_bands(x, valid, self.max_width, self.num_masks)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        frames = self.mask(x, valid) & self._select(x)[:, None]
        frames = frames.reshape((x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],))
        return x.masked_fill(frames, self.mask_value), valid


class SpectrogramMask(View):
    """The study's "spectrogram masking": frequency bands and time runs blanked together.

    One ``p`` draw per sample decides whether both kinds of mask are applied; widths follow
    `FrequencyMask` and `TimeMask` (time masks stay inside the valid frames).
    """

    domain = "spec"

    def __init__(self, freq_max_width: Width = 0.2, time_max_width: Width = 0.2, num_freq_masks: int = 2,
                 num_time_masks: int = 2, mask_value: float = 0.0, p: float = 1.0):
        super().__init__(p)
        self.freq_max_width, self.time_max_width = freq_max_width, time_max_width
        self.num_freq_masks, self.num_time_masks = int(num_freq_masks), int(num_time_masks)
        check_width(freq_max_width)
        check_width(time_max_width)
        if min(num_freq_masks, num_time_masks) < 1:
            raise ValueError("SpectrogramMask needs at least one mask of each kind")
        self.mask_value = float(mask_value)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        b, f, t = x.shape[0], x.shape[-2], x.shape[-1]
        lead = (b,) + (1,) * (x.dim() - 3)
        rows = _freq_bands(x, self.freq_max_width, self.num_freq_masks).reshape(lead + (f, 1))
        frames = _time_bands(x, valid, self.time_max_width, self.num_time_masks).reshape(lead + (1, t))
        sel = self._select(x).reshape(lead + (1, 1))
        return x.masked_fill((rows | frames) & sel, self.mask_value), valid


class FrequencyBandCrop(View):
    """The study's "split": keep one random contiguous block of mel rows, blank the rest.

    Each view then sees a different (overlapping) part of the spectrum, so the encoder must
    link low- and high-frequency evidence of the same sound. The block holds between
    ``min_fraction`` and ``max_fraction`` of the rows; the other rows are set to ``mask_value``
    (the study cropped the array to half its rows; filling keeps the input shape fixed).
    """

    domain = "spec"

    def __init__(self, min_fraction: float = 0.5, max_fraction: float = 0.9, mask_value: float = 0.0,
                 p: float = 1.0):
        super().__init__(p)
        check_range("FrequencyBandCrop fraction", min_fraction, max_fraction, 0.0, 1.0)
        if max_fraction <= 0:
            raise ValueError("FrequencyBandCrop: max_fraction must be positive")
        self.min_fraction, self.max_fraction, self.mask_value = float(min_fraction), float(max_fraction), float(mask_value)

    def band(self, x: Tensor) -> Tensor:
        """(B, n_mels) bool of the rows each sample keeps (before the ``p`` selection)."""
        b, f = x.shape[0], x.shape[-2]
        lo_k = max(1, math.ceil(self.min_fraction * f - 1e-6))  # row counts honouring the fraction bounds
        hi_k = max(lo_k, min(f, math.floor(self.max_fraction * f + 1e-6)))
        base = torch.full((b,), hi_k - lo_k + 1, dtype=torch.long, device=x.device)
        keep = lo_k + uniform_int(base)
        start = uniform_int(f - keep + 1)
        idx = torch.arange(f, device=x.device)
        return (idx >= start[:, None]) & (idx < (start + keep)[:, None])

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        drop = ~self.band(x) & self._select(x)[:, None]
        drop = drop.reshape((x.shape[0],) + (1,) * (x.dim() - 3) + (x.shape[-2], 1))
        return x.masked_fill(drop, self.mask_value), valid
