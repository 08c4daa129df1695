"""Writing files byte-compatible with the official releases, and the atomic output folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CRLF = "\r\n"
LF = "\n"


@contextmanager
def atomic_directory(root: Path) -> Iterator[Path]:
    """Yield an empty staging folder next to `root`; rename it to `root` only if the block succeeds.

    An interrupted or failed run leaves no `root` behind (only, after a hard kill, a hidden
    ``.{name}.partial-*`` folder), so a folder at `root` is always a complete dataset. An existing
    non-empty `root` is never replaced.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists and is not an empty folder; not overwriting it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        yield staging
        # Readers expect ordinary folder permissions, not mkdtemp's private 0o700.
        staging.chmod(0o755)
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_wav(path: Path, signal: np.ndarray, rate: int, bits: int) -> None:
    """Mono PCM WAV with the plain 44-byte header the real files have; `signal` is clipped to [-1, 1]."""
    if bits not in (16, 24):
        raise ValueError(f"bits must be 16 or 24, not {bits}")
    full_scale = 2 ** (bits - 1)
    samples = np.clip(np.rint(signal * full_scale), -full_scale, full_scale - 1).astype("<i4")
    if bits == 16:
        frames = samples.astype("<i2").tobytes()
    else:
        # 24-bit PCM is the low three bytes of each little-endian 32-bit sample.
        frames = samples.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(bits // 8)
        handle.setframerate(rate)
        handle.writeframes(frames)


def write_lines(path: Path, lines: list[str], *, newline: str = LF, final_newline: bool = True) -> None:
    """Text file of `lines` with the given line ending (ASCII, as every official metadata file)."""
    text = newline.join(lines) + (newline if final_newline and lines else "")
    path.write_bytes(text.encode("ascii"))


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, as PhysioNet's SHA256SUMS lists it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def format_number(value: float, decimals: int) -> str:
    """A number rounded to `decimals` places without trailing zeros: 0.614, 1.5, 12 (as the real files)."""
    return np.format_float_positional(round(value, decimals), precision=decimals, trim="-")
