"""One download's settings, the names the downloader keeps in a dataset root, and its one line to the user."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from lungheart_cl.data.sources.catalogue import DatasetSource

DOWNLOADS_DIR = ".downloads"
# SHA256 and size of every file no checksum is published for, recorded at its first download.
RECORD_NAME = "download-record.json"
STAGING_PREFIX, REPLACED_PREFIX = ".unpack-", ".replaced-"
DEFAULT_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class UnpackLimits:
    """The most an archive may declare it unpacks to: ``max_bytes`` in all, and ``max_ratio`` times its
    own size (the real archives unpack to under twice their size; a zip bomb to hundreds of times)."""

    max_bytes: int = 64 * 10**9
    max_ratio: float = 100.0


UNPACK_LIMITS = UnpackLimits()


@dataclass(frozen=True)
class Job:
    """One `download_dataset` call's settings, passed to the helpers instead of five arguments."""

    source: DatasetSource
    root: Path
    force: bool
    timeout: float
    limits: UnpackLimits

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS_DIR

    @property
    def record(self) -> Path:
        return self.root / RECORD_NAME


def say(message: str) -> None:
    """One line for the user on stderr (stdout carries only the dataset folder)."""
    print(message, file=sys.stderr, flush=True)
