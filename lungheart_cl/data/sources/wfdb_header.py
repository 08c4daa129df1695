"""The part of the WFDB header format (`.hea`) that the PhysioNet 2016 and CirCor 2022 readers need.

A header is a record line ``name nsig fs nsamples``, one line per signal (file name, format, gain, ...,
description) and ``#`` comment lines. Both datasets store each PCG signal in its own `.wav` and use
the header to declare its sampling frequency and length, which is what `probe_against_header` checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lungheart_cl.data.audio import AudioInfo, probe_audio
from lungheart_cl.data.records import DataError

# fs may carry a counter frequency ("2000/1000") or an ADC base ("2000(0)"); only the number matters.
_FREQUENCY = re.compile(r"^(\d+(?:\.\d*)?)(?:[/(].*)?$")
# A signal line's description is its ninth field onwards (it may contain spaces).
_DESCRIPTION_FIELD = 8


@dataclass(frozen=True)
class WfdbSignal:
    """One signal line: the file holding the signal and its description (e.g. "PCG", "ECG")."""

    file_name: str
    description: str


@dataclass(frozen=True)
class WfdbHeader:
    """A parsed `.hea` file."""

    path: Path
    record_name: str
    sample_rate: float
    num_samples: int
    signals: tuple[WfdbSignal, ...]


def _parse_record_line(path: Path, line: str) -> tuple[str, int, float, int]:
    fields = line.split()
    if len(fields) < 4:
        raise DataError(path, f"record line {line!r} must give name, signal count, sampling frequency and length")
    frequency = _FREQUENCY.match(fields[2])
    if not (fields[1].isdigit() and frequency and fields[3].isdigit()):
        raise DataError(path, f"malformed record line {line!r}")
    # "name/segments" is a multi-segment record; the name alone identifies it.
    return fields[0].split("/")[0], int(fields[1]), float(frequency.group(1)), int(fields[3])


def _parse_signal_line(line: str) -> WfdbSignal:
    fields = line.split()
    return WfdbSignal(fields[0], " ".join(fields[_DESCRIPTION_FIELD:]))


def read_wfdb_header(path: Path) -> WfdbHeader:
    """Parse a `.hea` file; raises DataError when it is missing, malformed or names another record."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "WFDB header is missing")
    # splitlines() also strips the CRLF endings both datasets' headers use.
    lines = [line.strip() for line in path.read_text(encoding="ascii", errors="replace").splitlines()]
    content = [line for line in lines if line and not line.startswith("#")]
    if not content:
        raise DataError(path, "WFDB header has no record line")
    name, num_signals, sample_rate, num_samples = _parse_record_line(path, content[0])
    if name != path.stem:
        raise DataError(path, f"record line names record {name!r}, not {path.stem!r}")
    if len(content) - 1 != num_signals:
        raise DataError(path, f"record line declares {num_signals} signals but {len(content) - 1} signal lines follow")
    signals = tuple(_parse_signal_line(line) for line in content[1:])
    return WfdbHeader(path, name, sample_rate, num_samples, signals)


def probe_against_header(header: WfdbHeader, audio_path: Path) -> AudioInfo:
    """`probe_audio` plus the header's promises: it lists the file, and rate and length agree."""
    audio_path = Path(audio_path)
    if audio_path.name not in {signal.file_name for signal in header.signals}:
        raise DataError(header.path, f"lists no signal file {audio_path.name}")
    info = probe_audio(audio_path)
    if info.sample_rate != header.sample_rate:
        raise DataError(
            audio_path,
            f"sample rate {info.sample_rate} Hz differs from the {header.sample_rate:g} Hz "
            f"declared in {header.path.name}",
        )
    if info.num_frames != header.num_samples:
        raise DataError(
            audio_path,
            f"{info.num_frames} frames differ from the {header.num_samples} samples declared in {header.path.name}",
        )
    return info
