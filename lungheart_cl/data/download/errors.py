"""What can go wrong in a download: each error's message says what happened and what to do next."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lungheart_cl.errors import UserError


class DownloadError(UserError, RuntimeError):
    """A dataset could not be fetched, verified or unpacked; the message says what to do next."""


class ChecksumError(DownloadError):
    """A downloaded file (or a file inside a downloaded archive) does not have the published SHA256."""

    def __init__(self, label: str, expected: str, actual: str):
        self.label, self.expected, self.actual = label, expected, actual
        super().__init__(
            f"{label}: SHA256 mismatch: expected {expected}, got {actual}. "
            "The bad download was deleted; re-run to fetch it again."
        )


class ChangedDownloadError(ChecksumError):
    """A file without a published checksum differs from the one recorded at its first download."""

    def __init__(self, label: str, recorded: Mapping[str, object], actual: str, size: int, record: Path):
        self.label, self.expected, self.actual = label, str(recorded["sha256"]), actual
        DownloadError.__init__(
            self,
            f"{label}: this download (SHA256 {actual}, {size} bytes) differs from the one recorded in "
            f"{record} on {recorded['recorded']} (SHA256 {recorded['sha256']}, {recorded['size']} bytes). "
            "No checksum is published for it, so the change cannot be checked; the new download was "
            "deleted. If the publisher really changed the file, re-run with --force to accept it.",
        )


class UnsafeArchiveError(DownloadError):
    """An archive must not be unpacked (an entry could land outside the dataset root or on a reserved
    name, or its declared size is too large); nothing of it is written."""

    def __init__(self, archive: Path, entry: str, reason: str):
        self.archive, self.entry = archive, entry
        super().__init__(
            f"refusing to unpack {archive.name}: entry {entry!r} {reason}; nothing from this archive "
            "was written"
        )


class ArchiveListingError(DownloadError):
    """A whole-project archive does not hold exactly the files its checksum list names."""

    def __init__(self, archive: Path, listing: str, unlisted: list[str], missing: list[str]):
        self.archive, self.unlisted, self.missing = archive, unlisted, missing
        problems = [
            *([f"{len(unlisted)} file(s) the list does not name ({_few(unlisted)})"] if unlisted else []),
            *([f"{len(missing)} listed file(s) missing ({_few(missing)})"] if missing else []),
        ]
        super().__init__(
            f"{archive.name} does not match {listing}: {'; '.join(problems)}. Nothing was unpacked; the "
            "download was deleted, re-run to fetch it again."
        )


def _few(names: list[str], shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f", and {more} more" if more > 0 else "")
