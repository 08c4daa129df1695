"""Linear resampling along one axis, shared by the tempo and pitch views of both domains."""

from __future__ import annotations

import torch
from torch import Tensor


def resample_axis(x: Tensor, pos: Tensor, dim: int, fill: float) -> Tensor:
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


def stretch_about_centre(x: Tensor, valid: Tensor, rate: Tensor, dim: int, fill: float) -> tuple[Tensor, Tensor]:
    """Resample ``x`` along ``dim`` by per-sample ``rate`` (> 1 shorter/faster) about the centre of ``valid``.

    Keeps the axis length; returns the resampled tensor and the new valid range, i.e. the output
    positions whose source lies inside the old valid range.
    """
    n = x.shape[dim]
    start, end = valid[:, 0].float(), valid[:, 1].float()
    centre = (start + end - 1) / 2  # the cycle stays centred, as the cache centres it in the window
    t = torch.arange(n, device=x.device, dtype=torch.float32)
    pos = centre[:, None] + (t[None, :] - centre[:, None]) * rate[:, None]
    out = resample_axis(x, pos, dim, fill)
    eps = 1e-4  # float slack so rate 1 maps the range onto itself exactly
    new_start = torch.ceil(centre + (start - centre) / rate - eps).long().clamp(0, n)
    new_end = (torch.floor(centre + (end - 1 - centre) / rate + eps).long() + 1).clamp(0, n)
    new_end = torch.maximum(new_end, new_start)
    empty = end <= start  # nothing real to follow: keep an empty range where it was
    new_valid = torch.stack([new_start, new_end], 1)
    new_valid = torch.where(empty[:, None], valid.long(), new_valid)
    return out, new_valid.to(valid.dtype)
