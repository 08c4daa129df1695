"""`ViewPipeline`: waveform views, the front end, then spectrogram views; and the default pipeline."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from lungheart_cl.views.base import View, Width
from lungheart_cl.views.masks import SpectrogramMask


class ViewPipeline(nn.Module):
    """Ordered wave views (before the front end) and spectrogram views (after it).

    ``render(wave, valid, frontend)`` runs ``apply_wave(wave, valid)``, the front end, converts
    ``valid`` to frames, then ``apply_spec(spec, valid_frames)``; rendering the same batch twice
    gives the two SimCLR views. Empty lists mean no augmentation there. It has no ``forward``:
    callers say which half they run.
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


def spectrogram_mask(max_width: Width = 0.2, num_masks: int = 2, p: float = 1.0) -> ViewPipeline:
    """The default when a model is given no views: ``experiments/schemes/spectrogram_mask.yaml``'s pipeline.

    The study's scheme "spec": 2 frequency and 2 time masks, each up to 20% of the mel axis / valid frames.
    """
    return ViewPipeline(spec=[SpectrogramMask(max_width, max_width, num_masks, num_masks, p=p)])
