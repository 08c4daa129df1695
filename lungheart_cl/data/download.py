"""Official-archive downloader for ICBHI 2017, PhysioNet/CinC 2016 and CirCor 2022.

`SOURCES` is the registry (plain data: URLs, the layout the readers need, checksum source, licence).
`download_dataset` fetches every file into ``ROOT/.downloads/`` (resumable ``NAME.part`` files, renamed
only once complete and verified), unpacks the archives into a hidden staging folder inside ROOT,
refusing any entry that could land outside ROOT, moves the result into place and checks the layout.
Any network failure raises `DownloadError` carrying `manual_instructions`, for machines without internet.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import ssl
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PureWindowsPath
from types import MappingProxyType
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import Request, urlopen

from tqdm import tqdm

from lungheart_cl.errors import UserError

DOWNLOADS_DIR = ".downloads"
DEFAULT_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20
USER_AGENT = "lungheart-cl-downloader (python urllib)"
# What a dropped, refused, timed-out or unresolvable connection raises (HTTPError is handled first).
NETWORK_ERRORS = (URLError, TimeoutError, ConnectionError, ssl.SSLError, http.client.HTTPException)
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


class UnsafeArchiveError(DownloadError):
    """An archive entry could be written outside the dataset root; nothing of that archive is kept."""

    def __init__(self, archive: Path, entry: str, reason: str, root: Path):
        self.archive, self.entry = archive, entry
        super().__init__(
            f"refusing to unpack {archive.name}: entry {entry!r} {reason}, so it could land outside "
            f"{root}; nothing from this archive was kept"
        )


@dataclass(frozen=True)
class RemoteFile:
    """One file a publisher serves, saved as ``ROOT/.downloads/<name>``.

    ``sha256`` pins a checksum; ``sums_path`` names the file's line in the publisher's SHA256SUMS.txt;
    ``sums_root`` is the folder inside this archive that the SHA256SUMS.txt paths are relative to
    (PhysioNet's whole-project zips are not listed themselves, but every file inside them is).
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


_ICBHI_FILES = "https://bhichallenge.med.auth.gr/sites/default/files/ICBHI_final_database"
_PN2016 = "https://physionet.org/files/challenge-2016/1.0.0"
_CIRCOR = "https://physionet.org/files/circor-heart-sound/1.0.3"
_CIRCOR_TOP = "the-circor-digiscope-phonocardiogram-dataset-1.0.3"
_ICBHI_TEXTS = (
    "ICBHI_Challenge_demographic_information.txt",
    "ICBHI_Challenge_diagnosis.txt",
    "ICBHI_challenge_train_test.txt",
)

SOURCES: Mapping[str, DatasetSource] = MappingProxyType(
    {
        # ICBHI publishes no checksums. Its server has served an incomplete TLS chain at times; we keep
        # certificate checks on, and a failure there ends in the manual instructions.
        "icbhi": DatasetSource(
            name="icbhi",
            title="ICBHI 2017 Respiratory Sound Database",
            homepage="https://bhichallenge.med.auth.gr/ICBHI_2017_Challenge",
            files=(
                RemoteFile("ICBHI_final_database.zip", f"{_ICBHI_FILES}/ICBHI_final_database.zip"),
                *(RemoteFile(name, f"{_ICBHI_FILES}/{name}") for name in _ICBHI_TEXTS),
            ),
            layout=("ICBHI_final_database", *_ICBHI_TEXTS),
            license="Freely available for research (ICBHI challenge site; no licence file is published)",
            citation=(
                "Rocha BM, Filos D, Mendes L, et al. An open access database for the evaluation of "
                "respiratory sound classification algorithms. Physiol Meas. 2019;40(3):035001. "
                "doi:10.1088/1361-6579/ab03ea"
            ),
        ),
        # training.zip (~170 MB, training-a..f) is a file of the project, so SHA256SUMS.txt lists it.
        "physionet2016": DatasetSource(
            name="physionet2016",
            title="PhysioNet/CinC Challenge 2016: Classification of Heart Sound Recordings (1.0.0)",
            homepage="https://physionet.org/content/challenge-2016/1.0.0/",
            files=(RemoteFile("training.zip", f"{_PN2016}/training.zip", sums_path="training.zip"),),
            layout=tuple(f"training-{letter}/REFERENCE.csv" for letter in "abcdef"),
            # Licence as shown on the PhysioNet project page (not re-checked offline).
            license="Open Data Commons Attribution License v1.0",
            citation=(
                "Liu C, Springer D, Li Q, et al. An open access database for the evaluation of heart "
                "sound algorithms. Physiol Meas. 2016;37(12):2181-2213. doi:10.1088/0967-3334/37/12/2181; "
                "and the standard PhysioNet citation (Goldberger et al., Circulation 2000;101(23):e215-e220)"
            ),
            sha256sums=RemoteFile("SHA256SUMS.txt", f"{_PN2016}/SHA256SUMS.txt"),
        ),
        # The whole-project zip is not in SHA256SUMS.txt, so its unpacked files are checked instead.
        "circor2022": DatasetSource(
            name="circor2022",
            title="The CirCor DigiScope Phonocardiogram Dataset (1.0.3)",
            homepage="https://physionet.org/content/circor-heart-sound/1.0.3/",
            files=(
                RemoteFile(
                    f"{_CIRCOR_TOP}.zip",
                    f"https://physionet.org/static/published-projects/circor-heart-sound/{_CIRCOR_TOP}.zip",
                    sums_root=_CIRCOR_TOP,
                ),
            ),
            layout=("training_data", "training_data.csv"),
            # Licence as shown on the PhysioNet project page (not re-checked offline).
            license="Open Data Commons Attribution License v1.0",
            citation=(
                "Oliveira J, Renna F, Costa P, et al. The CirCor DigiScope Phonocardiogram Dataset "
                "(version 1.0.3). PhysioNet, 2022. doi:10.13026/tshs-mw03; and Oliveira J, et al. The "
                "CirCor DigiScope Dataset: From Murmur Detection to Murmur Classification. IEEE J Biomed "
                "Health Inform. 2022;26(6):2524-2535. doi:10.1109/JBHI.2021.3137048"
            ),
            sha256sums=RemoteFile("SHA256SUMS.txt", f"{_CIRCOR}/SHA256SUMS.txt"),
        ),
    }
)


@dataclass(frozen=True)
class _Job:
    """One `download_dataset` call's settings, passed to the helpers instead of five arguments."""

    source: DatasetSource
    root: Path
    force: bool
    timeout: float

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS_DIR


def dataset_source(dataset: str | DatasetSource) -> DatasetSource:
    """The registry entry of a dataset name (a `DatasetSource` is returned as is)."""
    if isinstance(dataset, DatasetSource):
        return dataset
    if dataset not in SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {tuple(SOURCES)}")
    return SOURCES[dataset]


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
        "  2. Re-run the download; it verifies what it finds in .downloads (where checksums are\n"
        "     published) and unpacks it without fetching again:\n"
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
) -> Path:
    """Download, verify and unpack a dataset under ``root``; returns the folder to point its reader at.

    Nothing is fetched when the layout is already there, unless ``force``. Files already complete in
    ``root/.downloads`` are re-verified, not fetched again; ``.part`` files are resumed. ``timeout``
    (seconds) bounds every connect and read. Raises `DownloadError` (network failure, with the manual
    steps), `ChecksumError` or `UnsafeArchiveError`.
    """
    source = dataset_source(dataset)
    if base_url is not None:
        source = with_base_url(source, base_url)
    job = _Job(source, Path(root), force, timeout)
    if not force and (found := find_dataset_root(source, job.root)) is not None:
        return found
    job.downloads.mkdir(parents=True, exist_ok=True)
    sums = _published_sums(job)
    downloaded = [(file, _obtain(job, file, _expected_sha256(file, sums, source))) for file in source.files]
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
        # Also catches a wrong file put there by hand.
        if expected:
            _verify(final, expected, file.name)
        return final
    _fetch(job, file, part)
    if expected:
        _verify(part, expected, file.name)
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected: str, label: str) -> None:
    """Delete ``path`` and raise `ChecksumError` unless its SHA256 is ``expected``."""
    actual = _sha256(path)
    if actual != expected.lower():
        path.unlink()
        raise ChecksumError(label, expected.lower(), actual)


def _published_sums(job: _Job) -> dict[str, str] | None:
    """The publisher's SHA256SUMS.txt as {relative path: sha256}, fetched into .downloads once."""
    if job.source.sha256sums is None:
        return None
    text = _obtain(job, job.source.sha256sums, None).read_text(encoding="utf-8")
    pairs = (line.split(maxsplit=1) for line in text.splitlines() if line.strip())
    return {path.strip(): digest.lower() for digest, path in pairs}


def _expected_sha256(file: RemoteFile, sums: Mapping[str, str] | None, source: DatasetSource) -> str | None:
    if file.sha256:
        return file.sha256
    if file.sums_path is None or sums is None:
        return None
    if file.sums_path not in sums:
        warnings.warn(
            f"{file.sums_path} is not listed in {source.sha256sums.url}; downloading it unverified",
            stacklevel=2,
        )
    return sums.get(file.sums_path)


def _verify_members(folder: Path, sums: Mapping[str, str], archive: Path) -> None:
    """Check every unpacked file the SHA256SUMS.txt lists; a mismatch deletes the archive."""
    checked = 0
    for relative, expected in sums.items():
        member = folder / relative
        if not member.is_file():
            continue  # the list may name files an archive leaves out; the layout check covers what matters
        actual = _sha256(member)
        if actual != expected:
            archive.unlink()
            raise ChecksumError(f"{archive.name}: {relative}", expected, actual)
        checked += 1
    if not checked:
        raise DownloadError(
            f"{archive.name}: none of the files listed in SHA256SUMS.txt is under {folder.name}/ after "
            "unpacking, so it cannot be verified"
        )


# --- unpacking ----------------------------------------------------------------------------------------


def _install(
    job: _Job, downloaded: list[tuple[RemoteFile, Path]], sums: Mapping[str, str] | None
) -> None:
    """Unpack or copy every download into a staging folder inside root, then move it all into place,
    so an interrupted run never leaves half a dataset where the readers look."""
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=job.root))
    try:
        for file, path in downloaded:
            _unpack(path, staging, job.root)
            if file.sums_root and sums:
                _verify_members(staging / file.sums_root, sums, path)
        for entry in sorted(staging.iterdir()):
            _replace(entry, job.root / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(path: Path, dest: Path, root: Path) -> None:
    """Extract a zip or tar archive into ``dest``; copy any other file there."""
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            _extract_zip(path, dest, root)
        elif name.endswith((".tar", ".tar.gz", ".tgz")):
            _extract_tar(path, dest, root)
        else:
            shutil.copy2(path, dest / path.name)
    except (zipfile.BadZipFile, tarfile.ReadError, tarfile.CompressionError, EOFError) as error:
        # Without a published checksum, a broken archive is how a bad download shows itself.
        path.unlink()
        raise DownloadError(
            f"{path}: not a readable archive ({error}); it was deleted, re-run to fetch it again"
        ) from error


def _extract_zip(archive: Path, dest: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as handle:
        for info in handle.infolist():
            _check_path(archive, info.filename, info.filename, root)
        handle.extractall(dest)


def _extract_tar(archive: Path, dest: Path, root: Path) -> None:
    with tarfile.open(archive) as handle:
        for member in handle.getmembers():
            _check_path(archive, member.name, member.name, root)
            if member.issym() or member.islnk():
                _check_path(archive, member.name, member.linkname, root, link=True)
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(archive, member.name, "is a device or fifo", root)
        handle.extractall(dest, **TAR_FILTER)


def _check_path(archive: Path, entry: str, path: str, root: Path, *, link: bool = False) -> None:
    """Refuse absolute paths and any '..' (in names and link targets): with no '..' anywhere, no chain of
    links created by the same archive can climb out either."""
    what = f"links to {path!r}, which" if link else "is a path that"
    if path.startswith(("/", "\\")) or PureWindowsPath(path).drive:
        raise UnsafeArchiveError(archive, entry, f"{what} is absolute", root)
    if ".." in path.replace("\\", "/").split("/"):
        raise UnsafeArchiveError(archive, entry, f"{what} climbs up with '..'", root)


def _replace(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, swapping out an existing one (a stale or partial earlier unpack)."""
    if not (target.exists() or target.is_symlink()):
        os.replace(source, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=".replaced-", dir=target.parent))
    try:
        os.replace(target, trash / target.name)
        os.replace(source, target)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
