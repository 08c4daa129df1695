"""Signal building blocks shared by the lung and heart generators.

Every sound is first built at a *source rate* of at most 5 kHz, where all of the physiology lives
(breath sounds, crackles, wheezes, heart sounds and murmurs are below 2.5 kHz). `to_device` then
renders the source at the stethoscope's own sample rate in a single inverse FFT that also adds the
ambient noise floor over the device's whole band and applies the device's frequency response, so a
20 s recording at 44.1 kHz costs a few tens of milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Highest rate the physiology is synthesised at; see `source_rate`.
MAX_SOURCE_RATE = 5000


@dataclass(frozen=True)
class Response:
    """A smooth magnitude response: band edges, a spectral tilt and one resonance (peak or dip).

    Used for spectra of sound sources (breath noise, murmurs), for the chest wall of a patient and
    for the frequency response of a stethoscope.
    """

    highpass_hz: float = 0.0
    lowpass_hz: float = math.inf
    order: int = 2  # steepness of both band edges, as a Butterworth filter of this order
    tilt_db_per_octave: float = 0.0
    tilt_pivot_hz: float = 300.0
    resonance_hz: float = 0.0  # 0: no resonance
    resonance_db: float = 0.0
    resonance_octaves: float = 0.5  # width (standard deviation) of the resonance, in octaves

    def gain(self, freqs: np.ndarray) -> np.ndarray:
        """Linear magnitude at each frequency (Hz)."""
        f = np.maximum(freqs, 1.0)
        magnitude = np.ones_like(f)
        if self.highpass_hz > 0:
            magnitude /= np.sqrt(1.0 + (self.highpass_hz / f) ** (2 * self.order))
        if math.isfinite(self.lowpass_hz):
            magnitude /= np.sqrt(1.0 + (f / self.lowpass_hz) ** (2 * self.order))
        decibels = self.tilt_db_per_octave * np.log2(f / self.tilt_pivot_hz)
        if self.resonance_hz > 0:
            distance = np.log2(f / self.resonance_hz) / self.resonance_octaves
            decibels = decibels + self.resonance_db * np.exp(-0.5 * distance**2)
        return magnitude * 10.0 ** (decibels / 20.0)


def combined_gain(freqs: np.ndarray, responses: tuple[Response, ...]) -> np.ndarray:
    """Magnitude of several responses in series."""
    magnitude = np.ones_like(freqs)
    for response in responses:
        magnitude *= response.gain(freqs)
    return magnitude


def source_rate(device_rate: int) -> int:
    """The device rate divided by the smallest integer that brings it to at most `MAX_SOURCE_RATE`.

    An integer ratio keeps every source sample on the device's time grid (44.1 kHz -> 4.9 kHz,
    10 kHz -> 5 kHz, 4 kHz and 2 kHz stay as they are).
    """
    factor = math.ceil(device_rate / MAX_SOURCE_RATE)
    while device_rate % factor:
        factor += 1
    return device_rate // factor


def _random_spectrum(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random complex spectrum coefficients whose real and imaginary parts have unit variance.

    They are uniform rather than Gaussian: every sample of the inverse FFT sums thousands of them,
    so the noise comes out Gaussian all the same, and uniform numbers are several times cheaper.
    """
    uniform = rng.random((size, 2), dtype=np.float32)
    uniform -= 0.5
    uniform *= math.sqrt(12.0)
    return uniform.view(np.complex64)[:, 0]


def colored_noise(rng: np.random.Generator, n: int, rate: int, *responses: Response) -> np.ndarray:
    """`n` samples of Gaussian noise with the spectrum of `responses`, scaled to unit RMS."""
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum = _random_spectrum(rng, freqs.size) * combined_gain(freqs, responses).astype(np.float32)
    noise = np.fft.irfft(spectrum, n)
    return noise / max(rms(noise), 1e-12)


def rms(signal: np.ndarray) -> float:
    """Root mean square of a signal."""
    # np.mean's pairwise summation is accurate in float32; np.dot would wake BLAS threads for nothing.
    return math.sqrt(float(np.mean(np.square(signal))))


def to_device(
    rng: np.random.Generator,
    source: np.ndarray,
    source_hz: int,
    device_hz: int,
    *,
    chest: Response,
    device: Response,
    ambient: Response,
    snr_db: float,
) -> np.ndarray:
    """Render a source signal as a stethoscope at `device_hz` records it.

    The source goes through the patient's `chest` and is upsampled by zero-padding its spectrum (it
    has nothing above its own Nyquist frequency); stationary ambient noise shaped by `ambient`, with
    `snr_db` less power than the source, is added over the device's whole band; both go through the
    device's response. One inverse FFT at the device rate does it all.
    """
    factor = device_hz // source_hz
    n = source.size * factor
    grid = _log_grid(device_hz)
    ambient_gain = ambient.gain(grid)
    # Unit mean power over 0..Nyquist (trapezoid rule on the grid), so the noise RMS is `noise_rms`.
    ambient_gain /= np.sqrt(np.trapezoid(ambient_gain**2, grid) / grid[-1])
    noise_rms = rms(source) * 10.0 ** (-snr_db / 20.0)
    # Both responses are smooth: interpolating their product is much cheaper than evaluating it per bin.
    noise_shape = np.interp(np.fft.rfftfreq(n, 1.0 / device_hz), grid, ambient_gain * device.gain(grid))
    # A real spectrum of n points with per-bin power n/2 * s^2 has time-domain variance s^2.
    spectrum = _random_spectrum(rng, n // 2 + 1)
    spectrum *= (noise_shape * (noise_rms * math.sqrt(n / 2))).astype(np.float32)
    source_freqs = np.fft.rfftfreq(source.size, 1.0 / source_hz)
    path = chest.gain(source_freqs) * device.gain(source_freqs) * factor
    spectrum[: source_freqs.size] += np.fft.rfft(source) * path
    return np.fft.irfft(spectrum, n)


def _log_grid(rate: int, points: int = 1024) -> np.ndarray:
    """0 Hz then log-spaced frequencies from 1 Hz to the Nyquist frequency: where smooth responses are sampled."""
    return np.concatenate(([0.0], np.geomspace(1.0, rate / 2, points)))


def add_waveforms(signal: np.ndarray, onsets: np.ndarray, waveforms: np.ndarray) -> None:
    """Add each row of `waveforms` into `signal` starting at the matching onset sample (in place).

    Parts that fall outside the signal are dropped, so events may straddle the recording's edges.
    """
    if len(onsets) == 0:
        return
    index = np.asarray(onsets, dtype=np.int64)[:, None] + np.arange(waveforms.shape[1])
    inside = (index >= 0) & (index < signal.size)
    np.add.at(signal, index[inside], waveforms[inside])


def damped_sines(rate: int, freqs_hz: np.ndarray, decays_s: np.ndarray, length: int) -> np.ndarray:
    """One decaying sinusoid per row, ``exp(-t/decay) sin(2 pi f t)``: the shape of a crackle or a thump."""
    t = np.arange(length) / rate
    return np.exp(-t / decays_s[:, None]) * np.sin(2 * np.pi * freqs_hz[:, None] * t)


def gaussian_bursts(
    rate: int, freqs_hz: np.ndarray, widths_s: np.ndarray, length: int, phases: np.ndarray
) -> np.ndarray:
    """One Gaussian-windowed sinusoid per row, centred in the row: the shape of a heart sound component."""
    t = (np.arange(length) - length / 2) / rate
    window = np.exp(-0.5 * (t / widths_s[:, None]) ** 2)
    return window * np.sin(2 * np.pi * freqs_hz[:, None] * t + phases[:, None])


def harmonic_tone(
    rate: int, length: int, start_hz: float, end_hz: float, harmonic_levels: tuple[float, ...]
) -> np.ndarray:
    """A tone gliding from `start_hz` to `end_hz` with harmonics, unit peak envelope, soft 40 ms edges.

    Harmonics at or above 90 % of the Nyquist frequency are left out rather than aliased.
    """
    t = np.arange(length) / rate
    freq = start_hz + (end_hz - start_hz) * t / max(t[-1], 1e-9)
    phase = 2 * np.pi * np.cumsum(freq) / rate
    tone = np.zeros(length)
    for number, level in enumerate(harmonic_levels, start=1):
        if number * max(start_hz, end_hz) < 0.45 * rate:
            tone += level * np.sin(number * phase)
    return tone * tukey_window(length, round(0.04 * rate))


def tukey_window(length: int, ramp: int) -> np.ndarray:
    """Flat window with raised-cosine ramps of `ramp` samples at both ends."""
    window = np.ones(length)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        window[:ramp] = edge
        window[length - ramp :] = edge[::-1]
    return window


def position_in_intervals(
    times: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each time: the index of the sorted interval it falls in, whether it is inside, and its
    relative position 0..1 in that interval. Vectorised lookup used to shape per-cycle envelopes."""
    index = np.searchsorted(starts, times, side="right") - 1
    safe = np.clip(index, 0, len(starts) - 1)
    span = np.maximum(ends[safe] - starts[safe], 1e-9)
    position = (times - starts[safe]) / span
    inside = (index >= 0) & (position >= 0) & (position < 1)
    return safe, inside, np.clip(position, 0.0, 1.0)


def mains_hum(rng: np.random.Generator, n: int, rate: int, mains_hz: float) -> np.ndarray:
    """Unit-RMS mains interference: the fundamental and its odd harmonics with random levels and phases."""
    t = np.arange(n) / rate
    hum = np.zeros(n)
    for number, level in ((1, 1.0), (3, rng.uniform(0.1, 0.6)), (5, rng.uniform(0.0, 0.3))):
        if number * mains_hz < 0.45 * rate:
            hum += level * np.sin(2 * np.pi * number * mains_hz * t + rng.uniform(0, 2 * np.pi))
    return hum / rms(hum)


def handling_noise(rng: np.random.Generator, n: int, rate: int, count: int) -> np.ndarray:
    """Stethoscope movement: `count` events, each a low thump or a broadband rub (friction) burst.

    Amplitudes are relative: a thump peaks near 1, a rub has RMS near 0.3. Rubs are 30-200 ms of
    band-passed noise, long and noisy enough to be told apart from crackles, yet crackle-like to
    a crude detector, which is what makes them a useful nuisance.
    """
    noise = np.zeros(n)
    if count == 0:
        return noise
    is_rub = rng.random(count) < 0.5
    onsets = rng.integers(0, n, count)
    thumps = damped_sines(rate, rng.uniform(15, 60, count), rng.uniform(0.02, 0.08, count), round(0.3 * rate))
    add_waveforms(noise, onsets[~is_rub], thumps[~is_rub] * rng.uniform(0.5, 1.5, (~is_rub).sum())[:, None])
    friction = colored_noise(rng, n, rate, Response(highpass_hz=150, lowpass_hz=1500))
    envelope = np.zeros(n)
    lengths = np.round(rng.uniform(0.03, 0.2, is_rub.sum()) * rate).astype(int)
    for onset, length in zip(onsets[is_rub], lengths):
        stop = min(onset + length, n)
        envelope[onset:stop] = 0.3 * np.hanning(length)[: stop - onset]
    return noise + friction * envelope
