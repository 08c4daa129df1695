"""Official-archive downloader: the fetcher, verifier and safe unpacker of any dataset's archives.

Each dataset declares its catalogue entry in its own module (`DatasetSpec.download`, a `DatasetSource`
of `lungheart_cl.data.sources.catalogue`: URLs, the layout the readers need, checksum source, licence).
`download_dataset` fetches every file into ``ROOT/.downloads/`` (resumable ``NAME.part`` files, renamed
only once complete and verified; `transfer`). A file with a published or pinned SHA256 must match it; one
without (ICBHI publishes none, nor does PhysioNet for its SHA256SUMS.txt) has its SHA256 and size printed
and recorded in ``ROOT/download-record.json`` at the first download, and a later download that differs is
refused unless forced. Every archive is checked from its index before anything is written: no entry
may land outside ROOT or on a name the downloader reserves, and the declared unpacked size is bounded.
A whole-project archive checked against the publisher's SHA256SUMS.txt must hold exactly the listed
files, each matching, before it is unpacked. Archives unpack into a hidden staging folder inside ROOT;
the result is moved into place and the layout checked (`archives`). Any network failure raises
`DownloadError` carrying `manual_instructions`, for machines without internet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError
from urllib.parse import urlsplit

from lungheart_cl.data.download.archives import install
from lungheart_cl.data.download.checksums import Sums, check, expected_sha256, file_sha256, parse_sums
from lungheart_cl.data.download.errors import (ArchiveListingError, ChangedDownloadError, ChecksumError,
                                               DownloadError, UnsafeArchiveError)
from lungheart_cl.data.download.job import (DEFAULT_TIMEOUT_S, DOWNLOADS_DIR, RECORD_NAME, UNPACK_LIMITS, Job,
                                            UnpackLimits)
from lungheart_cl.data.download.transfer import NETWORK_ERRORS, stream
from lungheart_cl.data.sources.catalogue import DatasetSource, RemoteFile, dataset_source, with_base_url

__all__ = ["DOWNLOADS_DIR", "RECORD_NAME", "ArchiveListingError", "ChangedDownloadError", "ChecksumError",
           "DownloadError", "UnpackLimits", "UnsafeArchiveError", "download_dataset", "find_dataset_root",
           "manual_instructions"]


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
    job = Job(source, Path(root), force, timeout, limits)
    if not force and (found := find_dataset_root(source, job.root)) is not None:
        return found
    job.downloads.mkdir(parents=True, exist_ok=True)
    sums = _published_sums(job)
    downloaded = [(file, _obtain(job, file, expected_sha256(file, sums))) for file in source.files]
    install(job, downloaded, sums)
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


def _obtain(job: Job, file: RemoteFile, expected: str | None) -> Path:
    """The verified file in .downloads, fetched (or resumed) unless already complete there."""
    final = job.downloads / file.name
    part = final.with_name(final.name + ".part")
    if job.force:
        final.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    if final.exists():
        check(job, file, final, expected)  # also catches a wrong file put there by hand
        return final
    _fetch(job, file, part)
    check(job, file, part, expected)
    # Only now does the final name appear: a file under it is always complete and verified.
    os.replace(part, final)
    return final


def _fetch(job: Job, file: RemoteFile, part: Path) -> None:
    """Stream ``file`` into ``part``, turning network failures into actionable `DownloadError`s."""
    try:
        stream(file.url, part, job.timeout)
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


def _published_sums(job: Job) -> Sums | None:
    """The publisher's SHA256SUMS.txt, fetched into .downloads once and checked like any other file."""
    listing = job.source.sha256sums
    if listing is None:
        return None
    path = _obtain(job, listing, listing.sha256)
    name = PurePosixPath(urlsplit(listing.url).path).name
    return Sums(parse_sums(path), file_sha256(path), name, listing.url)
