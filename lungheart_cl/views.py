"""Batched, on-device view generators for contrastive pretraining on lung and heart sounds.

The original study (Soni et al. 2022, "Contrastive learning of heart and lung sounds for
label-efficient diagnosis") built its two SimCLR views per sample on the CPU in DataLoader
workers. Here every view runs on the whole batch on the accelerator, with per-sample randomness
and no Python loop over the batch.

Every view is a small ``nn.Module`` with

* ``domain`` -- ``"wave"`` (input ``(B, L)`` waveforms, ``valid`` in samples) or ``"spec"``
  (input ``(B, ..., n_mels, T)`` normalised log-mel spectrograms, ``valid`` in frames);
* ``forward(x, valid) -> (x_aug, valid_aug)`` where ``valid`` is a ``(B, 2)`` integer tensor
  ``[start, end)`` of the real audio (the rest is padding around a respiratory/cardiac cycle).
  Views that move or crop audio return the updated range; ``valid=None`` means "all of it";
* ``p`` -- each sample is augmented with probability ``p``; the others pass unchanged.

Randomness comes from torch's default RNG on ``x``'s device (``torch.manual_seed`` /
``lightning.seed_everything`` make it repeatable), arithmetic stays in ``x.dtype`` (float16 and
bfloat16 included) except small per-sample statistics, and nothing calls ``.item()`` or
``.nonzero()``, so a view never forces a host-device sync.

``ViewPipeline`` chains a list of wave views (before the front end) and a list of spectrogram
views (after it); the preset functions at the bottom rebuild the study's schemes.

Constructors take plain ints/floats/bools/strings so pipelines compose from YAML::

    views:
      class_path: lungheart_cl.views.ViewPipeline
      init_args:
        wave:
          - class_path: lungheart_cl.views.Gain
            init_args: {min_db: -6.0, max_db: 6.0, p: 0.5}
        spec:
          - class_path: lungheart_cl.views.SpectrogramMask
            init_args: {freq_max_width: 0.2, time_max_width: 0.2}
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, ClassVar, Literal, Optional, Union

import torch
from torch import Tensor, nn

from lungheart_cl.frontend import frames_from_samples  # noqa: F401  (re-exported: views work in frames)

__all__ = [
    "View", "FrequencyMask", "TimeMask", "SpectrogramMask", "FrequencyBandCrop", "SpecTimeStretch",
    "SpecPitchShift", "Gain", "TimeShift", "AddNoise", "RandomTimeCrop", "SpeedPerturb", "Mixup", "TimeReversal",
    "PolarityInversion", "RandomPassFilter",
    "ViewPipeline", "frames_from_samples", "spectrogram_mask", "time_mask", "frequency_mask", "split",
    "spectrogram_mask_split", "raw_audio", "PRESETS",
]

Width = Union[int, float]  # int first, so jsonargparse reads "10" as 10 bins and "0.2" as a fraction


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _full_valid(x: Tensor, dim: int = -1) -> Tensor:
    """The whole axis as the valid range, for callers that pass ``valid=None``."""
    b, n = x.shape[0], x.shape[dim]
    full = torch.zeros(b, 2, dtype=torch.long, device=x.device)  # built on the device: no host copy
    full[:, 1] = n
    return full


def _uniform(b: int, low: float, high: float, device: torch.device) -> Tensor:
    """(B,) float32 draws from U(low, high)."""
    return low + (high - low) * torch.rand(b, device=device)


def _uniform_int(count: Tensor) -> Tensor:
    """Per-sample integer uniform in ``[0, count)`` (0 where ``count <= 0``), without ``randint``'s scalar bound."""
    draw = (torch.rand(count.shape, device=count.device) * count.clamp(min=0).float()).long()
    return torch.minimum(draw, (count - 1).clamp(min=0))  # guards against float rounding up to count


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    return float(p)


def _check_range(name: str, low: float, high: float, lo_bound: float | None = None,
                 hi_bound: float | None = None) -> None:
    if low > high:
        raise ValueError(f"{name}: min {low} exceeds max {high}")
    if lo_bound is not None and low < lo_bound:
        raise ValueError(f"{name}: min {low} is below {lo_bound}")
    if hi_bound is not None and high > hi_bound:
        raise ValueError(f"{name}: max {high} is above {hi_bound}")


def _check_width(max_width: Width) -> None:
    if isinstance(max_width, bool) or not isinstance(max_width, (int, float)) or max_width <= 0:
        raise ValueError(f"max_width must be a positive int (bins) or a float fraction, got {max_width!r}")


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
        width = torch.where(max_width > 0, 1 + _uniform_int(max_width), torch.zeros_like(max_width))
        start = lo + _uniform_int(span - width + 1)
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
    valid = _full_valid(x) if valid is None else valid.long().clamp(0, t)
    lo, hi = valid[:, 0], valid[:, 1]
    return _random_bands(lo, hi, _max_width_bins(max_width, (hi - lo).clamp(min=0)), t, num)


def _resample_axis(x: Tensor, pos: Tensor, dim: int, fill: float) -> Tensor:
    """Linear interpolation of ``x`` along ``dim`` at per-sample source positions ``pos`` (B, M).

    Positions outside ``[0, N-1]`` read ``fill``. Gathers in ``x.dtype`` (AMP friendly; no
    ``grid_sample``, which lacks half-precision kernels on some backends).
    """
    xt = x.movedim(dim, -1)
    n = xt.shape[-1]
    view_shape = (x.shape[0],) + (1,) * (xt.dim() - 2) + (pos.shape[-1],)
    p = pos.reshape(view_shape).expand(*xt.shape[:-1], pos.shape[-1])
    p0 = p.floor()
    i0 = p0.long().clamp(0, n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    frac = (p - p0).to(x.dtype)
    v0, v1 = xt.gather(-1, i0), xt.gather(-1, i1)
    out = v0 + (v1 - v0) * frac
    out = out.masked_fill((p < 0) | (p > n - 1), fill)  # nothing to read beyond the axis
    return out.movedim(-1, dim)


def _stretch_about_centre(x: Tensor, valid: Tensor, rate: Tensor, dim: int, fill: float) -> tuple[Tensor, Tensor]:
    """Resample ``x`` along ``dim`` by per-sample ``rate`` (> 1 shorter/faster) about the centre of ``valid``.

    Keeps the axis length; returns the resampled tensor and the new valid range, i.e. the output
    positions whose source lies inside the old valid range.
    """
    n = x.shape[dim]
    start, end = valid[:, 0].float(), valid[:, 1].float()
    centre = (start + end - 1) / 2  # the cycle stays centred, as the cache centres it in the window
    t = torch.arange(n, device=x.device, dtype=torch.float32)
    pos = centre[:, None] + (t[None, :] - centre[:, None]) * rate[:, None]
    out = _resample_axis(x, pos, dim, fill)
    eps = 1e-4  # float slack so rate 1 maps the range onto itself exactly
    new_start = torch.ceil(centre + (start - centre) / rate - eps).long().clamp(0, n)
    new_end = (torch.floor(centre + (end - 1 - centre) / rate + eps).long() + 1).clamp(0, n)
    new_end = torch.maximum(new_end, new_start)
    empty = end <= start  # nothing real to follow: keep an empty range where it was
    new_valid = torch.stack([new_start, new_end], 1)
    new_valid = torch.where(empty[:, None], valid.long(), new_valid)
    return out, new_valid.to(valid.dtype)


def _inside(x: Tensor, valid: Optional[Tensor]) -> Tensor:
    """(B, L) bool: the samples of each row that lie in its valid range (all of them for ``valid=None``)."""
    n = x.shape[-1]
    rng = _full_valid(x) if valid is None else valid.long().clamp(0, n)
    t = torch.arange(n, device=x.device)[None, :]
    return (t >= rng[:, :1]) & (t < rng[:, 1:])


def _expand(mask: Tensor, x: Tensor) -> Tensor:
    """Reshape a (B,) selection to broadcast against ``x``."""
    return mask.reshape((x.shape[0],) + (1,) * (x.dim() - 1))


# ----------------------------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------------------------

class View(nn.Module):
    """Base class of a batched augmentation applied to each sample with probability ``p``.

    Subclasses set ``domain`` and implement ``forward(x, valid) -> (x_aug, valid_aug)``. The
    base class only holds ``p``, draws the per-sample selection and prints the constructor
    arguments (so two pipelines built from the same config print the same).
    """

    domain: ClassVar[str] = "spec"

    def __init__(self, p: float = 1.0):
        super().__init__()
        self.p = _check_p(p)

    def _select(self, x: Tensor) -> Tensor:
        """(B,) bool: which samples this call augments (torch.rand < p; p=1 selects all)."""
        return torch.rand(x.shape[0], device=x.device) < self.p

    def _skip(self, x: Tensor) -> bool:
        """True when nothing can change: p == 0 or an empty batch (no RNG is drawn then)."""
        return self.p <= 0.0 or x.shape[0] == 0

    def extra_repr(self) -> str:
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names if hasattr(self, n))

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# spectrogram domain: x is (B, ..., n_mels, T); valid is in frames
# ----------------------------------------------------------------------------------------------

class FrequencyMask(View):
    """SpecAugment frequency masking: blank ``num_masks`` random bands of mel rows per sample.

    Hides a band of frequencies so the encoder cannot rely on any single band (e.g. only the
    wheeze range). Each band is 1..``max_width`` rows wide (``max_width`` a fraction of n_mels if a
    float <= 1, else rows) and is set to ``mask_value`` (0 = the per-mel mean after normalisation).
    """

    domain = "spec"

    def __init__(self, max_width: Width = 0.2, num_masks: int = 1, mask_value: float = 0.0, p: float = 1.0):
        super().__init__(p)
        _check_width(max_width)
        if num_masks < 1:
            raise ValueError(f"num_masks must be >= 1, got {num_masks}")
        self.max_width, self.num_masks, self.mask_value = max_width, int(num_masks), float(mask_value)

    def mask(self, x: Tensor) -> Tensor:
        """(B, n_mels) bool of the rows to blank (before the ``p`` selection)."""
        return _freq_bands(x, self.max_width, self.num_masks)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        rows = self.mask(x) & self._select(x)[:, None]
        rows = rows.reshape((x.shape[0],) + (1,) * (x.dim() - 3) + (x.shape[-2], 1))
        return x.masked_fill(rows, self.mask_value), valid


class TimeMask(View):
    """SpecAugment time masking: blank ``num_masks`` random runs of frames inside each sample's valid frames.

    Hides short stretches of the cycle (a crackle, part of a wheeze) so the views must agree from
    the rest. Masks are placed inside ``valid`` so they never land on padding (as in the study).
    ``max_width`` is a fraction of each sample's *valid* length if a float <= 1 (so short cycles
    are not wiped out), else frames (clipped to the valid length).
    """

    domain = "spec"

    def __init__(self, max_width: Width = 0.2, num_masks: int = 1, mask_value: float = 0.0, p: float = 1.0):
        super().__init__(p)
        _check_width(max_width)
        if num_masks < 1:
            raise ValueError(f"num_masks must be >= 1, got {num_masks}")
        self.max_width, self.num_masks, self.mask_value = max_width, int(num_masks), float(mask_value)

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
        _check_width(freq_max_width)
        _check_width(time_max_width)
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
        _check_range("FrequencyBandCrop fraction", min_fraction, max_fraction, 0.0, 1.0)
        if max_fraction <= 0:
            raise ValueError("FrequencyBandCrop: max_fraction must be positive")
        self.min_fraction, self.max_fraction, self.mask_value = float(min_fraction), float(max_fraction), float(mask_value)

    def band(self, x: Tensor) -> Tensor:
        """(B, n_mels) bool of the rows each sample keeps (before the ``p`` selection)."""
        b, f = x.shape[0], x.shape[-2]
        lo_k = max(1, math.ceil(self.min_fraction * f - 1e-6))  # row counts honouring the fraction bounds
        hi_k = max(lo_k, min(f, math.floor(self.max_fraction * f + 1e-6)))
        base = torch.full((b,), hi_k - lo_k + 1, dtype=torch.long, device=x.device)
        keep = lo_k + _uniform_int(base)
        start = _uniform_int(f - keep + 1)
        idx = torch.arange(f, device=x.device)
        return (idx >= start[:, None]) & (idx < (start + keep)[:, None])

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        drop = ~self.band(x) & self._select(x)[:, None]
        drop = drop.reshape((x.shape[0],) + (1,) * (x.dim() - 3) + (x.shape[-2], 1))
        return x.masked_fill(drop, self.mask_value), valid


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
        _check_range("SpecTimeStretch rate", min_rate, max_rate, 1e-3)
        self.min_rate, self.max_rate, self.mask_value = float(min_rate), float(max_rate), float(mask_value)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        given = valid
        valid = _full_valid(x) if valid is None else valid
        rate = _uniform(x.shape[0], self.min_rate, self.max_rate, x.device)
        out, new_valid = _stretch_about_centre(x, valid, rate, -1, self.mask_value)
        sel = self._select(x)
        out = torch.where(_expand(sel, x), out, x)
        return out, (None if given is None else torch.where(sel[:, None], new_valid, valid))


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
        _check_width(max_shift)
        if not 0.0 <= max_stretch < 1.0:
            raise ValueError(f"max_stretch must lie in [0, 1), got {max_stretch}")
        self.max_shift, self.max_stretch, self.mask_value = max_shift, float(max_stretch), float(mask_value)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        b, f = x.shape[0], x.shape[-2]
        limit = self.max_shift * f if isinstance(self.max_shift, float) and self.max_shift <= 1.0 else float(self.max_shift)
        shift = _uniform(b, -limit, limit, x.device)
        scale = _uniform(b, 1.0 - self.max_stretch, 1.0 + self.max_stretch, x.device)
        rows = torch.arange(f, device=x.device, dtype=torch.float32)
        pos = rows[None, :] / scale[:, None] - shift[:, None]  # output row r reads input row r/scale - shift
        out = _resample_axis(x, pos, -2, self.mask_value)
        return torch.where(_expand(self._select(x), x), out, x), valid


# ----------------------------------------------------------------------------------------------
# waveform domain: x is (B, L); valid is in samples
# ----------------------------------------------------------------------------------------------

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
        _check_range("Gain dB", min_db, max_db)
        self.min_db, self.max_db = float(min_db), float(max_db)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        db = _uniform(x.shape[0], self.min_db, self.max_db, x.device)
        gain = torch.where(self._select(x), torch.pow(10.0, db / 20.0), torch.ones_like(db))
        return x * _expand(gain, x).to(x.dtype), valid


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
        valid = _full_valid(x) if valid is None else valid
        lo, hi = valid[:, 0].long().clamp(0, n), valid[:, 1].long().clamp(0, n)
        length = (hi - lo).clamp(min=0)
        limit = torch.floor(length.float() * self.max_fraction).long()
        if self.rollover:
            limit = torch.minimum(limit, (length - 1).clamp(min=0))  # a full turn would be no shift
        # a non-zero shift of 1..limit samples either way, so a selected sample always moves
        sign = torch.where(torch.rand(b, device=x.device) < 0.5, -1, 1)
        shift = torch.where(limit > 0, sign * (1 + _uniform_int(limit)), torch.zeros_like(limit))
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
        return out, (None if given is None else torch.where(sel[:, None], new_valid, valid))


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
        _check_range("AddNoise SNR", min_snr_db, max_snr_db)
        if color not in ("white", "pink", "uniform"):
            raise ValueError(f"color must be 'white', 'pink' or 'uniform', got {color!r}")
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)
        self.color, self.only_valid = color, bool(only_valid)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        b, n = x.shape[0], x.shape[-1]
        inside = _inside(x, valid).float()
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
        snr_db = _uniform(b, self.min_snr_db, self.max_snr_db, x.device)
        scale = torch.sqrt(signal_power / (noise_power.clamp(min=1e-20) * torch.pow(10.0, snr_db / 10.0)))
        scale = torch.where(self._select(x), scale, torch.zeros_like(scale))  # unselected: no noise
        return (x32 + noise * scale[:, None]).to(x.dtype), valid


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
        _check_range("RandomTimeCrop fraction", min_fraction, max_fraction, 0.0, 1.0)
        self.min_fraction, self.max_fraction = float(min_fraction), float(max_fraction)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        b, n = x.shape[0], x.shape[-1]
        valid_in = _full_valid(x) if valid is None else valid
        lo, hi = valid_in[:, 0].long().clamp(0, n), valid_in[:, 1].long().clamp(0, n)
        length = (hi - lo).clamp(min=0)
        frac = _uniform(b, self.min_fraction, self.max_fraction, x.device)
        keep = torch.round(length.float() * frac).long().clamp(min=1)
        keep = torch.minimum(keep, length)
        start = lo + _uniform_int(length - keep + 1)
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
        _check_range("SpeedPerturb rate", min_rate, max_rate, 1e-3)
        self.min_rate, self.max_rate = float(min_rate), float(max_rate)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        if self._skip(x):
            return x, valid
        given = valid
        valid = _full_valid(x) if valid is None else valid
        rate = _uniform(x.shape[0], self.min_rate, self.max_rate, x.device)
        out, new_valid = _stretch_about_centre(x, valid, rate, -1, 0.0)
        sel = self._select(x)
        out = torch.where(sel[:, None], out, x)
        return out, (None if given is None else torch.where(sel[:, None], new_valid, valid))


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
        offset = 1 + _uniform_int(torch.full((b,), max(b - 1, 1), dtype=torch.long, device=x.device))
        partner = (torch.arange(b, device=x.device) + offset) % b  # never the sample itself when b > 1
        lam = _uniform(b, 0.0, self.max_weight, x.device)
        sel = self._select(x)
        lam = torch.where(sel, lam, torch.zeros_like(lam))
        lam_x = _expand(lam, x).to(x.dtype)
        out = x + (x[partner] - x) * lam_x  # = (1 - lam) x + lam x_other; exact x where lam = 0
        if valid is None:
            return out, None
        hull = torch.stack([torch.minimum(valid[:, 0], valid[partner, 0]),
                            torch.maximum(valid[:, 1], valid[partner, 1])], 1)
        return out, torch.where(sel[:, None] & (lam[:, None] > 0), hull, valid)


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
        rng = _full_valid(x) if valid is None else valid.long().clamp(0, n)
        t = torch.arange(n, device=x.device)[None, :]
        mirrored = (rng[:, :1] + rng[:, 1:] - 1 - t).clamp(0, n - 1)
        src = torch.where(_inside(x, valid) & self._select(x)[:, None], mirrored, t)  # padding reads itself
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
        return torch.where(_expand(self._select(x), x), -x, x), valid


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
        _check_range("RandomPassFilter cut-off Hz", min_cutoff_hz, max_cutoff_hz, 1e-3, sample_rate / 2)
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
        cutoff = _uniform(b, self.min_cutoff_hz, self.max_cutoff_hz, x.device)
        low_pass = torch.rand(b, device=x.device) < self.low_pass_probability
        inside = _inside(x, valid)
        with torch.autocast(device_type=x.device.type, enabled=False):  # FFTs in float32 at any AMP setting
            x32 = x.float()
            spectrum = torch.fft.rfft(x32 * inside, n=2 * n, dim=-1)
            filtered = torch.fft.irfft(spectrum * self.response(cutoff, low_pass, 2 * n), n=2 * n, dim=-1)[:, :n]
        changed = inside & self._select(x)[:, None]
        return torch.where(changed, filtered, x32).to(x.dtype), valid


# ----------------------------------------------------------------------------------------------
# pipeline and presets
# ----------------------------------------------------------------------------------------------

class ViewPipeline(nn.Module):
    """Ordered wave views (before the front end) and spectrogram views (after it).

    ``render(wave, valid, frontend)`` runs ``apply_wave(wave, valid)``, the front end, converts
    ``valid`` to frames, then ``apply_spec(spec, valid_frames)``; rendering the same batch twice
    gives the two SimCLR views. Empty lists mean no augmentation there.
    """

    def __init__(self, wave: Optional[list[View]] = None, spec: Optional[list[View]] = None):
        super().__init__()
        for name, views, domain in (("wave", wave, "wave"), ("spec", spec, "spec")):
            for view in views or []:
                if getattr(view, "domain", None) != domain:
                    raise ValueError(f"ViewPipeline.{name} takes {domain!r} views, got {type(view).__name__} "
                                     f"(domain {getattr(view, 'domain', None)!r})")
        self.wave = nn.ModuleList(wave or [])
        self.spec = nn.ModuleList(spec or [])

    def apply_wave(self, wave: Tensor, valid: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """Run the waveform views in order on ``(B, L)`` audio; ``valid`` in samples."""
        for view in self.wave:
            wave, valid = view(wave, valid)
        return wave, valid

    def apply_spec(self, spec: Tensor, valid_frames: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """Run the spectrogram views in order on ``(B, ..., n_mels, T)``; ``valid_frames`` in frames."""
        for view in self.spec:
            spec, valid_frames = view(spec, valid_frames)
        return spec, valid_frames

    def render(self, wave: Tensor, valid: Tensor, frontend: nn.Module) -> Tensor:
        """One augmented log-mel view ``(B, 1, n_mels, T)`` of float ``(B, L)`` audio with ``valid`` spans."""
        self.check_sample_rate(frontend.sample_rate)
        wave, valid = self.apply_wave(wave, valid)
        spec = frontend(wave, valid)
        spec, _ = self.apply_spec(spec, frontend.valid_frames(valid, spec.shape[-1]))
        return spec

    def check_sample_rate(self, sample_rate: int) -> None:
        """Raise if a view that works in Hz (it has a ``sample_rate``) was configured for another rate."""
        for view in self.wave:
            rate = getattr(view, "sample_rate", None)
            if rate is not None and rate != sample_rate:
                raise ValueError(f"{type(view).__name__} has sample_rate {rate} but the audio is {sample_rate} Hz; "
                                 f"set its sample_rate to {sample_rate} (or data.sample_rate to {rate})")

    def forward(self, x: Tensor, valid: Optional[Tensor] = None, domain: str = "spec") -> tuple[Tensor, Optional[Tensor]]:
        """``apply_wave`` or ``apply_spec`` by ``domain``."""
        if domain == "wave":
            return self.apply_wave(x, valid)
        if domain == "spec":
            return self.apply_spec(x, valid)
        raise ValueError(f"domain must be 'wave' or 'spec', got {domain!r}")


# Presets for the study's schemes. What its public code (stanfordmlgroup/selfsupervised-lungandheartsounds,
# utils/augment.py, utils/spec_augment.py, models/data.py) does, per sample on the CPU:
#   "spec"  SpecAugment: one time warp (W=60), one frequency mask of U[0, 27) mel rows and one time mask of
#           U[0, 100) frames, filled with 0, placed anywhere on the axis;
#   "split" keep rows [s, s + n_mels // 2) with s ~ U{0..n_mels // 2}, i.e. exactly half the rows (the array
#           is cropped; we fill the rest with mask_value instead, so shapes stay fixed);
#   "spec+split" spec, then split;
#   "raw"   audiomentations Gain(p=.5, +-12 dB default), PitchShift(p=.5), Shift(rollover=False, p=.5, +-50%),
#           TimeStretch(p=.5), AddGaussianNoise(p=1, amplitude 0.001..0.015).
# Defaults here follow this project's reading of the paper (2 masks per axis, up to ~20% of the axis, time
# masks kept in the valid frames); the code's 27 rows is ~21% of a 128-row mel spectrogram, but its mel
# size was not confirmed from the files read.


def spectrogram_mask(max_width: Width = 0.2, num_masks: int = 2, p: float = 1.0) -> ViewPipeline:
    """Study scheme "spec": frequency and time masks (2 of each, up to 20% of the axis / valid length)."""
    return ViewPipeline(spec=[SpectrogramMask(max_width, max_width, num_masks, num_masks, p=p)])


def time_mask(max_width: Width = 0.2, num_masks: int = 2, p: float = 1.0) -> ViewPipeline:
    """Study scheme "time": time masks only, inside the valid frames."""
    return ViewPipeline(spec=[TimeMask(max_width, num_masks, p=p)])


def frequency_mask(max_width: Width = 0.2, num_masks: int = 2, p: float = 1.0) -> ViewPipeline:
    """Study scheme "freq": frequency masks only."""
    return ViewPipeline(spec=[FrequencyMask(max_width, num_masks, p=p)])


def split(min_fraction: float = 0.5, max_fraction: float = 0.5, p: float = 1.0) -> ViewPipeline:
    """Study scheme "split": keep a random half of the mel rows (the study's block was exactly half)."""
    return ViewPipeline(spec=[FrequencyBandCrop(min_fraction, max_fraction, p=p)])


def spectrogram_mask_split(max_width: Width = 0.2, num_masks: int = 2, min_fraction: float = 0.5,
                           max_fraction: float = 0.5) -> ViewPipeline:
    """Study scheme "spec+split": spectrogram masking, then the half-band split (the study's order)."""
    return ViewPipeline(spec=[SpectrogramMask(max_width, max_width, num_masks, num_masks),
                              FrequencyBandCrop(min_fraction, max_fraction)])


def raw_audio(gain_db: float = 6.0, shift_fraction: float = 0.5, min_snr_db: float = 15.0,
              max_snr_db: float = 35.0, crop_min_fraction: float = 0.6) -> ViewPipeline:
    """Study scheme "raw" on the waveform: crop, gain, shift and noise.

    Order: crop first (so shift moves the kept window), gain, shift with zero fill, then noise
    last so its SNR is relative to the final signal. Gain/shift/crop fire with p=0.5 and noise
    always, like the study's audiomentations chain (Gain p=.5, Shift(rollover=False) p=.5 up to
    +-50%, AddGaussianNoise p=1). Its fixed noise amplitude 0.001..0.015 on audio peaking near 1
    is roughly 15..40 dB SNR for auscultation, hence 15..35 dB here; gain is +-6 dB rather than
    its +-12 dB. Its PitchShift/TimeStretch correspond to `SpeedPerturb`, left out of this preset.
    """
    return ViewPipeline(wave=[
        RandomTimeCrop(crop_min_fraction, 1.0, p=0.5),
        Gain(-gain_db, gain_db, p=0.5),
        TimeShift(shift_fraction, rollover=False, p=0.5),
        AddNoise(min_snr_db, max_snr_db, color="white", p=1.0),
    ])


PRESETS: dict[str, Callable[[], ViewPipeline]] = {
    "spectrogram_mask": spectrogram_mask,
    "time_mask": time_mask,
    "frequency_mask": frequency_mask,
    "split": split,
    "spectrogram_mask_split": spectrogram_mask_split,
    "raw_audio": raw_audio,
}
