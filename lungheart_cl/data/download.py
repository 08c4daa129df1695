"""Official-archive downloader: the fetcher, verifier and safe unpacker of any dataset's archives.

Each dataset declares its catalogue entry in its own module (`DatasetSpec.download`, a `DatasetSource`:
URLs, the layout the readers need, checksum source, licence). `download_dataset` fetches every file
into ``ROOT/.downloads/`` (resumable ``NAME.part`` files, renamed only once complete and verified). A file with a published or pinned SHA256 must match it; one without
(ICBHI publishes none, nor does PhysioNet for its SHA256SUMS.txt) has its SHA256 and size printed and
recorded in ``ROOT/download-record.json`` at the first download, and a later download that differs is
refused unless forced. Every archive is checked from its index before anything is written: no entry
may land outside ROOT or on a name the downloader reserves, and the declared unpacked size is bounded.
A whole-project archive checked against the publisher's SHA256SUMS.txt must hold exactly the listed
files, each matching, before it is unpacked. Archives unpack into a hidden staging folder inside ROOT;
the result is moved into place and the layout checked. Any network failure raises `DownloadError`
carrying `manual_instructions`, for machines without internet.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import ssl
import string
import sys
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import IO, Literal
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import Request, urlopen

from tqdm import tqdm

from lungheart_cl.errors import UserError

DOWNLOADS_DIR = ".downloads"
# SHA256 and size of every file no checksum is published for, recorded at its first download.
RECORD_NAME = "download-record.json"
STAGING_PREFIX, REPLACED_PREFIX = ".unpack-", ".replaced-"
DEFAULT_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20
USER_AGENT = "lungheart-cl-downloader (python urllib)"
# What a dropped, refused, timed-out or unresolvable connection raises (HTTPError is handled first).
NETWORK_ERRORS = (URLError, TimeoutError, ConnectionError, ssl.SSLError, http.client.HTTPException)
# What a corrupt archive raises while its index or its members are read.
ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error)
# Python's own tar 'data' filter (3.10.12+) also strips setuid bits; our checks already refuse escapes.
TAR_FILTER: Mapping[str, str] = MappingProxyType(
    {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
)


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


@dataclass(frozen=True)
class UnpackLimits:
    """The most an archive may declare it unpacks to: ``max_bytes`` in all, and ``max_ratio`` times its
    own size (the real archives unpack to under twice their size; a zip bomb to hundreds of times)."""

    max_bytes: int = 64 * 10**9
    max_ratio: float = 100.0


UNPACK_LIMITS = UnpackLimits()


@dataclass(frozen=True)
class RemoteFile:
    """One file a publisher serves, saved as ``ROOT/.downloads/<name>``.

    ``sha256`` pins a checksum; ``sums_path`` names the file's line in the publisher's SHA256SUMS.txt;
    ``sums_root`` is the folder inside this archive that the SHA256SUMS.txt paths are relative to
    (PhysioNet's whole-project zips are not listed themselves, but every file inside them is, except
    SHA256SUMS.txt itself). A file with none of these is checked against its recorded first download.
    """

    name: str
    url: str
    sha256: str | None = None
    sums_path: str | None = None
    sums_root: str | None = None


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from and what its unpacked files must look like for the readers."""

    name: str
    title: str
    homepage: str
    files: tuple[RemoteFile, ...]
    layout: tuple[str, ...]  # paths the readers need, relative to the dataset root
    license: str
    citation: str
    sha256sums: RemoteFile | None = None  # the publisher's checksum list, where one is published

    def __post_init__(self) -> None:
        listed = [file.name for file in self.files if file.sums_path or file.sums_root]
        if listed and self.sha256sums is None:
            raise ValueError(f"{self.name}: {', '.join(listed)} refer to a checksum list, but none is set")


@dataclass(frozen=True)
class _Job:
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


def downloadable() -> tuple[str, ...]:
    """The registered datasets that declare a download entry."""
    from lungheart_cl.data.sources import dataset_names, get_spec

    return tuple(name for name in dataset_names() if get_spec(name).download is not None)


def dataset_source(dataset: str | DatasetSource) -> DatasetSource:
    """The download entry of a registered dataset (a `DatasetSource` is returned as is)."""
    if isinstance(dataset, DatasetSource):
        return dataset
    from lungheart_cl.data.sources import get_spec

    source = get_spec(dataset).download
    if source is None:
        raise ValueError(f"dataset {dataset!r} has no download entry; downloadable: {', '.join(downloadable())}")
    return source


def with_base_url(source: DatasetSource, base_url: str) -> DatasetSource:
    """The same source with every URL's scheme and host replaced by ``base_url`` (a mirror or test server);
    a path in ``base_url`` is prefixed to the official paths."""
    base = urlsplit(base_url)

    def rebase(file: RemoteFile) -> RemoteFile:
        path = base.path.rstrip("/") + urlsplit(file.url).path
        return replace(file, url=urlunsplit((base.scheme, base.netloc, path, "", "")))

    sums = rebase(source.sha256sums) if source.sha256sums else None
    return replace(source, files=tuple(rebase(file) for file in source.files), sha256sums=sums)


def manual_instructions(dataset: str | DatasetSource, root: Path | str) -> str:
    """Step-by-step instructions to fetch a dataset by hand and install it under ``root``."""
    source = dataset_source(dataset)
    root = Path(root)
    files = (*((source.sha256sums,) if source.sha256sums else ()), *source.files)
    fetch = "\n".join(f"       {file.url}\n         -> {root / DOWNLOADS_DIR / file.name}" for file in files)
    layout = "\n".join(f"       {entry}" for entry in source.layout)
    return (
        f"To install {source.title} by hand:\n"
        "  1. On a machine with internet access, fetch these files (browser, wget or curl) and copy\n"
        "     them to this machine under exactly these names:\n"
        f"{fetch}\n"
        "  2. Re-run the download; it verifies what it finds in .downloads (against the published\n"
        "     checksums, or records them where none are published) and unpacks it without fetching again:\n"
        f"       lungheart-cl data download --dataset {source.name} --root {root}\n"
        f"     or unpack the archives yourself so that {root} (or the folder an archive creates) holds:\n"
        f"{layout}\n"
        "  3. Check what the readers see (--root: the folder holding that layout):\n"
        f"       lungheart-cl data inspect --dataset {source.name} --root {root}\n"
        f"Homepage: {source.homepage}\nLicence: {source.license}\nPlease cite: {source.citation}"
    )


def find_dataset_root(dataset: str | DatasetSource, root: Path | str) -> Path | None:
    """The folder at or up to two levels below ``root`` that holds the dataset's full layout, else None
    (archives unpack with or without a top folder)."""
    source = dataset_source(dataset)
    for candidate in _candidate_roots(Path(root)):
        if not _missing_layout(source, candidate):
            return candidate
    return None


def download_dataset(
    dataset: str | DatasetSource,
    root: Path | str,
    *,
    base_url: str | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    limits: UnpackLimits = UNPACK_LIMITS,
) -> Path:
    """Download, verify and unpack a dataset under ``root``; returns the folder to point its reader at.

    Nothing is fetched when the layout is already there, unless ``force``. Files already complete in
    ``root/.downloads`` are re-verified, not fetched again; ``.part`` files are resumed. A file without a
    published checksum is checked against ``root/download-record.json``; ``force`` also accepts one that
    changed. ``timeout`` (seconds) bounds every connect and read; ``limits`` bounds what an archive may
    unpack to. Raises `DownloadError` (network failure, with the manual steps), `ChecksumError`
    (`ChangedDownloadError`), `ArchiveListingError` or `UnsafeArchiveError`.
    """
    source = dataset_source(dataset)
    if base_url is not None:
        source = with_base_url(source, base_url)
    job = _Job(source, Path(root), force, timeout, limits)
    if not force and (found := find_dataset_root(source, job.root)) is not None:
        return found
    job.downloads.mkdir(parents=True, exist_ok=True)
    sums = _published_sums(job)
    downloaded = [(file, _obtain(job, file, _expected_sha256(file, sums))) for file in source.files]
    _install(job, downloaded, sums)
    found = find_dataset_root(source, job.root)
    if found is None:
        missing = ", ".join(_missing_layout(source, job.root))
        raise DownloadError(
            f"{job.root}: the unpacked {source.name} files do not have the expected layout "
            f"(missing: {missing}).\n\n{manual_instructions(source, job.root)}"
        )
    return found


# --- layout -------------------------------------------------------------------------------------------


def _candidate_roots(root: Path) -> Iterator[Path]:
    """``root``, then its sub-folders, then theirs; hidden ones (.downloads, staging) are skipped."""
    level = [root]
    for _ in range(2):
        yield from level
        level = [
            child
            for folder in level
            if folder.is_dir()
            for child in sorted(folder.iterdir())
            if child.is_dir() and not child.name.startswith(".")
        ]
    yield from level


def _missing_layout(source: DatasetSource, candidate: Path) -> list[str]:
    return [entry for entry in source.layout if not (candidate / entry).exists()]


# --- downloading --------------------------------------------------------------------------------------


def _obtain(job: _Job, file: RemoteFile, expected: str | None) -> Path:
    """The verified file in .downloads, fetched (or resumed) unless already complete there."""
    final = job.downloads / file.name
    part = final.with_name(final.name + ".part")
    if job.force:
        final.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    if final.exists():
        _check(job, file, final, expected)  # also catches a wrong file put there by hand
        return final
    _fetch(job, file, part)
    _check(job, file, part, expected)
    # Only now does the final name appear: a file under it is always complete and verified.
    os.replace(part, final)
    return final


def _fetch(job: _Job, file: RemoteFile, part: Path) -> None:
    """Stream ``file`` into ``part``, turning network failures into actionable `DownloadError`s."""
    try:
        _stream(file.url, part, job.timeout)
    except HTTPError as error:
        raise DownloadError(
            f"{file.url}: the server answered HTTP {error.code} {error.reason}.\n\n"
            + manual_instructions(job.source, job.root)
        ) from error
    except NETWORK_ERRORS as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(
            f"could not download {file.url} ({reason}): this machine may be offline, or the server is "
            f"unreachable. Files already complete in {job.downloads} are kept and partial ones resume "
            f"on the next run.\n\n{manual_instructions(job.source, job.root)}"
        ) from error


def _stream(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range), or rewrite it when the server ignores Range."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as error:
        if error.code != 416 or not offset:
            raise
        error.close()
        # 416: nothing left after ``offset``; the .part is complete only if it is exactly the full size.
        if _content_range(error.headers.get("Content-Range"))[1] == offset:
            return
        part.unlink()
        return _stream(url, part, timeout)
    with response:
        start = offset if response.status == 206 else 0
        if start and _content_range(response.headers.get("Content-Range"))[0] != start:
            part.unlink()
            raise DownloadError(f"{url}: the server resumed at a wrong offset; {part} was deleted, re-run")
        total = _expected_total(response, start)
        # "wb" when the server ignored Range (200): the old partial bytes are dropped, not duplicated.
        with part.open("ab" if start else "wb") as out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.stem
        ) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(
            f"{url}: the connection closed after {size} of {total} bytes; {part} is kept and the next run "
            "resumes it"
        )


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, full size) of a ``Content-Range: bytes A-B/N`` (or ``bytes */N``) header."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, size = value.removeprefix("bytes ").partition("/")
    first = span.partition("-")[0]
    return (int(first) if first.isdigit() else None), (int(size) if size.isdigit() else None)


def _expected_total(response: http.client.HTTPResponse, start: int) -> int | None:
    """Full size of the file being fetched, when the server says it."""
    if start:
        return _content_range(response.headers.get("Content-Range"))[1]
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


# --- checksums ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sums:
    """The publisher's checksum list: {relative path: sha256}, the list file's own SHA256, and the
    list's file name on the server (the name a whole-project archive holds its own copy under)."""

    digests: Mapping[str, str]
    sha256: str
    name: str
    url: str


def _stream_sha256(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return _stream_sha256(handle)


def _check(job: _Job, file: RemoteFile, path: Path, expected: str | None) -> None:
    """Verify ``path`` against its published or pinned SHA256, else against its recorded first download
    (a whole-project archive is not recorded: every file inside it is checked when it is unpacked)."""
    if expected:
        _verify(path, expected, file.name)
    elif not file.sums_root:
        _check_against_record(job, file, path)


def _verify(path: Path, expected: str, label: str) -> None:
    """Delete ``path`` and raise `ChecksumError` unless its SHA256 is ``expected``."""
    actual = _sha256(path)
    if actual != expected.lower():
        path.unlink()
        raise ChecksumError(label, expected.lower(), actual)


def _check_against_record(job: _Job, file: RemoteFile, path: Path) -> None:
    """Trust on first use: print the SHA256 and size of a file nobody publishes a checksum for, record
    them beside the data, and refuse a later download that differs unless ``job.force``."""
    digest, size = _sha256(path), path.stat().st_size
    record = _load_record(job.record)
    seen = record.get(file.name)
    line = f"{file.name}: SHA256 {digest}, {size} bytes"
    if seen is None:
        _say(
            f"{line}. No checksum is published or pinned for it, so it is trusted as downloaded from "
            f"{urlsplit(file.url).netloc}; recorded in {job.record}, and a later download that differs "
            "is refused."
        )
    elif seen["sha256"] == digest:
        _say(f"{line}, as recorded in {job.record} on {seen['recorded']}")
        return
    elif not job.force:
        path.unlink()
        raise ChangedDownloadError(file.name, seen, digest, size, job.record)
    else:
        _say(
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


def _published_sums(job: _Job) -> _Sums | None:
    """The publisher's SHA256SUMS.txt, fetched into .downloads once and checked like any other file."""
    listing = job.source.sha256sums
    if listing is None:
        return None
    path = _obtain(job, listing, listing.sha256)
    name = PurePosixPath(urlsplit(listing.url).path).name
    return _Sums(_parse_sums(path), _sha256(path), name, listing.url)


def _parse_sums(path: Path) -> dict[str, str]:
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


def _expected_sha256(file: RemoteFile, sums: _Sums | None) -> str | None:
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


def _say(message: str) -> None:
    """One line for the user on stderr (stdout carries only the dataset folder)."""
    print(message, file=sys.stderr, flush=True)


# --- archives: checked from their index, before anything is written -----------------------------------


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
                        yield info.filename, _stream_sha256(member)
        return
    with tarfile.open(archive) as handle:
        for member in handle:
            if member.isfile():
                data = handle.extractfile(member)
                assert data is not None  # a regular file always has data
                yield member.name, _stream_sha256(data)


def _parts(name: str) -> list[str]:
    """An entry's path components as extraction sees them ('' and '.' dropped, as zipfile does)."""
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]


def _inspect(archive: Path, kind: _ArchiveKind, job: _Job) -> list[_Entry]:
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


def _unpack_bound(archive: Path, job: _Job) -> tuple[int, str]:
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
    archive: Path, kind: _ArchiveKind, top: str, entries: Iterable[_Entry], sums: _Sums
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
    _say(
        f"{archive.name}: all {len(sums.digests)} files listed in {sums.name} are there with their listed "
        f"SHA256, and nothing else (checked inside the archive, before unpacking); {copy}"
    )


# --- unpacking ----------------------------------------------------------------------------------------


def _install(job: _Job, downloaded: list[tuple[RemoteFile, Path]], sums: _Sums | None) -> None:
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


def _unpack(job: _Job, file: RemoteFile, path: Path, dest: Path, sums: _Sums | None) -> None:
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


def _few(names: list[str], shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f", and {more} more" if more > 0 else "")
