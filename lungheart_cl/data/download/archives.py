"""Archives: checked from their index before anything is written (no escape from the root, no reserved
name, a bounded unpacked size, and for a whole-project archive exactly the listed files), then unpacked
into a staging folder inside the root and moved into place."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from types import MappingProxyType
from typing import Literal

from lungheart_cl.data.download.checksums import Sums, stream_sha256
from lungheart_cl.data.download.errors import ArchiveListingError, ChecksumError, DownloadError, UnsafeArchiveError
from lungheart_cl.data.download.job import DOWNLOADS_DIR, RECORD_NAME, REPLACED_PREFIX, STAGING_PREFIX, Job, say
from lungheart_cl.data.sources.catalogue import RemoteFile

# What a corrupt archive raises while its index or its members are read.
ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error)
# Python's own tar 'data' filter (3.10.12+) also strips setuid bits; our checks already refuse escapes.
TAR_FILTER: Mapping[str, str] = MappingProxyType(
    {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
)


# --- checked from their index, before anything is written --------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One archive entry as its index declares it."""

    name: str
    size: int  # declared unpacked bytes: zipfile and tarfile never write more than this
    is_file: bool
    link: str | None = None  # a tar link's target
    special: bool = False  # a tar device or fifo


_ArchiveKind = Literal["zip", "tar"]


def _archive_kind(path: Path) -> _ArchiveKind | None:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


def _entries(archive: Path, kind: _ArchiveKind) -> Iterator[_Entry]:
    """The archive's entries, read lazily (a tar's next header is read only when asked for)."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as handle:
            for info in handle.infolist():
                yield _Entry(info.filename, info.file_size, not info.is_dir())
        return
    with tarfile.open(archive) as handle:
        for member in handle:
            link = member.linkname if member.issym() or member.islnk() else None
            special = not (member.isfile() or member.isdir() or link is not None)
            size = member.size if member.isfile() else 0
            yield _Entry(member.name, size, member.isfile(), link, special)


def _file_digests(archive: Path, kind: _ArchiveKind) -> Iterator[tuple[str, str]]:
    """(entry name, SHA256) of every file in the archive, streamed from it without writing anything."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as handle:
            for info in handle.infolist():
                if not info.is_dir():
                    with handle.open(info) as member:
                        yield info.filename, stream_sha256(member)
        return
    with tarfile.open(archive) as handle:
        for member in handle:
            if member.isfile():
                data = handle.extractfile(member)
                assert data is not None  # a regular file always has data
                yield member.name, stream_sha256(data)


def _parts(name: str) -> list[str]:
    """An entry's path components as extraction sees them ('' and '.' dropped, as zipfile does)."""
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]


def _inspect(archive: Path, kind: _ArchiveKind, job: Job) -> list[_Entry]:
    """Every entry of ``archive``, checked from its index before anything is written: no path or link out
    of root, no device, no reserved top-level name, and a declared unpacked size within bounds."""
    bound, why = _unpack_bound(archive, job)
    total, entries = 0, []
    with closing(_entries(archive, kind)) as listing:
        for entry in listing:
            _check_entry(archive, entry, job.root)
            total += entry.size
            if total > bound:
                declared = f"brings the declared unpacked size to {_human(total)}, more than {why}"
                raise UnsafeArchiveError(archive, entry.name, declared)
            entries.append(entry)
    return entries


def _unpack_bound(archive: Path, job: Job) -> tuple[int, str]:
    """The most ``archive`` may unpack to, and why: the limits, or the free space where it unpacks."""
    limits, size, free = job.limits, archive.stat().st_size, shutil.disk_usage(job.root).free
    return min(
        (limits.max_bytes, f"the limit of {_human(limits.max_bytes)}"),
        (int(limits.max_ratio * size), f"{limits.max_ratio:g} times the archive's own {_human(size)}"),
        (free, f"the {_human(free)} free on the disk holding {job.root}"),
        key=lambda bound: bound[0],
    )


def _check_entry(archive: Path, entry: _Entry, root: Path) -> None:
    _check_path(archive, entry.name, entry.name, root)
    if entry.link is not None:
        _check_path(archive, entry.name, entry.link, root, link=True)
    if entry.special:
        raise UnsafeArchiveError(archive, entry.name, "is a device or fifo")
    top = next(iter(_parts(entry.name)), None)
    if top is not None and _is_reserved(top):
        reserved = f"would replace {root / top}, which the downloader reserves for itself"
        raise UnsafeArchiveError(archive, entry.name, reserved)


def _is_reserved(name: str) -> bool:
    """Top-level names the downloader itself uses in root (its downloads, record and staging folders)."""
    name = name.casefold()  # also on case-insensitive file systems
    return name in (DOWNLOADS_DIR, RECORD_NAME) or name.startswith((STAGING_PREFIX, REPLACED_PREFIX))


def _check_path(archive: Path, entry: str, path: str, root: Path, *, link: bool = False) -> None:
    """Refuse absolute paths and any '..' (in names and link targets): with no '..' anywhere, no chain of
    links created by the same archive can climb out either."""
    what = f"links to {path!r}, which" if link else "is a path that"
    if path.startswith(("/", "\\")) or PureWindowsPath(path).drive:
        raise UnsafeArchiveError(archive, entry, f"{what} is absolute, so it could land outside {root}")
    if ".." in path.replace("\\", "/").split("/"):
        escape = f"{what} climbs up with '..', so it could land outside {root}"
        raise UnsafeArchiveError(archive, entry, escape)


def _verify_listing(
    archive: Path, kind: _ArchiveKind, top: str, entries: Iterable[_Entry], sums: Sums
) -> None:
    """Before anything is written: the files under ``top/`` must be exactly those the checksum list
    names (plus the archive's own copy of the list), and each must have its listed SHA256 (the copy:
    the downloaded list's). Any difference deletes the archive."""
    present: set[str] = set()
    unlisted: list[str] = []
    for entry in (entry for entry in entries if entry.is_file):
        parts = _parts(entry.name)
        relative = "/".join(parts[1:])
        if parts[:1] != [top] or (relative not in sums.digests and relative != sums.name):
            unlisted.append(entry.name)
        else:
            present.add(relative)
    missing = sorted(set(sums.digests) - present)
    if unlisted or missing:
        archive.unlink()
        raise ArchiveListingError(archive, sums.url, unlisted, missing)
    copy = f"it holds no copy of {sums.name}"
    for name, actual in _file_digests(archive, kind):
        relative = "/".join(_parts(name)[1:])
        # PhysioNet's list leaves itself out; the archive's copy must equal the list downloaded beside it.
        expected = sums.sha256 if relative == sums.name else sums.digests[relative]
        if actual != expected:
            archive.unlink()
            raise ChecksumError(f"{archive.name}: {name}", expected, actual)
        if relative == sums.name:
            copy = f"its own copy of {sums.name} is identical to the one downloaded from {sums.url}"
    say(
        f"{archive.name}: all {len(sums.digests)} files listed in {sums.name} are there with their listed "
        f"SHA256, and nothing else (checked inside the archive, before unpacking); {copy}"
    )



# --- unpacking ----------------------------------------------------------------------------------------


def install(job: Job, downloaded: list[tuple[RemoteFile, Path]], sums: Sums | None) -> None:
    """Unpack or copy every download into a staging folder inside root, then move it all into place,
    so an interrupted run never leaves half a dataset where the readers look."""
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=job.root))
    try:
        for file, path in downloaded:
            _unpack(job, file, path, staging, sums)
        for entry in sorted(staging.iterdir()):
            _replace(entry, job.root / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(job: Job, file: RemoteFile, path: Path, dest: Path, sums: Sums | None) -> None:
    """Check an archive from its index (and its listing, for a whole-project archive), then extract it
    into ``dest``; copy any other file there."""
    kind = _archive_kind(path)
    if kind is None:
        shutil.copy2(path, dest / path.name)
        return
    try:
        entries = _inspect(path, kind, job)
        if file.sums_root:
            assert sums is not None  # DatasetSource refuses a sums_root without a checksum list
            _verify_listing(path, kind, file.sums_root, entries, sums)
        if kind == "zip":
            with zipfile.ZipFile(path) as handle:
                handle.extractall(dest)
        else:
            with tarfile.open(path) as handle:
                handle.extractall(dest, **TAR_FILTER)
    except ARCHIVE_ERRORS as error:
        # Without a published checksum, a broken archive is how a bad download shows itself.
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{path}: not a readable archive ({error}); it was deleted, re-run to fetch it again"
        ) from error


def _replace(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, swapping out an existing one (a stale or partial earlier unpack)."""
    if not (target.exists() or target.is_symlink()):
        os.replace(source, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=REPLACED_PREFIX, dir=target.parent))
    try:
        os.replace(target, trash / target.name)
        os.replace(source, target)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _human(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} bytes"
