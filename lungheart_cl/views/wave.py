"""Waveform views of level, position and tempo: gain, shift, crop, speed change and mixing in another sample.

``x`` is ``(B, L)`` audio before the front end; spans are in samples.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lungheart_cl.views.base import View, check_range, expand, follow_span, full_valid, uniform, uniform_int
from lungheart_cl.views.resample import stretch_about_centre


class Gain(View):
    """Scale each waveform by a random gain in ``[min_db, max_db]`` dB.

    Recording level depends on stethoscope pressure and device, not on the diagnosis; random
    gain stops the encoder from using loudness as a shortcut. A linear gain range ``[a, b]`` is
    ``[20 log10 a, 20 log10 b]`` dB: Listen2YourHeart's (Ballas et al. 2022) 0.5..2 is
    ``min_db=-6.02, max_db=6.02``. The draw is uniform in dB, i.e. log-uniform in the factor
    (halving as likely as doubling), where a uniform draw of the factor favours amplification.
    With ``channel_norm`` in the front end a gain is a per-band constant in the log domain and is
    subtracted away (it survives only in bands quiet enough for the log-mel's floor to matter).
    """

    domain = "wave"

    def __init__(self, min_db: float = -6.0, max_db: float = 6.0, p: float = 1.0):
        super().__init__(p)
        check_range("Gain dB", min_db, max_db)
        self.min_db, self.max_db = float(min_db), float(max_db)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        db = uniform(x.shape[0], self.min_db, self.max_db, x.device)
        gain = torch.where(self._select(x), torch.pow(10.0, db / 20.0), torch.ones_like(db))
        return x * expand(gain, x).to(x.dtype), valid


class TimeShift(View):
    """Move each cycle in time by up to ``max_fraction`` of its valid length.

    Where a sound sits in the window is arbitrary; shifting removes that cue.
    ``rollover=False`` (default, the study's ``Shift(rollover=False)``): the whole window moves
    and the vacated samples become zeros; audio pushed off the window is lost and ``valid`` follows
    the cycle (clipped to the window). ``rollover=True``: the cycle is rotated circularly *inside
    its own valid range* (no audio lost, padding untouched, ``valid`` unchanged).
    """

    domain = "wave"

    def __init__(self, max_fraction: float = 0.2, rollover: bool = False, p: float = 1.0):
        super().__init__(p)
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must lie in [0, 1], got {max_fraction}")
        self.max_fraction, self.rollover = float(max_fraction), bool(rollover)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        given = valid
        b, n = x.shape[0], x.shape[-1]
        valid = full_valid(x) if valid is None else valid
        lo, hi = valid[:, 0].long().clamp(0, n), valid[:, 1].long().clamp(0, n)
        length = (hi - lo).clamp(min=0)
        limit = torch.floor(length.float() * self.max_fraction).long()
        if self.rollover:
            limit = torch.minimum(limit, (length - 1).clamp(min=0))  # a full turn would be no shift
        # a non-zero shift of 1..limit samples either way, so a selected sample always moves
        sign = torch.where(torch.rand(b, device=x.device) < 0.5, -1, 1)
        shift = torch.where(limit > 0, sign * (1 + uniform_int(limit)), torch.zeros_like(limit))
        sel = self._select(x)
        shift = torch.where(sel, shift, torch.zeros_like(shift))
        t = torch.arange(n, device=x.device)[None, :]
        if self.rollover:
            inside = (t >= lo[:, None]) & (t < hi[:, None])
            src = lo[:, None] + torch.remainder(t - lo[:, None] - shift[:, None], length.clamp(min=1)[:, None])
            src = torch.where(inside, src, t)  # padding reads itself
            return x.gather(-1, src.clamp(0, n - 1)), given
        src = t - shift[:, None]
        inb = (src >= 0) & (src < n)
        out = x.gather(-1, src.clamp(0, n - 1)).masked_fill(~inb, 0.0)  # vacated samples are silence
        new_valid = torch.stack([(lo + shift).clamp(0, n), (hi + shift).clamp(0, n)], 1).to(valid.dtype)
        return out, follow_span(given, valid, new_valid, sel)


class RandomTimeCrop(View):
    """Keep a random sub-window of each sample's valid range and zero the rest.

    Two crops of one cycle overlap only partly, so the encoder must match a phase of breathing
    (or a few beats) to another; this is SimCLR's random crop for audio. The kept window holds
    ``min_fraction``..``max_fraction`` of the valid samples (at least one), stays where it was in
    the window (combine with `TimeShift` to move it) and becomes the new ``valid``.
    """

    domain = "wave"

    def __init__(self, min_fraction: float = 0.5, max_fraction: float = 1.0, p: float = 1.0):
        super().__init__(p)
        check_range("RandomTimeCrop fraction", min_fraction, max_fraction, 0.0, 1.0)
        self.min_fraction, self.max_fraction = float(min_fraction), float(max_fraction)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        b, n = x.shape[0], x.shape[-1]
        valid_in = full_valid(x) if valid is None else valid
        lo, hi = valid_in[:, 0].long().clamp(0, n), valid_in[:, 1].long().clamp(0, n)
        length = (hi - lo).clamp(min=0)
        frac = uniform(b, self.min_fraction, self.max_fraction, x.device)
        keep = torch.round(length.float() * frac).long().clamp(min=1)
        keep = torch.minimum(keep, length)
        start = lo + uniform_int(length - keep + 1)
        t = torch.arange(n, device=x.device)[None, :]
        kept = (t >= start[:, None]) & (t < (start + keep)[:, None])
        sel = self._select(x)
        out = x.masked_fill(~kept & sel[:, None], 0.0)
        new_valid = torch.stack([start, start + keep], 1).to(valid_in.dtype)
        return out, torch.where(sel[:, None], new_valid, valid_in)


class SpeedPerturb(View):
    """Resample each waveform by a per-sample rate (tempo and pitch change together).

    The classic speech "speed perturbation": rate > 1 plays faster (shorter, higher), rate < 1
    slower. It imitates differing breathing/heart rates and body sizes at the cost of one linear
    interpolation. The cycle is stretched about its valid centre, the window length is kept,
    samples read from beyond the window are zeros, and ``valid`` follows the stretched cycle.

    Not for heart sounds: pitch shifting and time stretching/compressing (this view does both at once)
    lowered a spectrogram CNN's normal/abnormal PR AUC below no augmentation (Zhou, Chen and Chien, BMC
    Med Inform Decis Mak 2022, doi:10.1186/s12911-022-01942-2); the heart schemes
    (``experiments/schemes/heart_*.yaml``) leave it out.
    """

    domain = "wave"

    def __init__(self, min_rate: float = 0.9, max_rate: float = 1.1, p: float = 1.0):
        super().__init__(p)
        check_range("SpeedPerturb rate", min_rate, max_rate, 1e-3)
        self.min_rate, self.max_rate = float(min_rate), float(max_rate)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        given = valid
        valid = full_valid(x) if valid is None else valid
        rate = uniform(x.shape[0], self.min_rate, self.max_rate, x.device)
        out, new_valid = stretch_about_centre(x, valid, rate, -1, 0.0)
        sel = self._select(x)
        out = torch.where(sel[:, None], out, x)
        return out, follow_span(given, valid, new_valid, sel)


class Mixup(View):
    """Mix each waveform with another random sample of the batch at a small weight.

    ``x' = (1 - lam) * x + lam * x_other`` with ``lam ~ U(0, max_weight)`` and ``max_weight < 0.5``,
    so the original always dominates; the partner acts as realistic structured background (another
    patient's breath or heart sound). ``valid`` becomes the span covering both samples' valid ranges.
    A batch of one mixes with itself (no change).
    """

    domain = "wave"

    def __init__(self, max_weight: float = 0.3, p: float = 1.0):
        super().__init__(p)
        if not 0.0 <= max_weight < 0.5:
            raise ValueError(f"max_weight must lie in [0, 0.5) so the original dominates, got {max_weight}")
        self.max_weight = float(max_weight)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        b = x.shape[0]
        offset = 1 + uniform_int(torch.full((b,), max(b - 1, 1), dtype=torch.long, device=x.device))
        partner = (torch.arange(b, device=x.device) + offset) % b  # never the sample itself when b > 1
        lam = uniform(b, 0.0, self.max_weight, x.device)
        sel = self._select(x)
        lam = torch.where(sel, lam, torch.zeros_like(lam))
        lam_x = expand(lam, x).to(x.dtype)
        out = x + (x[partner] - x) * lam_x  # = (1 - lam) x + lam x_other; exact x where lam = 0
        if valid is None:
            return out, None
        hull = torch.stack([torch.minimum(valid[:, 0], valid[partner, 0]),
                            torch.maximum(valid[:, 1], valid[partner, 1])], 1)
        return out, torch.where(sel[:, None] & (lam[:, None] > 0), hull, valid)
