"""Heart sounds: S1 and S2 at a variable heart rate, murmurs and extra sounds, and the segmentation.

Amplitudes are relative to the first heart sound (S1 peaks near 1). A beat is
``S1 | systole | S2 | diastole``; murmurs are band-limited noise (or, when musical, a tone) shaped
inside systole or diastole, so the segmentation says exactly where they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from lungheart_cl.data.synthetic.population import choose
from lungheart_cl.data.synthetic.signals import (
    Response,
    add_waveforms,
    colored_noise,
    gaussian_bursts,
    harmonic_tone,
    position_in_intervals,
    rms,
)

# Where in systole or diastole a murmur sits, as fractions of that interval (CirCor's vocabulary).
MURMUR_SPANS = {
    "Early-systolic": (0.0, 0.5),
    "Mid-systolic": (0.25, 0.75),
    "Late-systolic": (0.5, 1.0),
    "Holosystolic": (0.0, 1.0),
    "Early-diastolic": (0.0, 0.45),
    "Mid-diastolic": (0.3, 0.7),
    "Holodiastolic": (0.0, 1.0),
}
MURMUR_BANDS_HZ = {"Low": (80.0, 250.0), "Medium": (150.0, 400.0), "High": (250.0, 600.0)}
# Murmur RMS relative to the S1 peak, by grade: grade I is faint against S1 and the noise.
MURMUR_LEVELS = {
    "I/VI": (0.12, 0.2), "II/VI": (0.2, 0.4), "III/VI": (0.4, 0.8),
    "I/IV": (0.12, 0.2), "II/IV": (0.2, 0.4), "III/IV": (0.4, 0.8),
}
SYSTOLIC = {
    "timing": {"Holosystolic": 0.55, "Early-systolic": 0.3, "Mid-systolic": 0.1, "Late-systolic": 0.05},
    "shape": {"Plateau": 0.5, "Diamond": 0.2, "Decrescendo": 0.2, "Crescendo": 0.1},
    "grading": {"I/VI": 0.6, "II/VI": 0.25, "III/VI": 0.15},
    "pitch": {"Low": 0.4, "Medium": 0.35, "High": 0.25},
    "quality": {"Harsh": 0.55, "Blowing": 0.4, "Musical": 0.05},
}
DIASTOLIC = {
    "timing": {"Early-diastolic": 0.6, "Holodiastolic": 0.25, "Mid-diastolic": 0.15},
    "shape": {"Decrescendo": 0.7, "Plateau": 0.3},
    "grading": {"I/IV": 0.6, "II/IV": 0.3, "III/IV": 0.1},
    "pitch": {"Low": 0.4, "Medium": 0.3, "High": 0.3},
    "quality": {"Blowing": 0.7, "Harsh": 0.3},
}
# What makes a PhysioNet recording abnormal, and how often.
ABNORMALITIES = {
    "systolic murmur": 0.52,
    "systolic and diastolic murmurs": 0.1,
    "diastolic murmur": 0.07,
    "extra sounds": 0.13,
    "irregular rhythm": 0.1,
    "nothing audible": 0.08,
}
# Segmentation states of CirCor's .tsv files.
UNANNOTATED, S1, SYSTOLE, S2, DIASTOLE = range(5)


@dataclass(frozen=True)
class Murmur:
    """One murmur, in CirCor's terms; `level` is its RMS inside its span relative to the S1 peak."""

    timing: str  # a key of MURMUR_SPANS
    shape: str  # Plateau | Crescendo | Decrescendo | Diamond
    pitch: str  # Low | Medium | High
    quality: str  # Blowing | Harsh | Musical
    level: float
    grade: str  # I/VI .. III/VI (systolic), I/IV .. III/IV (diastolic)


@dataclass(frozen=True)
class Heart:
    """What shapes one heart-sound recording."""

    bpm: float
    variability: float  # beat-to-beat standard deviation of the RR interval, as a fraction
    s1_hz: float
    s2_hz: float
    s1_s: float  # S1 duration
    s2_s: float
    s2_level: float  # S2 peak relative to S1
    s2_split_s: float  # A2-P2 delay; above ~30 ms it is heard as a split S2
    s3_level: float = 0.0  # 0: no third heart sound
    s4_level: float = 0.0
    systolic: Murmur | None = None
    diastolic: Murmur | None = None


@dataclass(frozen=True)
class Beats:
    """Boundaries (s) of each beat's sounds; a beat runs from `s1_start` to `next_s1`."""

    s1_start: np.ndarray
    s1_end: np.ndarray
    s2_start: np.ndarray
    s2_end: np.ndarray
    next_s1: np.ndarray


def resting_bpm(rng: np.random.Generator, age_years: float) -> float:
    """Heart rate by age: ~130 bpm in neonates, ~95 at 4 years, 60-90 in adults."""
    return (58 + 70 * math.exp(-age_years / 4.0)) * rng.uniform(0.9, 1.15)


def normal_heart(rng: np.random.Generator, age_years: float) -> Heart:
    """A healthy heart of that age: its sound pitch, durations and a small physiological S2 split."""
    youth = math.exp(-age_years / 8.0)
    return Heart(
        bpm=resting_bpm(rng, age_years),
        variability=rng.uniform(0.01, 0.04),
        s1_hz=rng.uniform(40, 90) * (1 + 0.2 * youth),
        s2_hz=rng.uniform(60, 140) * (1 + 0.2 * youth),
        s1_s=rng.uniform(0.09, 0.13),
        s2_s=rng.uniform(0.07, 0.1),
        s2_level=rng.uniform(0.5, 1.0),
        s2_split_s=rng.uniform(0.0, 0.025),
    )


def abnormal_heart(rng: np.random.Generator, heart: Heart) -> Heart:
    """The same heart with one pathology: a murmur (most often), split or extra sounds, an irregular
    rhythm, or nothing audible at all (some abnormal recordings sound normal)."""
    kind = choose(rng, ABNORMALITIES)
    if kind == "systolic murmur":
        return replace(heart, systolic=random_murmur(rng, systolic=True))
    if kind == "systolic and diastolic murmurs":
        both = random_murmur(rng, systolic=True), random_murmur(rng, systolic=False)
        return replace(heart, systolic=both[0], diastolic=both[1])
    if kind == "diastolic murmur":
        return replace(heart, diastolic=random_murmur(rng, systolic=False))
    if kind == "extra sounds":
        extra = choose(rng, ("S3", "S4", "split S2"))
        return replace(
            heart,
            s3_level=rng.uniform(0.2, 0.5) if extra == "S3" else 0.0,
            s4_level=rng.uniform(0.2, 0.5) if extra == "S4" else 0.0,
            s2_split_s=rng.uniform(0.04, 0.07) if extra == "split S2" else heart.s2_split_s,
        )
    if kind == "irregular rhythm":
        return replace(heart, variability=rng.uniform(0.12, 0.2))
    return heart


def random_murmur(rng: np.random.Generator, *, systolic: bool, grade: str | None = None) -> Murmur:
    """A murmur with CirCor-like proportions of timing, shape, pitch, quality and grade."""
    table = SYSTOLIC if systolic else DIASTOLIC
    grade = grade or choose(rng, table["grading"])
    return Murmur(
        timing=choose(rng, table["timing"]),
        shape=choose(rng, table["shape"]),
        pitch=choose(rng, table["pitch"]),
        quality=choose(rng, table["quality"]),
        level=rng.uniform(*MURMUR_LEVELS[grade]),
        grade=grade,
    )


def beat_schedule(rng: np.random.Generator, heart: Heart, duration_s: float) -> Beats:
    """Beats covering [0, duration], the first starting before 0; RR varies with breathing and at random."""
    mean_rr = 60.0 / heart.bpm
    count = math.ceil(duration_s / (0.6 * mean_rr)) + 2
    breathing_period = rng.uniform(2.5, 5.0) * mean_rr
    jitter = np.clip(rng.normal(0, heart.variability, count), -0.4, 0.4)
    breathing_phase = 2 * np.pi * np.arange(count) * mean_rr / breathing_period + rng.uniform(0, 2 * np.pi)
    sinus_arrhythmia = 0.03 * np.sin(breathing_phase)
    rr = mean_rr * (1 + jitter + sinus_arrhythmia)
    s1_start = np.concatenate(([0.0], np.cumsum(rr)[:-1])) - rng.uniform(0, rr[0])
    # As the heart speeds up, the sounds and systole shorten, and diastole most of all.
    shortening = np.sqrt(np.minimum(rr / 0.8, 1.0))
    s2_start = s1_start + 0.36 * np.sqrt(rr) * rng.uniform(0.93, 1.07)
    s1_end = s1_start + heart.s1_s * shortening * rng.uniform(0.9, 1.1, count)
    s2_end = s2_start + heart.s2_s * shortening * rng.uniform(0.9, 1.1, count) + heart.s2_split_s
    next_s1 = np.append(s1_start[1:], s1_start[-1] + rr[-1])
    return Beats(s1_start, s1_end, s2_start, s2_end, next_s1)


def heart_sounds(rng: np.random.Generator, heart: Heart, beats: Beats, n: int, rate: int) -> np.ndarray:
    """S1 (mitral then tricuspid), S2 (aortic then pulmonary), optional S3/S4 and murmurs, as one signal."""
    signal = np.zeros(n)
    count = beats.s1_start.size
    amplitude = rng.uniform(0.85, 1.15, count)
    s1_span = beats.s1_end - beats.s1_start
    a2_span = beats.s2_end - beats.s2_start - heart.s2_split_s
    a2_centre = beats.s2_start + 0.5 * a2_span
    s2_peak = heart.s2_level * amplitude
    components = [
        # (centre s, peak, frequency Hz, width s) of each component, one value per beat
        (beats.s1_start + 0.35 * s1_span, amplitude, heart.s1_hz, s1_span / 7),
        (beats.s1_start + 0.6 * s1_span, 0.6 * amplitude, 0.9 * heart.s1_hz, s1_span / 7),
        (a2_centre, s2_peak, heart.s2_hz, a2_span / 7),
        (a2_centre + heart.s2_split_s, 0.5 * s2_peak, 0.9 * heart.s2_hz, a2_span / 7),
    ]
    if heart.s3_level > 0:
        components.append((beats.s2_end + rng.uniform(0.12, 0.16), heart.s3_level * amplitude, 35.0, 0.025))
    if heart.s4_level > 0:
        components.append((beats.next_s1 - 0.09, heart.s4_level * amplitude, 30.0, 0.02))
    for centres, peaks, freq, widths in components:
        _add_bursts(rng, signal, rate, centres, peaks, freq, widths)
    if heart.systolic is not None:
        signal += _murmur(rng, heart.systolic, beats.s1_end, beats.s2_start, n, rate)
    if heart.diastolic is not None:
        signal += _murmur(rng, heart.diastolic, beats.s2_end, beats.next_s1, n, rate)
    return signal


def pcg_source(
    rng: np.random.Generator, heart: Heart, duration_s: float, rate: int
) -> tuple[np.ndarray, Beats]:
    """A heart-sound recording at the chest (before the device): heart sounds over faint breath noise."""
    n = round(duration_s * rate)
    beats = beat_schedule(rng, heart, duration_s)
    signal = heart_sounds(rng, heart, beats, n, rate)
    breathing = np.sin(np.pi * np.arange(n) / rate / rng.uniform(3.0, 5.0)) ** 2
    breath = colored_noise(rng, n, rate, Response(highpass_hz=100, lowpass_hz=rng.uniform(300, 600), order=3))
    signal += rng.uniform(0.01, 0.08) * breathing * breath
    return signal, beats


def _add_bursts(
    rng: np.random.Generator,
    signal: np.ndarray,
    rate: int,
    centres_s: np.ndarray,
    peaks: np.ndarray,
    freq_hz: float,
    widths_s: np.ndarray | float,
) -> None:
    """One Gaussian burst per beat, with a little beat-to-beat variation in pitch and phase."""
    count = centres_s.size
    widths_s = np.broadcast_to(widths_s, (count,))
    length = int(8 * widths_s.max() * rate) + 1
    freqs = freq_hz * rng.uniform(0.9, 1.1, count)
    bursts = gaussian_bursts(rate, freqs, widths_s, length, rng.uniform(0, 2 * np.pi, count))
    onsets = np.round(centres_s * rate).astype(np.int64) - length // 2
    add_waveforms(signal, onsets, bursts * peaks[:, None])


def _murmur_shape(shape: str, position: np.ndarray) -> np.ndarray:
    """Loudness over the murmur's span (0..1), with soft 10 % edges."""
    profiles = {
        "Plateau": np.ones_like(position),
        "Crescendo": 0.2 + 0.8 * position,
        "Decrescendo": 1.0 - 0.8 * position,
        "Diamond": 1.0 - 0.8 * np.abs(2 * position - 1),
    }
    edges = np.clip(np.minimum(position, 1 - position) / 0.1, 0, 1)
    return profiles[shape] * edges


def _murmur(
    rng: np.random.Generator, murmur: Murmur, starts_s: np.ndarray, ends_s: np.ndarray, n: int, rate: int
) -> np.ndarray:
    """The murmur sound inside each [start, end) interval, shaped by its timing and shape."""
    first, last = MURMUR_SPANS[murmur.timing]
    span_starts = starts_s + first * (ends_s - starts_s)
    span_ends = starts_s + last * (ends_s - starts_s)
    _, inside, position = position_in_intervals(np.arange(n) / rate, span_starts, span_ends)
    envelope = np.where(inside, _murmur_shape(murmur.shape, position), 0.0)
    low, high = MURMUR_BANDS_HZ[murmur.pitch]
    sound = colored_noise(rng, n, rate, Response(highpass_hz=low, lowpass_hz=high, order=2))
    if murmur.quality == "Harsh":
        # Rough amplitude modulation at a few tens of Hz gives the rasping character.
        sound *= 1 + 0.7 * np.sin(2 * np.pi * rng.uniform(30, 60) * np.arange(n) / rate)
    elif murmur.quality == "Musical":
        pitch = math.sqrt(low * high)
        sound = 0.3 * sound + harmonic_tone(rate, n, pitch, pitch, (1.0, 0.5, 0.25))
    # Normalised so that `level` is the RMS where the envelope is full.
    return murmur.level * envelope * sound / rms(sound)


def segmentation(
    beats: Beats, duration_s: float, first_s: float, last_s: float
) -> list[tuple[float, float, int]]:
    """CirCor .tsv rows covering [0, duration]: S1, systole, S2 and diastole of every whole beat
    between `first_s` and `last_s`, unannotated (0) before, after and wherever beats are skipped."""
    ordered = (beats.s1_end < beats.s2_start) & (beats.s2_end < beats.next_s1)
    keep = (beats.s1_start >= first_s) & (beats.next_s1 <= last_s) & ordered
    rows: list[tuple[float, float, int]] = []
    annotated_until = 0.0
    for s1, s1_end, s2, s2_end, following in zip(
        beats.s1_start[keep], beats.s1_end[keep], beats.s2_start[keep], beats.s2_end[keep], beats.next_s1[keep]
    ):
        if s1 > annotated_until:
            rows.append((annotated_until, s1, UNANNOTATED))
        rows += [(s1, s1_end, S1), (s1_end, s2, SYSTOLE), (s2, s2_end, S2), (s2_end, following, DIASTOLE)]
        annotated_until = following
    rows.append((annotated_until, duration_s, UNANNOTATED))
    return [(float(start), float(end), state) for start, end, state in rows]
