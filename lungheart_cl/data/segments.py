"""How a recording becomes fixed-length segments: the plan from its metadata, the cut, the decode.

The training cache (`cache.build_cache`) and `predict` both prepare audio through `decode_segments`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lungheart_cl.data.audio import load_audio
from lungheart_cl.data.records import DataError, Recording

Padding = Literal["zero_center", "repeat", "context"]
Normalization = Literal["none", "recording_std"]


@dataclass(frozen=True)
class CacheConfig:
    """How recordings become fixed-length segments.

    Recordings with annotated events (ICBHI cycles) give one segment per event, fitted to
    ``segment_seconds`` by ``padding``: ``zero_center`` (the study's choice: the cycle centred in
    zeros, longer cycles centre-cropped), ``repeat`` (the cycle tiled), ``context`` (real audio of
    the recording around the centred cycle). Recordings without events (heart sounds) are cut
    into windows of ``segment_seconds`` every ``hop_seconds``; a last partial window is kept,
    zero-padded, when the audio it adds is at least half a window (or when it is the whole recording).
    """

    sample_rate: int
    segment_seconds: float
    padding: Padding = "zero_center"
    hop_seconds: float | None = None  # windows of event-less recordings; None = segment_seconds
    normalization: Normalization = "recording_std"  # removes per-recording gain (device, placement)

    def __post_init__(self) -> None:
        if self.padding not in ("zero_center", "repeat", "context"):
            raise ValueError(f"padding must be zero_center, repeat or context, not {self.padding!r}")
        if self.normalization not in ("none", "recording_std"):
            raise ValueError(f"normalization must be none or recording_std, not {self.normalization!r}")
        if self.sample_rate <= 0 or self.segment_seconds <= 0:
            raise ValueError("sample_rate and segment_seconds must be positive")

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))


@dataclass(frozen=True)
class SegmentSpec:
    """Where one segment comes from: a span of its recording, and its event (whose extras label it)."""

    start_s: float
    end_s: float
    event_index: int = -1  # index into Recording.events; -1 for windows



def plan_segments(recording: Recording, config: CacheConfig) -> list[SegmentSpec]:
    """The segments a recording yields, from metadata alone (so offsets are known before decoding)."""
    if recording.events:
        return [SegmentSpec(e.start_s, e.end_s, i) for i, e in enumerate(recording.events)]
    seconds = recording.duration_s
    window, hop = config.segment_seconds, config.hop_seconds or config.segment_seconds
    starts = np.arange(0.0, max(seconds - window, 0.0) + 1e-9, hop)
    specs = [SegmentSpec(float(s), float(min(s + window, seconds))) for s in starts]
    uncovered = seconds - (starts[-1] + window)
    if uncovered >= window / 2:
        specs.append(SegmentSpec(float(starts[-1] + hop), float(seconds)))
    return specs


def cut_segment(audio: np.ndarray, spec: SegmentSpec, config: CacheConfig) -> tuple[np.ndarray, int, int]:
    """One fixed-length segment and the [valid_start, valid_end) samples that hold its own audio."""
    rate, length = config.sample_rate, config.segment_samples
    start = int(round(spec.start_s * rate))
    end = min(max(int(round(spec.end_s * rate)), start + 1), len(audio))
    piece = audio[start:end]
    if len(piece) == 0:
        raise ValueError(f"segment {spec} lies outside the audio ({len(audio)} samples)")
    out = np.zeros(length, dtype=np.float32)
    if spec.event_index < 0:  # windows start at their own time; only the tail is padded
        out[: len(piece)] = piece[:length]
        return out, 0, min(len(piece), length)
    if len(piece) >= length:  # long cycle: keep its centre
        offset = (len(piece) - length) // 2
        return piece[offset: offset + length].copy(), 0, length
    left = (length - len(piece)) // 2
    if config.padding == "zero_center":
        out[left: left + len(piece)] = piece
    elif config.padding == "repeat":
        reps = int(np.ceil(length / len(piece))) + 1
        tiled = np.tile(piece, reps)
        out[:] = np.roll(tiled[:length], left)  # the original cycle stays at the centre
    else:  # context: the recording's own audio around the centred cycle
        ctx_start = start - left
        lo, hi = max(ctx_start, 0), min(ctx_start + length, len(audio))
        out[lo - ctx_start: hi - ctx_start] = audio[lo:hi]
    return out, left, left + len(piece)


def decode_segments(recording: Recording, specs: list[SegmentSpec],
                    config: CacheConfig) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Decode one recording and cut its segments as float16 (the cache's storage precision), with
    each segment's valid span. Training caches and `predict` both prepare audio through this."""
    audio = load_audio(recording.audio_path, config.sample_rate, expected_rate=recording.sample_rate)
    if config.normalization == "recording_std":
        audio = audio - audio.mean()
        std = float(audio.std())
        if std > 0:
            audio = audio / std
    segments = np.empty((len(specs), config.segment_samples), dtype=np.float16)
    valid = []
    for row, spec in enumerate(specs):
        try:
            segment, lo, hi = cut_segment(audio, spec, config)
        except ValueError as error:
            raise DataError(recording.audio_path, str(error)) from error
        segments[row] = np.clip(segment, -65000, 65000)  # float16 range
        valid.append((lo, hi))
    return segments, valid
