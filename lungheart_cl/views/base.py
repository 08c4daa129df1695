"""The contract every view honours, and the helpers views share to honour it.

A view is a small ``nn.Module`` with

* ``domain`` -- ``"wave"`` (input ``(B, L)`` waveforms, spans in samples) or ``"spec"`` (input
  ``(B, ..., n_mels, T)`` normalised log-mel spectrograms, spans in frames);
* ``p`` -- each sample is augmented with probability ``p``; the others pass unchanged;
* ``forward(x, valid) -> (x_aug, valid_aug)``, keeping ``x``'s shape and dtype.

The valid-span rule. ``valid`` is a ``(B, 2)`` integer tensor ``[start, end)`` of the real audio
in each row (the rest is padding around a respiratory/cardiac cycle: zeros, or the repeat/context
padding of ICBHI cycles). Given such a span, a view returns one of the same shape and dtype with
``0 <= start <= end <= axis length``: views that move, stretch, crop or mix the audio return the span
the audio now occupies (`follow_span`), the others return ``valid`` as it came, and a sample the
``p`` draw left alone keeps its span. ``valid=None`` means "all of the axis" and comes back
``None``, except from a crop, which must say what it kept.

Randomness comes from torch's default RNG on ``x``'s device (``torch.manual_seed`` /
``lightning.seed_everything`` make it repeatable), arithmetic stays in ``x.dtype`` (float16 and
bfloat16 included) except small per-sample statistics, and nothing calls ``.item()`` or
``.nonzero()``, so a view never forces a host-device sync.
"""

from __future__ import annotations

import inspect
from typing import ClassVar, Optional, Union

import torch
from torch import Tensor, nn

Width = Union[int, float]  # int first, so jsonargparse reads "10" as 10 bins and "0.2" as a fraction


class View(nn.Module):
    """Base class of a batched augmentation applied to each sample with probability ``p``.

    Subclasses set ``domain`` and implement ``forward(x, valid) -> (x_aug, valid_aug)`` under the
    rule above. The base class only holds ``p``, draws the per-sample selection and prints the
    constructor arguments (so two pipelines built from the same config print the same).
    """

    domain: ClassVar[str] = "spec"

    def __init__(self, p: float = 1.0):
        super().__init__()
        self.p = check_p(p)

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
# spans
# ----------------------------------------------------------------------------------------------

def full_valid(x: Tensor, dim: int = -1) -> Tensor:
    """The whole axis as the valid span, for callers that pass ``valid=None``."""
    b, n = x.shape[0], x.shape[dim]
    full = torch.zeros(b, 2, dtype=torch.long, device=x.device)  # built on the device: no host copy
    full[:, 1] = n
    return full


def in_span(x: Tensor, valid: Optional[Tensor]) -> Tensor:
    """(B, L) bool: the samples of each row that lie in its valid span (all of them for ``valid=None``)."""
    n = x.shape[-1]
    rng = full_valid(x) if valid is None else valid.long().clamp(0, n)
    t = torch.arange(n, device=x.device)[None, :]
    return (t >= rng[:, :1]) & (t < rng[:, 1:])


def follow_span(given: Optional[Tensor], valid: Tensor, moved: Tensor, selected: Tensor) -> Optional[Tensor]:
    """The rule for views that move audio: selected rows take ``moved``, the rest keep ``valid``; None stays None.

    ``given`` is what the caller passed (maybe None), ``valid`` the span the view worked with.
    """
    return None if given is None else torch.where(selected[:, None], moved, valid)


def expand(mask: Tensor, x: Tensor) -> Tensor:
    """Reshape a (B,) selection to broadcast against ``x``."""
    return mask.reshape((x.shape[0],) + (1,) * (x.dim() - 1))


# ----------------------------------------------------------------------------------------------
# per-sample draws
# ----------------------------------------------------------------------------------------------

def uniform(b: int, low: float, high: float, device: torch.device) -> Tensor:
    """(B,) float32 draws from U(low, high)."""
    return low + (high - low) * torch.rand(b, device=device)


def uniform_int(count: Tensor) -> Tensor:
    """Per-sample integer uniform in ``[0, count)`` (0 where ``count <= 0``), without ``randint``'s scalar bound."""
    draw = (torch.rand(count.shape, device=count.device) * count.clamp(min=0).float()).long()
    return torch.minimum(draw, (count - 1).clamp(min=0))  # guards against float rounding up to count


# ----------------------------------------------------------------------------------------------
# constructor checks
# ----------------------------------------------------------------------------------------------

def check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    return float(p)


def check_range(name: str, low: float, high: float, lo_bound: float | None = None,
                hi_bound: float | None = None) -> None:
    if low > high:
        raise ValueError(f"{name}: min {low} exceeds max {high}")
    if lo_bound is not None and low < lo_bound:
        raise ValueError(f"{name}: min {low} is below {lo_bound}")
    if hi_bound is not None and high > hi_bound:
        raise ValueError(f"{name}: max {high} is above {hi_bound}")


def check_width(max_width: Width) -> None:
    if isinstance(max_width, bool) or not isinstance(max_width, (int, float)) or max_width <= 0:
        raise ValueError(f"max_width must be a positive int (bins) or a float fraction, got {max_width!r}")
