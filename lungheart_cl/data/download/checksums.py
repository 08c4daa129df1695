"""Checksums: a published or pinned SHA256, the publisher's SHA256SUMS.txt, and trust on first use (the
download record) for files nobody publishes a checksum for."""

from __future__ import annotations

import hashlib
import json
import os
import string
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from lungheart_cl.data.download.errors import ChangedDownloadError, ChecksumError, DownloadError
from lungheart_cl.data.download.job import CHUNK_BYTES, Job, say
from lungheart_cl.data.sources.catalogue import RemoteFile


@dataclass(frozen=True)
class Sums:
    """The publisher's checksum list: {relative path: sha256}, the list file's own SHA256, and the
    list's file name on the server (the name a whole-project archive holds its own copy under)."""

    digests: Mapping[str, str]
    sha256: str
    name: str
    url: str


def stream_sha256(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return stream_sha256(handle)


def check(job: Job, file: RemoteFile, path: Path, expected: str | None) -> None:
    """Verify ``path`` against its published or pinned SHA256, else against its recorded first download
    (a whole-project archive is not recorded: every file inside it is checked when it is unpacked)."""
    if expected:
        _verify(path, expected, file.name)
    elif not file.sums_root:
        _check_against_record(job, file, path)


def _verify(path: Path, expected: str, label: str) -> None:
    """Delete ``path`` and raise `ChecksumError` unless its SHA256 is ``expected``."""
    actual = file_sha256(path)
    if actual != expected.lower():
        path.unlink()
        raise ChecksumError(label, expected.lower(), actual)


def _check_against_record(job: Job, file: RemoteFile, path: Path) -> None:
    """Trust on first use: print the SHA256 and size of a file nobody publishes a checksum for, record
    them beside the data, and refuse a later download that differs unless ``job.force``."""
    digest, size = file_sha256(path), path.stat().st_size
    record = _load_record(job.record)
    seen = record.get(file.name)
    line = f"{file.name}: SHA256 {digest}, {size} bytes"
    if seen is None:
        say(
            f"{line}. No checksum is published or pinned for it, so it is trusted as downloaded from "
            f"{urlsplit(file.url).netloc}; recorded in {job.record}, and a later download that differs "
            "is refused."
        )
    elif seen["sha256"] == digest:
        say(f"{line}, as recorded in {job.record} on {seen['recorded']}")
        return
    elif not job.force:
        path.unlink()
        raise ChangedDownloadError(file.name, seen, digest, size, job.record)
    else:
        say(
            f"{line}: differs from SHA256 {seen['sha256']} ({seen['size']} bytes) recorded on "
            f"{seen['recorded']}; accepted because of --force, and the record updated"
        )
    recorded = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record[file.name] = {"sha256": digest, "size": size, "url": file.url, "recorded": recorded}
    _save_record(job.record, record)


def _load_record(path: Path) -> dict[str, dict[str, object]]:
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        fields = {"sha256", "size", "recorded"}
        if not isinstance(record, dict) or not all(
            isinstance(entry, dict) and fields <= entry.keys() for entry in record.values()
        ):
            raise ValueError("expected {file name: {sha256, size, url, recorded}}")
    except (ValueError, UnicodeDecodeError) as error:
        raise DownloadError(
            f"{path}: not a download record ({error}); repair it, or delete it to forget the recorded "
            "checksums"
        ) from error
    return record


def _save_record(path: Path, record: Mapping[str, object]) -> None:
    """Write the record atomically, so an interrupted run never leaves half of it."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)



def parse_sums(path: Path) -> dict[str, str]:
    """``{path: sha256}`` from ``SHA256 path`` lines; a malformed file is deleted and named."""
    digests: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        path.unlink()
        raise DownloadError(f"{path}: not a text checksum list ({error}); it was deleted, re-run") from error
    for number, line in enumerate(lines, 1):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if len(fields) != 2 or len(fields[0]) != 64 or not set(fields[0]) <= set(string.hexdigits):
            path.unlink()
            raise DownloadError(
                f"{path}, line {number}: not a 'SHA256 path' line ({line[:80]!r}); it was deleted, re-run"
            )
        digests[fields[1].strip()] = fields[0].lower()
    return digests


def expected_sha256(file: RemoteFile, sums: Sums | None) -> str | None:
    if file.sha256:
        return file.sha256
    if file.sums_path is None or sums is None:
        return None
    if file.sums_path not in sums.digests:
        warnings.warn(
            f"{file.sums_path} is not listed in {sums.url}; checking it against its recorded first "
            "download instead",
            stacklevel=2,
        )
    return sums.digests.get(file.sums_path)
