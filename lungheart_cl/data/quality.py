"""Is a recording fit to be scored? The checks `predict` runs before it trusts a model's output.

A classifier returns confident probabilities for anything, digital silence included, so a
recording that holds no sound of the kind the model was trained on is refused (a `DataError`
naming the file and the reason) and a doubtful one is scored with a warning. Levels are measured
on the decoded samples at the file's own rate, before resampling (whose ringing would move
samples off the rails) and before per-recording normalisation (which would lift a noise floor
to unit variance and make it look like sound).
"""

from __future__ import annotations

import math

import numpy as np

from lungheart_cl.data.cache import CacheConfig
from lungheart_cl.data.records import DataError, Recording

# The quietest of the 1,798 real recordings in ../shared/data (ICBHI subset, PhysioNet 2016, CirCor 2022)
# sits at -52.6 dBFS (PhysioNet d0009); 16-bit dither is near -101 dBFS. -70 dBFS leaves 17 dB of margin
# below real quiet recordings and is far above an empty channel's noise floor.
SILENCE_DBFS = -70.0
# The largest 16-bit code (32767 / 32768); every PCM width's top code and float full scale reach it.
FULL_SCALE = 1.0 - 2.0**-15
# The most clipped real recording measured holds 6.9 % of its samples at full scale (ICBHI
# 138_1p3_Pl_mc_AKGC417L, training data); beyond 10 % clipping shapes the sound more than the body does.
CLIPPED_FRACTION = 0.10
# Half the shortest of the 6,898 cycles annotated in ICBHI 2017 (0.2 s): a shorter "cycle" is an
# annotation error (e.g. times in the wrong unit), not a breath, and would be scored as padding.
MIN_CYCLE_SECONDS = 0.1


def level_dbfs(audio: np.ndarray) -> float:
    """RMS around the mean, in dB relative to full scale (-inf for a constant signal: a DC offset is no sound)."""
    std = float(np.std(audio, dtype=np.float64))
    return 20 * math.log10(std) if std > 0 else -math.inf


def clipped_fraction(audio: np.ndarray) -> float:
    """Fraction of samples at (or beyond) full scale."""
    return float(np.mean(np.abs(audio) >= FULL_SCALE))


def check_length(recording: Recording, config: CacheConfig) -> None:
    """Refuse what the model would see mostly as padding.

    Windowed recordings (heart sounds) need one whole segment; cycle-annotated ones (ICBHI) are
    cut per cycle and padded to the segment as in training, so there each cycle needs
    `MIN_CYCLE_SECONDS` instead and the recording itself may be shorter than a segment.
    """
    if recording.events:
        for number, event in enumerate(recording.events, start=1):
            if event.end_s - event.start_s < MIN_CYCLE_SECONDS:
                raise DataError(recording.audio_path,
                                f"annotated cycle {number} ({event.start_s:g}-{event.end_s:g} s) is shorter than "
                                f"{MIN_CYCLE_SECONDS:g} s")
        return
    window = int(round(config.segment_seconds * recording.sample_rate))
    if recording.num_frames < window:
        raise DataError(recording.audio_path,
                        f"{recording.num_frames} samples ({recording.duration_s:.3g} s) is shorter than one "
                        f"{config.segment_seconds:g} s window, the least the model scores")


def check_levels(recording: Recording, audio: np.ndarray) -> tuple[str, ...]:
    """Refuse a silent recording; return the warnings of one that is scored but doubtful (clipping)."""
    level = level_dbfs(audio)
    if level < SILENCE_DBFS:
        what = "digital silence (every sample equal)" if level == -math.inf else f"RMS {level:.1f} dBFS"
        raise DataError(recording.audio_path, f"silent: {what}, below the {SILENCE_DBFS:g} dBFS threshold")
    clipped = clipped_fraction(audio)
    if clipped > CLIPPED_FRACTION:
        return (f"clipped: {clipped:.1%} of samples at full scale (more than {CLIPPED_FRACTION:.0%}); "
                f"the probabilities may not be reliable",)
    return ()
