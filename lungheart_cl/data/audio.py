"""Audio file checks and decoding: the only place that opens audio files.

`probe_audio` reads headers only (cheap; readers call it for every file), `load_audio` decodes,
mixes to mono, validates the samples and resamples (soxr, as librosa does).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from lungheart_cl.data.records import DataError


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_frames: int
    num_channels: int
    subtype: str


def _declared_wav_frames(path: Path) -> int | None:
    """Frames the WAV header promises (stdlib `wave`); None where `wave` cannot parse the format."""
    try:
        with wave.open(str(path), "rb") as handle:
            return handle.getnframes()
    except (wave.Error, EOFError, OSError):
        return None


def probe_audio(path: Path) -> AudioInfo:
    """Header facts of an audio file; raises DataError for anything that is not usable audio."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "audio file is missing")
    if path.stat().st_size == 0:
        raise DataError(path, "audio file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as error:
        raise DataError(path, f"not a readable audio file ({error})") from error
    if info.frames == 0:
        raise DataError(path, "audio file has no samples (zero length)")
    declared = _declared_wav_frames(path) if path.suffix.lower() == ".wav" else None
    if declared is not None and declared > info.frames:
        raise DataError(
            path, f"truncated: header declares {declared} frames but only {info.frames} are present"
        )
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels), str(info.subtype))


def resample(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr 'HQ', librosa's default) of a 1-D float signal."""
    if source_rate == target_rate:
        return signal
    return soxr.resample(signal, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: Path, target_rate: int, expected_rate: int | None = None) -> np.ndarray:
    """Decode to float32 mono at `target_rate`.

    `expected_rate` is the rate the dataset's metadata (e.g. a WFDB .hea) promises; a file that
    disagrees is an error rather than silently mis-timed audio.
    """
    path = Path(path)
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as error:
        raise DataError(path, f"cannot decode audio ({error})") from error
    if expected_rate is not None and rate != expected_rate:
        raise DataError(path, f"sample rate {rate} Hz differs from the {expected_rate} Hz its metadata declares")
    if samples.shape[0] == 0:
        raise DataError(path, "audio file has no samples (zero length)")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise DataError(path, f"{bad} samples are NaN or infinite")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return resample(np.ascontiguousarray(mono), int(rate), target_rate)
