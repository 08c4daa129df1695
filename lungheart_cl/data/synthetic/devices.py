"""Stethoscopes and the recording chain: what happens to a sound between the chest and the file.

Each device has its own frequency response and picks up its own kind of ambient noise. Every
patient has a chest wall that colours their sounds; every recording then gets its own noise level,
sometimes mains hum or handling noise, and a random gain. These nuisances are deliberately
stronger, in spectral energy, than the sounds that carry the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungheart_cl.data.synthetic.signals import Response, handling_noise, mains_hum, rms, to_device

# Recording level before the random gain; leaves headroom for heart-sound peaks at +10 dB.
NOMINAL_RMS_DBFS = -30.0
GAIN_RANGE_DB = 10.0
HUM_PROBABILITY = 0.15
HANDLING_PROBABILITY = 0.3


@dataclass(frozen=True)
class Device:
    """A stethoscope (or, for PhysioNet 2016, a source database's acquisition setup)."""

    response: Response
    ambient: Response  # spectrum of the room and body noise it picks up
    snr_db: tuple[float, float]  # range of source-to-ambient power ratios


ICBHI_DEVICES = {
    # Electronic stethoscope: fairly flat, a mild presence peak.
    "Meditron": Device(
        Response(highpass_hz=40, lowpass_hz=2000, tilt_db_per_octave=1.0, resonance_hz=250, resonance_db=4),
        Response(lowpass_hz=400, order=1),
        (15, 30),
    ),
    # Acoustic stethoscope with a microphone in the tube: tube resonance, little above 700 Hz.
    "LittC2SE": Device(
        Response(highpass_hz=30, lowpass_hz=700, order=3, resonance_hz=120, resonance_db=6, resonance_octaves=0.4),
        Response(lowpass_hz=300, order=1),
        (15, 30),
    ),
    # Electronic, diaphragm mode: emphasis on 100-500 Hz.
    "Litt3200": Device(
        Response(highpass_hz=100, lowpass_hz=900, resonance_hz=300, resonance_db=3),
        Response(lowpass_hz=300, order=1),
        (12, 28),
    ),
    # Lavalier condenser microphone: wide band, falling tilt, more room noise.
    "AKGC417L": Device(
        Response(highpass_hz=60, lowpass_hz=8000, order=1, tilt_db_per_octave=-1.5),
        Response(lowpass_hz=1000, order=1),
        (10, 25),
    ),
}

# PhysioNet 2016: one acquisition setup per source database (the devices the challenge paper
# names), all resampled to 2 kHz.
PHYSIONET_DEVICES = {
    "training-a": Device(  # Welch Allyn Meditron
        Response(highpass_hz=25, lowpass_hz=900, resonance_hz=200, resonance_db=3),
        Response(lowpass_hz=300, order=1),
        (10, 30),
    ),
    "training-b": Device(  # 3M Littmann E4000
        Response(highpass_hz=20, lowpass_hz=400, resonance_hz=100, resonance_db=5),
        Response(lowpass_hz=200, order=1),
        (8, 25),
    ),
    "training-c": Device(  # AUDIOSCOPE
        Response(highpass_hz=25, lowpass_hz=800, tilt_db_per_octave=2.0),
        Response(lowpass_hz=400, order=1),
        (10, 30),
    ),
    "training-d": Device(  # Infral prototype
        Response(highpass_hz=50, lowpass_hz=600, order=4, resonance_hz=200, resonance_db=-6),
        Response(lowpass_hz=300, order=1),
        (10, 28),
    ),
    "training-e": Device(  # MLT201 piezoelectric microphone
        Response(highpass_hz=80, lowpass_hz=900, order=1, tilt_db_per_octave=3.0),
        Response(lowpass_hz=500, order=1),
        (10, 30),
    ),
    "training-f": Device(  # JABES
        Response(highpass_hz=20, lowpass_hz=500, order=3, resonance_hz=150, resonance_db=4),
        Response(lowpass_hz=250, order=1),
        (10, 28),
    ),
}

# CirCor 2022 used the same electronic stethoscope as part of ICBHI.
CIRCOR_DEVICE = ICBHI_DEVICES["Litt3200"]


def chest_wall(rng: np.random.Generator) -> Response:
    """A patient's persistent timbre: a spectral tilt of up to +-4 dB/octave and one resonance or
    dip of 3-9 dB somewhere in 120-900 Hz."""
    return Response(
        tilt_db_per_octave=float(np.clip(rng.normal(0, 2), -4, 4)),
        resonance_hz=float(np.exp(rng.uniform(np.log(120), np.log(900)))),
        resonance_db=float(rng.uniform(3, 9) * rng.choice((-1, 1))),
        resonance_octaves=float(rng.uniform(0.3, 0.7)),
    )


def record(
    rng: np.random.Generator,
    source: np.ndarray,
    source_hz: int,
    device: Device,
    device_hz: int,
    *,
    chest: Response,
    snr_db: float | None = None,
) -> np.ndarray:
    """The samples a device writes for a sound at the chest: through the patient's `chest`, with
    handling noise and mains hum now and then, ambient noise at a random SNR (or `snr_db`), through
    the device's response, at a random gain of +-10 dB around -30 dBFS."""
    level = rms(source)
    if rng.random() < HANDLING_PROBABILITY:
        source = source + level * handling_noise(rng, source.size, source_hz, int(rng.integers(1, 5)))
    if rng.random() < HUM_PROBABILITY:
        mains_hz = 50.0 if rng.random() < 0.5 else 60.0
        source = source + level * rng.uniform(0.05, 0.3) * mains_hum(rng, source.size, source_hz, mains_hz)
    snr = rng.uniform(*device.snr_db) if snr_db is None else snr_db
    signal = to_device(
        rng, source, source_hz, device_hz, chest=chest, device=device.response, ambient=device.ambient, snr_db=snr
    )
    gain_db = NOMINAL_RMS_DBFS + rng.uniform(-GAIN_RANGE_DB, GAIN_RANGE_DB)
    return signal * (10.0 ** (gain_db / 20.0) / max(rms(signal), 1e-12))
