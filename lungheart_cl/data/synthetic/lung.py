"""Lung sounds: breath noise shaped by breathing cycles, crackles and wheezes in annotated cycles.

Amplitudes are relative to the breath noise: its RMS at the peak of an average inspiration is 1.
Crackles (short damped oscillations) and wheezes (sustained tones) are kept small against the
breath noise and against the nuisances added later (heart sounds, device, noise, gain), so that
finding them takes looking for transients and tones rather than overall spectral balance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from lungheart_cl.data.records import Event
from lungheart_cl.data.synthetic.devices import chest_wall
from lungheart_cl.data.synthetic.heart import beat_schedule, heart_sounds, normal_heart
from lungheart_cl.data.synthetic.signals import (
    Response,
    add_waveforms,
    colored_noise,
    damped_sines,
    harmonic_tone,
    position_in_intervals,
)

# Chance that a cycle of an average patient with this diagnosis has crackles, and wheezes
# (roughly the proportions of the real ICBHI annotations, crackles made more common in pneumonia).
EVENT_RATES = {
    "Healthy": (0.04, 0.01),
    "COPD": (0.4, 0.22),
    "URTI": (0.08, 0.04),
    "Pneumonia": (0.3, 0.06),
    "Bronchiectasis": (0.25, 0.3),
    "Asthma": (0.03, 0.55),
    "LRTI": (0.12, 0.06),
    "Bronchiolitis": (0.15, 0.45),
}
OBSTRUCTIVE = ("COPD", "Asthma", "Bronchiolitis")
# Breath character that every cycle of a patient carries: expiratory loudness relative to
# inspiratory, and a factor on the breath-noise cutoff. Healthy vesicular sounds have a faint,
# short expiration; bronchial breathing over consolidation (pneumonia, LRTI) is brighter with an
# expiration as loud as the inspiration; airflow obstruction lengthens and strengthens expiration
# and hyperinflation (COPD) damps the high frequencies. URTI sounds nearly normal.
BREATH_CHARACTER = {
    "Healthy": ((0.3, 0.55), 1.0),
    "URTI": ((0.4, 0.7), 1.1),
    "COPD": ((0.6, 0.95), 0.8),
    "Pneumonia": ((0.75, 1.05), 1.35),
    "LRTI": ((0.6, 0.95), 1.25),
    "Bronchiectasis": ((0.6, 0.95), 1.15),
    "Asthma": ((0.6, 0.95), 1.0),
    "Bronchiolitis": ((0.6, 0.95), 1.05),
}
# Per location: breath-noise cutoff factor (the trachea is brighter, the back duller) and the
# range of heart-sound loudness (loudest near the heart, on the left front).
LOCATIONS = {
    "Tc": (1.8, (0.05, 0.2)),
    "Al": (1.0, (0.3, 1.0)),
    "Ar": (1.0, (0.1, 0.4)),
    "Pl": (0.85, (0.1, 0.4)),
    "Pr": (0.85, (0.05, 0.25)),
    "Ll": (0.95, (0.2, 0.7)),
    "Lr": (0.95, (0.05, 0.25)),
}
# Crackle peak and wheeze peak relative to the breath-noise RMS at the peak of that cycle: a few
# milliseconds of crackle or a tone below the noise add little energy to a cycle, but stand out
# to a transient or tone detector.
CRACKLE_PEAK = (1.8, 4.5)
WHEEZE_PEAK = (0.3, 0.8)


@dataclass(frozen=True)
class Breather:
    """What persists across one patient's lung recordings."""

    age_years: float
    breaths_per_min: float
    inspiration_fraction: float  # share of a cycle spent inhaling
    expiration_level: float  # expiratory loudness relative to inspiratory
    breath_depth: float  # breath loudness; diseased patients breathe shallower
    breath: Response  # spectrum of inspiratory breath noise at the anterior chest
    chest: Response  # the patient's chest wall (tilt, resonance), shared by all their recordings
    crackle_probability: float  # chance that one cycle has crackles
    wheeze_probability: float
    crackle_hz: tuple[float, float]  # fine crackles are high and short, coarse ones low and longer
    crackle_decay_s: tuple[float, float]
    wheeze_hz: float


@dataclass(frozen=True)
class BreathingCycles:
    """Cycle boundaries (s): a partial cycle before the first whole one, and enough to outlast the recording."""

    starts: np.ndarray
    inspiration_ends: np.ndarray
    ends: np.ndarray
    depths: np.ndarray  # loudness of each cycle relative to the patient's average


def breather(rng: np.random.Generator, age_years: float, female: bool, diagnosis: str) -> Breather:
    """A patient's breathing: children breathe faster with a brighter spectrum, women slightly
    brighter than men; diseased patients breathe a little faster and shallower, with the breath
    character of their diagnosis (`BREATH_CHARACTER`)."""
    diseased = diagnosis != "Healthy"
    youth = min(max((18 - age_years) / 18, 0.0), 1.0)
    expiration_range, brightness = BREATH_CHARACTER[diagnosis]
    cutoff = rng.uniform(250, 380) * (1 + 0.7 * youth) * (1.1 if female else 1.0) * brightness
    severity = rng.lognormal(-0.125, 0.5)
    crackle_rate, wheeze_rate = EVENT_RATES[diagnosis]
    fine = rng.random() < 0.5
    return Breather(
        age_years=age_years,
        breaths_per_min=(rng.uniform(12, 20) + 28 * math.exp(-age_years / 3)) * (1.15 if diseased else 1.0),
        inspiration_fraction=rng.uniform(0.36, 0.45) * (0.8 if diagnosis in OBSTRUCTIVE else 1.0),
        expiration_level=rng.uniform(*expiration_range),
        breath_depth=0.8 if diseased else 1.0,
        breath=Response(highpass_hz=rng.uniform(80, 120), lowpass_hz=cutoff, order=3),
        chest=chest_wall(rng),
        crackle_probability=min(crackle_rate * severity, 0.9),
        wheeze_probability=min(wheeze_rate * severity, 0.9),
        crackle_hz=(350.0, 1200.0) if fine else (150.0, 500.0),
        crackle_decay_s=(0.0006, 0.0015) if fine else (0.0015, 0.004),
        wheeze_hz=math.exp(rng.uniform(math.log(120), math.log(900))),
    )


def breathing_cycles(rng: np.random.Generator, breather: Breather, duration_s: float) -> BreathingCycles:
    """Cycles covering [0, duration] with +-12 % variation in length and +-15 % in depth."""
    period = 60.0 / breather.breaths_per_min
    count = math.ceil(duration_s / (0.7 * period)) + 2
    lengths = period * np.clip(rng.normal(1, 0.12, count), 0.7, 1.4)
    # The first whole cycle starts within 1.5 s, after a partial one, as in most ICBHI recordings.
    first_whole = rng.uniform(0, min(1.5, 0.5 * lengths[1]))
    starts = np.concatenate(([0.0], np.cumsum(lengths)[:-1])) - lengths[0] + first_whole
    fractions = breather.inspiration_fraction * np.clip(rng.normal(1, 0.08, count), 0.8, 1.2)
    # Annotations are written to the millisecond; rounding here keeps sound and labels aligned.
    starts = np.round(starts, 3)
    ends = np.append(starts[1:], np.round(starts[-1] + lengths[-1], 3))
    depths = np.clip(rng.normal(1, 0.15, count), 0.6, 1.5) * breather.breath_depth
    return BreathingCycles(starts, starts + fractions * (ends - starts), ends, depths)


def cycle_flags(rng: np.random.Generator, breather: Breather, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Crackle and wheeze flags of `count` cycles; the rates vary between a patient's recordings."""
    recording_factor = rng.lognormal(-0.125, 0.5)
    crackles = rng.random(count) < min(breather.crackle_probability * recording_factor, 0.95)
    wheezes = rng.random(count) < min(breather.wheeze_probability * recording_factor, 0.95)
    return crackles, wheezes


def lung_sound(
    rng: np.random.Generator, breather: Breather, location: str, duration_s: float, rate: int
) -> tuple[np.ndarray, tuple[Event, ...]]:
    """A lung recording at the chest (before the device) and its annotated cycles.

    Only cycles wholly inside the recording are annotated, as in ICBHI; crackles and wheezes are
    put in annotated cycles only.
    """
    n = round(duration_s * rate)
    cycles = breathing_cycles(rng, breather, duration_s)
    complete = np.flatnonzero((cycles.starts >= 0) & (cycles.ends <= duration_s))
    crackles, wheezes = cycle_flags(rng, breather, complete.size)
    inspiration, expiration = breath_envelopes(breather, cycles, n, rate)
    cutoff_factor, heart_range = LOCATIONS[location]
    inspiratory = replace(breather.breath, lowpass_hz=breather.breath.lowpass_hz * cutoff_factor)
    # Expiration is lower pitched than inspiration.
    expiratory = replace(inspiratory, lowpass_hz=0.75 * inspiratory.lowpass_hz)
    signal = inspiration * colored_noise(rng, n, rate, inspiratory)
    signal += expiration * colored_noise(rng, n, rate, expiratory)
    signal += add_crackles(rng, breather, cycles, complete[crackles], n, rate)
    signal += add_wheezes(rng, breather, cycles, complete[wheezes], n, rate)
    heart = normal_heart(rng, breather.age_years)
    signal += rng.uniform(*heart_range) * heart_sounds(rng, heart, beat_schedule(rng, heart, duration_s), n, rate)
    events = tuple(
        Event(float(cycles.starts[i]), float(cycles.ends[i]), {"crackle": bool(c), "wheeze": bool(w)})
        for i, c, w in zip(complete, crackles, wheezes)
    )
    return signal, events


def breath_envelopes(
    breather: Breather, cycles: BreathingCycles, n: int, rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loudness of inspiration and of expiration (smooth bumps, a short pause after each)."""
    times = np.arange(n) / rate
    lengths = cycles.ends - cycles.starts
    index, inside, position = position_in_intervals(times, cycles.starts, cycles.inspiration_ends)
    inspiration = np.where(inside, np.sin(np.pi * position) ** 1.5 * cycles.depths[index], 0.0)
    expiration_starts = cycles.inspiration_ends + 0.03 * lengths
    expiration_ends = cycles.ends - 0.08 * lengths
    index, inside, position = position_in_intervals(times, expiration_starts, expiration_ends)
    # Expiratory flow peaks early and tails off.
    shape = np.sin(np.pi * position) * (1 - 0.4 * position)
    expiration = np.where(inside, breather.expiration_level * shape * cycles.depths[index], 0.0)
    return inspiration, expiration


def add_crackles(
    rng: np.random.Generator, breather: Breather, cycles: BreathingCycles, which: np.ndarray, n: int, rate: int
) -> np.ndarray:
    """Several crackles in each cycle of `which`: mostly mid-to-late inspiratory, some early expiratory."""
    signal = np.zeros(n)
    counts = 3 + rng.poisson(4, which.size)
    cycle = np.repeat(which, counts)
    total = cycle.size
    if total == 0:
        return signal
    inspiratory = rng.random(total) < 0.75
    position = np.where(inspiratory, rng.beta(2.5, 1.5, total), rng.beta(1.5, 3, total))
    phase_start = np.where(inspiratory, cycles.starts[cycle], cycles.inspiration_ends[cycle])
    phase_end = np.where(inspiratory, cycles.inspiration_ends[cycle], cycles.ends[cycle])
    onsets = np.round((phase_start + position * (phase_end - phase_start)) * rate)
    freqs = rng.uniform(*breather.crackle_hz, total)
    decays = rng.uniform(*breather.crackle_decay_s, total)
    waveforms = damped_sines(rate, np.minimum(freqs, 0.4 * rate), decays, int(7 * decays.max() * rate) + 1)
    # A crackle starts with a sharp deflection of either polarity.
    peaks = rng.uniform(*CRACKLE_PEAK, total) * cycles.depths[cycle] * rng.choice((-1.0, 1.0), total)
    add_waveforms(signal, onsets, waveforms * peaks[:, None])
    return signal


def add_wheezes(
    rng: np.random.Generator, breather: Breather, cycles: BreathingCycles, which: np.ndarray, n: int, rate: int
) -> np.ndarray:
    """One wheeze per cycle of `which`: a 250 ms+ tone with harmonics, mostly expiratory, sometimes gliding."""
    signal = np.zeros(n)
    for i in which:
        expiratory = rng.random() < 0.65
        start = cycles.inspiration_ends[i] if expiratory else cycles.starts[i]
        end = cycles.ends[i] if expiratory else cycles.inspiration_ends[i]
        length_s = min(rng.uniform(0.25, 0.8), 0.9 * (end - start))
        onset = start + rng.uniform(0, end - start - length_s)
        pitch = breather.wheeze_hz * rng.uniform(0.85, 1.18)
        glide = rng.uniform(0.8, 1.25) if rng.random() < 0.5 else 1.0
        harmonics = (1.0, rng.uniform(0.2, 0.5), rng.uniform(0.05, 0.2))
        tone = harmonic_tone(rate, round(length_s * rate), pitch, pitch * glide, harmonics)
        level = rng.uniform(*WHEEZE_PEAK) * cycles.depths[i]
        add_waveforms(signal, np.array([round(onset * rate)]), level * tone[None, :])
    return signal
