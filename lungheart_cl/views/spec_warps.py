"""Cheap tempo and pitch changes on the log-mel spectrogram, by resampling its time or mel axis.

``x`` is ``(B, ..., n_mels, T)``; spans are in frames.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lungheart_cl.views.base import View, Width, check_range, check_width, expand, follow_span, full_valid, uniform
from lungheart_cl.views.resample import resample_axis, stretch_about_centre


class SpecTimeStretch(View):
    """Cheap tempo change on the spectrogram: resample the time axis by a per-sample rate.

    Breathing and heart rates vary between patients; stretching the valid frames about their
    centre (rate > 1 = faster = shorter) teaches tempo invariance without an STFT phase vocoder.
    The frame count is kept; frames read from beyond the axis get ``mask_value``, and ``valid``
    becomes the frames whose source lay in the old valid range.

    Not for heart sounds: pitch shifting and time stretching/compressing lowered a spectrogram CNN's
    normal/abnormal PR AUC below no augmentation (Zhou, Chen and Chien, BMC Med Inform Decis Mak 2022,
    doi:10.1186/s12911-022-01942-2); the heart schemes (``experiments/schemes/heart_*.yaml``) leave it out.
    """

    domain = "spec"

    def __init__(self, min_rate: float = 0.8, max_rate: float = 1.25, mask_value: float = 0.0, p: float = 1.0):
        super().__init__(p)
        check_range("SpecTimeStretch rate", min_rate, max_rate, 1e-3)
        self.min_rate, self.max_rate, self.mask_value = float(min_rate), float(max_rate), float(mask_value)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        given = valid
        valid = full_valid(x) if valid is None else valid
        rate = uniform(x.shape[0], self.min_rate, self.max_rate, x.device)
        out, new_valid = stretch_about_centre(x, valid, rate, -1, self.mask_value)
        sel = self._select(x)
        out = torch.where(expand(sel, x), out, x)
        return out, follow_span(given, valid, new_valid, sel)


class SpecPitchShift(View):
    """Cheap pitch change on the spectrogram: shift (and optionally stretch) the mel axis.

    Stethoscopes, chest sizes and murmurs move energy up or down in frequency; shifting the mel
    rows by up to ``max_shift`` (rows, or a fraction of n_mels if a float <= 1; fractional shifts
    interpolate) and scaling them by a factor in ``[1 - max_stretch, 1 + max_stretch]`` (about row 0)
    imitates that. Rows read from beyond the axis get ``mask_value``. Time is untouched.

    Not for heart sounds: pitch shifting and time stretching/compressing lowered a spectrogram CNN's
    normal/abnormal PR AUC below no augmentation (Zhou, Chen and Chien, BMC Med Inform Decis Mak 2022,
    doi:10.1186/s12911-022-01942-2); the heart schemes (``experiments/schemes/heart_*.yaml``) leave it out.
    """

    domain = "spec"

    def __init__(self, max_shift: Width = 0.1, max_stretch: float = 0.0, mask_value: float = 0.0, p: float = 1.0):
        super().__init__(p)
        check_width(max_shift)
        if not 0.0 <= max_stretch < 1.0:
            raise ValueError(f"max_stretch must lie in [0, 1), got {max_stretch}")
        self.max_shift, self.max_stretch, self.mask_value = max_shift, float(max_stretch), float(mask_value)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        b, f = x.shape[0], x.shape[-2]
        limit = self.max_shift * f if isinstance(self.max_shift, float) and self.max_shift <= 1.0 else float(self.max_shift)
        shift = uniform(b, -limit, limit, x.device)
        scale = uniform(b, 1.0 - self.max_stretch, 1.0 + self.max_stretch, x.device)
        rows = torch.arange(f, device=x.device, dtype=torch.float32)
        pos = rows[None, :] / scale[:, None] - shift[:, None]  # output row r reads input row r/scale - shift
        out = resample_axis(x, pos, -2, self.mask_value)
        return torch.where(expand(self._select(x), x), out, x), valid
