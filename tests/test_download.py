"""The downloader against a real HTTP server on 127.0.0.1 (Range support, cut-offs, corruption, hostile
archives, checksum lists that do not match, files without a published checksum)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lungheart_cl.cli import main as cli_main
from lungheart_cl.data.download import (
    DOWNLOADS_DIR,
    RECORD_NAME,
    ArchiveListingError,
    ChangedDownloadError,
    ChecksumError,
    DownloadError,
    UnpackLimits,
    UnsafeArchiveError,
    download_dataset,
    find_dataset_root,
    manual_instructions,
)
from lungheart_cl.data.sources.catalogue import DatasetSource, RemoteFile, dataset_source, downloadable, with_base_url

TIMEOUT_S = 2.0


@dataclass
class FakeServer:
    """What the test HTTP server serves and how it misbehaves; it records (path, Range) per request."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False
    cut_after: int | None = None
    corrupt: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def ranges(self, path: str) -> list[str | None]:
        return [header for seen, header in self.requests if seen == path]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state: FakeServer = self.server.state  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if state.corrupt:
            body = bytes(byte ^ 0xFF for byte in body)
        start = 0
        if range_header and not state.ignore_range:
            start = int(range_header.removeprefix("bytes=").removesuffix("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        # HTTP/1.0: the connection closes after this, so a cut-off leaves the client short of bytes.
        self.wfile.write(payload if state.cut_after is None else payload[: state.cut_after])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FakeServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = FakeServer(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state  # type: ignore[attr-defined]
    # A short poll interval keeps shutdown() (which waits one poll) from slowing every test.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as handle:
        for name, data in entries.items():
            handle.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: list[tarfile.TarInfo], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as handle:
        for member in members:
            handle.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return buffer.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, linkname
    member.size = 1 if kind == tarfile.REGTYPE else 0
    return member


RECORDING = os.urandom(200_000)  # incompressible, so the archive is big enough to cut in half
LABELS = b"rec1,normal\n"
ARCHIVE = zip_bytes({"tiny_db/rec1.wav": RECORDING, "tiny_db/rec1.txt": b"0.0\t1.0\t0\t0\n"})


def tiny_source(archive_sha256: str | None = sha256(ARCHIVE)) -> DatasetSource:
    """An ICBHI-shaped test entry: one zip with a folder plus one plain file, at official-looking URLs."""
    return DatasetSource(
        name="tiny",
        title="Tiny test dataset",
        homepage="https://example.org/tiny",
        files=(
            RemoteFile("tiny.zip", "https://example.org/data/tiny.zip", sha256=archive_sha256),
            RemoteFile("tiny_labels.txt", "https://example.org/data/tiny_labels.txt"),
        ),
        layout=("tiny_db/rec1.wav", "tiny_labels.txt"),
        license="test licence",
        citation="test citation",
    )


@pytest.fixture
def tiny(server: FakeServer) -> DatasetSource:
    server.files.update({"/data/tiny.zip": ARCHIVE, "/data/tiny_labels.txt": LABELS})
    return tiny_source()


def fetch(source: DatasetSource, root: Path, server: FakeServer, **kwargs: object) -> Path:
    return download_dataset(source, root, base_url=server.url, timeout=TIMEOUT_S, **kwargs)


def visible_entries(root: Path) -> list[str]:
    """What is in root besides .downloads and the download record (staging folders would show up here)."""
    return sorted(path.name for path in root.iterdir() if path.name not in (DOWNLOADS_DIR, RECORD_NAME))


def record(root: Path) -> dict[str, dict[str, object]]:
    return json.loads((root / RECORD_NAME).read_text())


def test_downloads_verifies_unpacks_and_then_skips(tmp_path: Path, server: FakeServer, tiny: DatasetSource):
    root = tmp_path / "root"
    assert fetch(tiny, root, server) == root
    assert (root / "tiny_db" / "rec1.wav").read_bytes() == RECORDING
    assert (root / "tiny_labels.txt").read_bytes() == LABELS
    assert (root / DOWNLOADS_DIR / "tiny.zip").read_bytes() == ARCHIVE
    assert not list((root / DOWNLOADS_DIR).glob("*.part"))
    assert visible_entries(root) == ["tiny_db", "tiny_labels.txt"]
    seen = len(server.requests)
    assert fetch(tiny, root, server) == root
    assert len(server.requests) == seen, "a complete dataset must not be fetched again"


def test_force_fetches_and_unpacks_again(tmp_path: Path, server: FakeServer, tiny: DatasetSource):
    root = tmp_path / "root"
    fetch(tiny, root, server)
    (root / "tiny_db" / "rec1.wav").write_bytes(b"edited")
    fetch(tiny, root, server, force=True)
    assert server.ranges("/data/tiny.zip") == [None, None]
    assert (root / "tiny_db" / "rec1.wav").read_bytes() == RECORDING
    assert visible_entries(root) == ["tiny_db", "tiny_labels.txt"]


def test_cut_off_download_keeps_part_and_resumes_with_range(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource
):
    root = tmp_path / "root"
    half = len(ARCHIVE) // 2
    server.cut_after = half
    with pytest.raises(DownloadError, match=f"closed after {half} of {len(ARCHIVE)} bytes"):
        fetch(tiny, root, server)
    downloads = root / DOWNLOADS_DIR
    assert (downloads / "tiny.zip.part").stat().st_size == half
    assert not (downloads / "tiny.zip").exists()
    assert visible_entries(root) == []

    server.cut_after = None
    assert fetch(tiny, root, server) == root
    assert server.ranges("/data/tiny.zip") == [None, f"bytes={half}-"]
    assert (downloads / "tiny.zip").read_bytes() == ARCHIVE
    assert not (downloads / "tiny.zip.part").exists()
    assert (root / "tiny_db" / "rec1.wav").read_bytes() == RECORDING


def test_server_ignoring_range_restarts_the_file_cleanly(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource
):
    root = tmp_path / "root"
    (root / DOWNLOADS_DIR).mkdir(parents=True)
    (root / DOWNLOADS_DIR / "tiny.zip.part").write_bytes(b"\0" * 1000)
    server.ignore_range = True
    fetch(tiny, root, server)
    assert server.ranges("/data/tiny.zip") == ["bytes=1000-"]
    assert (root / DOWNLOADS_DIR / "tiny.zip").read_bytes() == ARCHIVE


def test_complete_part_file_is_finished_without_refetching(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource
):
    root = tmp_path / "root"
    (root / DOWNLOADS_DIR).mkdir(parents=True)
    (root / DOWNLOADS_DIR / "tiny.zip.part").write_bytes(ARCHIVE)  # run stopped before verification
    fetch(tiny, root, server)
    assert server.ranges("/data/tiny.zip") == [f"bytes={len(ARCHIVE)}-"]  # answered 416
    assert (root / "tiny_db" / "rec1.wav").read_bytes() == RECORDING


def test_corrupted_download_fails_the_checksum_and_leaves_no_file(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource
):
    root = tmp_path / "root"
    server.corrupt = True
    with pytest.raises(ChecksumError) as caught:
        fetch(tiny, root, server)
    corrupted = bytes(byte ^ 0xFF for byte in ARCHIVE)
    message = str(caught.value)
    assert "tiny.zip" in message and sha256(ARCHIVE) in message and sha256(corrupted) in message
    assert list((root / DOWNLOADS_DIR).iterdir()) == []
    assert visible_entries(root) == []


def test_wrong_file_placed_by_hand_is_detected(tmp_path: Path, server: FakeServer, tiny: DatasetSource):
    root = tmp_path / "root"
    (root / DOWNLOADS_DIR).mkdir(parents=True)
    (root / DOWNLOADS_DIR / "tiny.zip").write_bytes(b"not the archive")
    with pytest.raises(ChecksumError, match=sha256(b"not the archive")):
        fetch(tiny, root, server)
    assert not (root / DOWNLOADS_DIR / "tiny.zip").exists()


def _unsafe_archives(outside: Path) -> dict[str, tuple[str, bytes, str]]:
    """name -> (archive file name, archive bytes, the entry that must be named in the error)."""
    absolute = str(outside / "evil.txt")
    return {
        "zip-dotdot": ("bad.zip", zip_bytes({"ok/a.txt": b"a", "../evil.txt": b"evil"}), "../evil.txt"),
        "tar-absolute": ("bad.tar.gz", tar_bytes([tar_member("ok/a.txt"), tar_member(absolute)]), absolute),
        "tar-symlink-escape": (
            "bad.tar.gz",
            # From <root>/<staging>/ok/, four levels up is tmp_path: the link would reach outside/.
            tar_bytes(
                [
                    tar_member("ok/link", tarfile.SYMTYPE, "../../../../outside"),
                    tar_member("ok/link/evil.txt"),
                ]
            ),
            "ok/link",
        ),
        "tar-hardlink-absolute": (
            "bad.tar",
            tar_bytes([tar_member("ok/passwd", tarfile.LNKTYPE, "/etc/passwd")], mode="w"),
            "ok/passwd",
        ),
    }


@pytest.mark.parametrize(
    "case", ["zip-dotdot", "tar-absolute", "tar-symlink-escape", "tar-hardlink-absolute"]
)
def test_unsafe_archives_are_refused(tmp_path: Path, server: FakeServer, case: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "sandbox" / "root"
    name, data, entry = _unsafe_archives(outside)[case]
    server.files[f"/data/{name}"] = data
    source = DatasetSource(
        name="bad",
        title="Hostile archive",
        homepage="https://example.org/bad",
        files=(RemoteFile(name, f"https://example.org/data/{name}", sha256=sha256(data)),),
        layout=("ok/a.txt",),
        license="test",
        citation="test",
    )
    with pytest.raises(UnsafeArchiveError) as caught:
        fetch(source, root, server)
    assert repr(entry) in str(caught.value)
    assert list(outside.iterdir()) == []
    assert sorted(path.name for path in (tmp_path / "sandbox").iterdir()) == ["root"]
    assert visible_entries(root) == [], "nothing of a refused archive may be left in root"


def test_unreachable_server_gives_actionable_offline_message(tmp_path: Path, tiny: DatasetSource):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = tmp_path / "root"
    started = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        download_dataset(tiny, root, base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT_S)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"http://127.0.0.1:{port}/data/tiny.zip" in message
    assert "offline" in message
    assert str(root / DOWNLOADS_DIR / "tiny.zip") in message
    assert "tiny_db/rec1.wav" in message and "tiny_labels.txt" in message
    assert f"lungheart-cl data inspect --dataset tiny --root {root}" in message


def test_silent_server_times_out_instead_of_hanging(tmp_path: Path, tiny: DatasetSource):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(DownloadError, match="offline"):
            download_dataset(tiny, tmp_path / "root", base_url=f"http://127.0.0.1:{port}", timeout=0.3)
        assert time.monotonic() - started < 3


def test_http_error_names_the_status_and_the_manual_steps(tmp_path: Path, server: FakeServer):
    with pytest.raises(DownloadError, match="HTTP 404") as caught:
        fetch(tiny_source(), tmp_path / "root", server)
    assert "lungheart-cl data inspect --dataset tiny" in str(caught.value)


def physionet_like(server: FakeServer, members: dict[str, bytes], sums: dict[str, str]) -> DatasetSource:
    """A PhysioNet-shaped entry: a whole-project zip with a top folder, checked against SHA256SUMS.txt."""
    server.files["/files/proj/1.0/SHA256SUMS.txt"] = "".join(
        f"{digest}  {path}\n" for path, digest in sums.items()
    ).encode()
    archive = zip_bytes({f"proj-1.0/{path}": data for path, data in members.items()})
    server.files["/static/proj-1.0.zip"] = archive
    return DatasetSource(
        name="proj",
        title="PhysioNet-shaped test project",
        homepage="https://example.org/proj",
        files=(RemoteFile("proj-1.0.zip", "https://example.org/static/proj-1.0.zip", sums_root="proj-1.0"),),
        layout=("training_data", "training_data.csv"),
        license="test",
        citation="test",
        sha256sums=RemoteFile("SHA256SUMS.txt", "https://example.org/files/proj/1.0/SHA256SUMS.txt"),
    )


MEMBERS = {"training_data/1_AV.wav": RECORDING, "training_data.csv": b"Patient ID\n1\n"}


def test_published_sums_verify_the_files_in_the_archive(tmp_path: Path, server: FakeServer):
    source = physionet_like(server, MEMBERS, {path: sha256(data) for path, data in MEMBERS.items()})
    root = tmp_path / "root"
    assert fetch(source, root, server) == root / "proj-1.0"
    assert find_dataset_root(source, root) == root / "proj-1.0"


def test_published_sums_mismatch_names_the_member_and_installs_nothing(tmp_path: Path, server: FakeServer):
    sums = {"training_data/1_AV.wav": sha256(RECORDING), "training_data.csv": sha256(b"other")}
    source = physionet_like(server, MEMBERS, sums)
    root = tmp_path / "root"
    with pytest.raises(ChecksumError) as caught:
        fetch(source, root, server)
    message = str(caught.value)
    assert "training_data.csv" in message and sha256(b"other") in message
    assert sha256(MEMBERS["training_data.csv"]) in message
    assert not (root / DOWNLOADS_DIR / "proj-1.0.zip").exists()
    assert visible_entries(root) == []


def test_published_sums_check_a_listed_archive(tmp_path: Path, server: FakeServer, tiny: DatasetSource):
    server.files["/sums/SHA256SUMS.txt"] = f"{sha256(b'something else')}  tiny.zip\n".encode()
    listed = RemoteFile("tiny.zip", "https://example.org/data/tiny.zip", sums_path="tiny.zip")
    source = replace(
        tiny,
        files=(listed, tiny.files[1]),
        sha256sums=RemoteFile("SHA256SUMS.txt", "https://example.org/sums/SHA256SUMS.txt"),
    )
    with pytest.raises(ChecksumError, match=sha256(ARCHIVE)):
        fetch(source, tmp_path / "root", server)


def test_archive_missing_from_published_sums_warns_and_downloads_unverified(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource
):
    server.files["/sums/SHA256SUMS.txt"] = f"{sha256(b'x')}  other.zip\n".encode()
    listed = RemoteFile("tiny.zip", "https://example.org/data/tiny.zip", sums_path="tiny.zip")
    source = replace(
        tiny,
        files=(listed, tiny.files[1]),
        sha256sums=RemoteFile("SHA256SUMS.txt", "https://example.org/sums/SHA256SUMS.txt"),
    )
    with pytest.warns(UserWarning, match="tiny.zip is not listed"):
        assert fetch(source, tmp_path / "root", server) == tmp_path / "root"


def test_every_dataset_of_the_package_with_official_archives_declares_them():
    assert downloadable() == ("circor2022", "icbhi", "physionet2016")


@pytest.mark.parametrize("name", downloadable())
def test_registry_entries_are_complete(name: str):
    source = dataset_source(name)
    assert source.name == name
    urls = [file.url for file in source.files]
    assert all(url.startswith("https://") for url in urls)
    assert source.layout and source.license and source.citation
    text = manual_instructions(name, "/data/x")
    assert all(url in text for url in urls)
    assert all(entry in text for entry in source.layout)
    assert f"lungheart-cl data inspect --dataset {name} --root /data/x" in text
    # PhysioNet publishes SHA256SUMS.txt per project version; ICBHI publishes no checksums.
    assert (source.sha256sums is not None) == (name != "icbhi")


def test_unknown_dataset_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        download_dataset("nope", tmp_path)


def test_base_url_keeps_the_official_paths():
    mirrored = with_base_url(dataset_source("physionet2016"), "http://mirror.example/pn/")
    assert mirrored.files[0].url == "http://mirror.example/pn/files/challenge-2016/1.0.0/training.zip"
    assert mirrored.sha256sums is not None
    assert mirrored.sha256sums.url == "http://mirror.example/pn/files/challenge-2016/1.0.0/SHA256SUMS.txt"


# --- whole-project archives: the listing is checked against SHA256SUMS.txt before anything is written ---


def serve_project(
    server: FakeServer, files: dict[str, bytes], sums: dict[str, str], pinned_sums: str | None = None
) -> DatasetSource:
    """Like `physionet_like`, but the archive holds exactly ``files`` (paths inside the zip, as given)."""
    source = physionet_like(server, {}, sums)
    server.files["/static/proj-1.0.zip"] = zip_bytes(files)
    return replace(source, sha256sums=replace(source.sha256sums, sha256=pinned_sums))


LISTED = {path: sha256(data) for path, data in MEMBERS.items()}
PROJECT = {f"proj-1.0/{path}": data for path, data in MEMBERS.items()}


def sums_text(sums: dict[str, str]) -> bytes:
    """PhysioNet's format: one space between digest and path."""
    return "".join(f"{digest} {path}\n" for path, digest in sums.items()).encode()


def test_member_mismatch_is_found_before_anything_is_extracted(
    tmp_path: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch
):
    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("the archive was extracted before its members were verified")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_extraction)
    monkeypatch.setattr(zipfile.ZipFile, "extract", no_extraction)
    source = serve_project(server, PROJECT, {**LISTED, "training_data.csv": sha256(b"other")})
    with pytest.raises(ChecksumError, match="proj-1.0/training_data.csv"):
        fetch(source, tmp_path / "root", server)


@pytest.mark.parametrize("extra", ["proj-1.0/training_data/run_me.sh", "elsewhere/notes.txt"])
def test_unlisted_archive_member_is_refused_not_installed(tmp_path: Path, server: FakeServer, extra: str):
    source = serve_project(server, {**PROJECT, extra: b"not in the release"}, LISTED)
    root = tmp_path / "root"
    with pytest.raises(ArchiveListingError) as caught:
        fetch(source, root, server)
    assert "1 file(s) the list does not name" in str(caught.value) and extra in str(caught.value)
    assert caught.value.unlisted == [extra] and caught.value.missing == []
    assert visible_entries(root) == []
    assert not (root / DOWNLOADS_DIR / "proj-1.0.zip").exists()


def test_listed_file_missing_from_the_archive_is_refused(tmp_path: Path, server: FakeServer):
    source = serve_project(server, PROJECT, {**LISTED, "training_data/2_MV.wav": sha256(b"gone")})
    root = tmp_path / "root"
    with pytest.raises(ArchiveListingError, match=r"1 listed file\(s\) missing \(training_data/2_MV.wav\)"):
        fetch(source, root, server)
    assert visible_entries(root) == []


def test_archive_copy_of_the_checksum_list_must_equal_the_downloaded_one(
    tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
):
    matching = serve_project(server, {**PROJECT, "proj-1.0/SHA256SUMS.txt": sums_text(LISTED)}, LISTED)
    server.files["/files/proj/1.0/SHA256SUMS.txt"] = sums_text(LISTED)
    assert fetch(matching, tmp_path / "good", server) == tmp_path / "good" / "proj-1.0"
    err = capsys.readouterr().err
    assert "all 2 files listed in SHA256SUMS.txt are there with their listed SHA256, and nothing else" in err
    assert "its own copy of SHA256SUMS.txt is identical" in err

    tampered = sums_text({**LISTED, "training_data/1_AV.wav": sha256(b"x")})
    serve_project(server, {**PROJECT, "proj-1.0/SHA256SUMS.txt": tampered}, LISTED)
    server.files["/files/proj/1.0/SHA256SUMS.txt"] = sums_text(LISTED)
    with pytest.raises(ChecksumError, match="proj-1.0/SHA256SUMS.txt") as caught:
        fetch(matching, tmp_path / "bad", server)
    assert caught.value.actual == sha256(tampered)
    assert visible_entries(tmp_path / "bad") == []


def test_a_pinned_checksum_list_is_verified(tmp_path: Path, server: FakeServer):
    source = serve_project(server, PROJECT, LISTED, pinned_sums=sha256(b"the release's list"))
    with pytest.raises(ChecksumError, match="SHA256SUMS.txt: SHA256 mismatch"):
        fetch(source, tmp_path / "root", server)
    assert not (tmp_path / "root" / DOWNLOADS_DIR / "SHA256SUMS.txt").exists()


def test_an_unpinned_checksum_list_is_reported_recorded_and_a_changed_one_refused(
    tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
):
    source = serve_project(server, PROJECT, LISTED)
    listing = server.files["/files/proj/1.0/SHA256SUMS.txt"]
    root = tmp_path / "root"
    fetch(source, root, server)
    err = capsys.readouterr().err
    assert f"SHA256SUMS.txt: SHA256 {sha256(listing)}, {len(listing)} bytes. No checksum is published" in err
    assert "trusted as downloaded from 127.0.0.1" in err
    assert record(root)["SHA256SUMS.txt"]["sha256"] == sha256(listing)
    assert "proj-1.0.zip" not in record(root), "its files are checked instead, so a rebuilt zip is fine"

    # Later the server sends other bytes (here the same digests, spaced differently): refused.
    server.files["/files/proj/1.0/SHA256SUMS.txt"] = sums_text(LISTED)
    shutil.rmtree(root / "proj-1.0")
    shutil.rmtree(root / DOWNLOADS_DIR)
    with pytest.raises(ChangedDownloadError, match="re-run with --force"):
        fetch(source, root, server)
    assert visible_entries(root) == []


# --- names the downloader reserves in root -------------------------------------------------------------


def hostile_source(server: FakeServer, name: str, data: bytes) -> DatasetSource:
    server.files[f"/data/{name}"] = data
    return DatasetSource(
        name="bad",
        title="Hostile archive",
        homepage="https://example.org/bad",
        files=(RemoteFile(name, f"https://example.org/data/{name}", sha256=sha256(data)),),
        layout=("ok/a.txt",),
        license="test",
        citation="test",
    )


@pytest.mark.parametrize(
    "entry", [".downloads/tiny.zip", "./.downloads/tiny.zip", ".DOWNLOADS/x", RECORD_NAME, ".unpack-x/a"]
)
def test_archive_entries_on_reserved_names_are_refused(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource, entry: str
):
    root = tmp_path / "root"
    fetch(tiny, root, server)
    kept = [root / DOWNLOADS_DIR / "tiny.zip", root / DOWNLOADS_DIR / "tiny_labels.txt", root / RECORD_NAME]
    before = {path: path.read_bytes() for path in kept if path.exists()}
    source = hostile_source(server, "bad.zip", zip_bytes({"ok/a.txt": b"a", entry: b"evil"}))
    with pytest.raises(UnsafeArchiveError, match="which the downloader reserves for itself") as caught:
        fetch(source, root, server)
    assert caught.value.entry == entry
    assert {path: path.read_bytes() for path in kept} == before, "verified downloads and the record stay"
    assert visible_entries(root) == ["tiny_db", "tiny_labels.txt"]


# --- declared unpacked size ----------------------------------------------------------------------------

ZEROS = bytes(50 * 10**6)  # 50 MB of zeros compress to about 50 kB


def tar_gz_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as handle:
        for name, data in entries.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            handle.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, data",
    [
        ("bomb.zip", zip_bytes({"ok/a.txt": b"a", "ok/zeros.bin": ZEROS}, zipfile.ZIP_DEFLATED)),
        ("bomb.tar.gz", tar_gz_of({"ok/a.txt": b"a", "ok/zeros.bin": ZEROS})),
    ],
)
def test_archive_declaring_far_more_than_its_size_is_refused_before_writing(
    tmp_path: Path, server: FakeServer, name: str, data: bytes
):
    assert len(data) < 100_000
    root = tmp_path / "root"
    with pytest.raises(UnsafeArchiveError) as caught:
        fetch(hostile_source(server, name, data), root, server)
    message = str(caught.value)
    assert "'ok/zeros.bin' brings the declared unpacked size to 50.0 MB" in message
    assert "100 times the archive's own" in message
    assert visible_entries(root) == []


def test_archive_larger_than_the_limit_or_the_free_space_is_refused(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource, monkeypatch: pytest.MonkeyPatch
):
    with pytest.raises(UnsafeArchiveError, match="more than the limit of 100.0 kB"):
        fetch(tiny, tmp_path / "a", server, limits=UnpackLimits(max_bytes=100_000))
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real_usage(path)._replace(free=150_000))
    with pytest.raises(UnsafeArchiveError, match=f"the 150.0 kB free on the disk holding {tmp_path / 'b'}"):
        fetch(tiny, tmp_path / "b", server)
    assert visible_entries(tmp_path / "a") == visible_entries(tmp_path / "b") == []


# --- files without a published checksum (ICBHI): printed, recorded, and a changed one refused ---------


def test_unpublished_checksums_are_printed_and_recorded(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource, capsys: pytest.CaptureFixture[str]
):
    source = tiny_source(archive_sha256=None)
    root = tmp_path / "root"
    fetch(source, root, server)
    err = capsys.readouterr().err
    for name, data in (("tiny.zip", ARCHIVE), ("tiny_labels.txt", LABELS)):
        assert f"{name}: SHA256 {sha256(data)}, {len(data)} bytes. No checksum is published or pinned" in err
        entry = record(root)[name]
        assert (entry["sha256"], entry["size"]) == (sha256(data), len(data))
        assert entry["url"] == f"{server.url}/data/{name}"


def test_changed_unpublished_download_is_refused_unless_forced(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource, capsys: pytest.CaptureFixture[str]
):
    source = tiny_source(archive_sha256=None)
    root = tmp_path / "root"
    fetch(source, root, server)
    # The user frees space; meanwhile the server starts sending another archive.
    shutil.rmtree(root / DOWNLOADS_DIR)
    shutil.rmtree(root / "tiny_db")
    changed = zip_bytes({"tiny_db/rec1.wav": b"another recording"})
    server.files["/data/tiny.zip"] = changed
    with pytest.raises(ChangedDownloadError) as caught:
        fetch(source, root, server)
    message = str(caught.value)
    assert sha256(ARCHIVE) in message and sha256(changed) in message and "--force" in message
    assert not (root / DOWNLOADS_DIR / "tiny.zip").exists()
    assert visible_entries(root) == ["tiny_labels.txt"]
    assert record(root)["tiny.zip"]["sha256"] == sha256(ARCHIVE)

    capsys.readouterr()
    fetch(source, root, server, force=True)
    assert f"differs from SHA256 {sha256(ARCHIVE)}" in capsys.readouterr().err
    assert (root / "tiny_db" / "rec1.wav").read_bytes() == b"another recording"
    assert record(root)["tiny.zip"]["sha256"] == sha256(changed)


def test_wrong_unpublished_file_placed_by_hand_is_detected(
    tmp_path: Path, server: FakeServer, tiny: DatasetSource
):
    source = tiny_source(archive_sha256=None)
    root = tmp_path / "root"
    fetch(source, root, server)
    shutil.rmtree(root / "tiny_db")
    (root / DOWNLOADS_DIR / "tiny.zip").write_bytes(zip_bytes({"tiny_db/rec1.wav": b"hand-made"}))
    with pytest.raises(ChangedDownloadError):
        fetch(source, root, server)
    assert server.ranges("/data/tiny.zip") == [None], "the file in .downloads is checked, not fetched"


def test_cli_records_icbhi_and_refuses_a_changed_archive_until_forced(
    tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
):
    """The catalogue's ICBHI entry through `lungheart-cl data download`, served at the official paths
    (in-process: the CLI's parser imports Lightning, which takes seconds per subprocess)."""
    base = "/sites/default/files/ICBHI_final_database"
    texts = ("ICBHI_Challenge_demographic_information.txt", "ICBHI_Challenge_diagnosis.txt",
             "ICBHI_challenge_train_test.txt")
    server.files.update({f"{base}/{name}": b"101 x\n" for name in texts})
    first = zip_bytes({"ICBHI_final_database/101_1b1_Al_sc_Meditron.wav": RECORDING})
    server.files[f"{base}/ICBHI_final_database.zip"] = first
    root = tmp_path / "icbhi"
    args = ["data", "download", "--dataset", "icbhi", "--root", str(root), "--base-url", server.url]

    assert cli_main(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(root)
    assert f"ICBHI_final_database.zip: SHA256 {sha256(first)}, {len(first)} bytes." in err
    assert record(root)["ICBHI_final_database.zip"]["size"] == len(first)

    shutil.rmtree(root / DOWNLOADS_DIR)
    shutil.rmtree(root / "ICBHI_final_database")
    second = zip_bytes({"ICBHI_final_database/101_1b1_Al_sc_Meditron.wav": b"other"})
    server.files[f"{base}/ICBHI_final_database.zip"] = second
    assert cli_main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and "differs from the one recorded" in err and "re-run with --force" in err
    assert not (root / "ICBHI_final_database").exists()

    assert cli_main([*args, "--force"]) == 0
    assert "accepted because of --force" in capsys.readouterr().err
    assert record(root)["ICBHI_final_database.zip"]["sha256"] == sha256(second)


def test_both_physionet_datasets_share_one_root(tmp_path: Path, server: FakeServer):
    """The catalogue's PhysioNet entries at the official paths; each keeps its own SHA256SUMS.txt."""
    training = zip_bytes({f"training-{letter}/REFERENCE.csv": b"a0001,1\n" for letter in "abcdef"})
    server.files["/files/challenge-2016/1.0.0/training.zip"] = training
    server.files["/files/challenge-2016/1.0.0/SHA256SUMS.txt"] = sums_text({"training.zip": sha256(training)})
    top = "the-circor-digiscope-phonocardiogram-dataset-1.0.3"
    circor = {"training_data/13918_AV.wav": RECORDING, "training_data.csv": b"Patient ID\n13918\n"}
    server.files[f"/static/published-projects/circor-heart-sound/{top}.zip"] = zip_bytes(
        {f"{top}/{path}": data for path, data in circor.items()}
    )
    server.files["/files/circor-heart-sound/1.0.3/SHA256SUMS.txt"] = sums_text(
        {path: sha256(data) for path, data in circor.items()}
    )
    root = tmp_path / "data"
    assert download_dataset("physionet2016", root, base_url=server.url, timeout=TIMEOUT_S) == root
    assert download_dataset("circor2022", root, base_url=server.url, timeout=TIMEOUT_S) == root / top


def test_malformed_checksum_list_names_the_line(tmp_path: Path, server: FakeServer):
    source = serve_project(server, PROJECT, LISTED)
    server.files["/files/proj/1.0/SHA256SUMS.txt"] = sums_text(LISTED) + b"see the project page\n"
    with pytest.raises(DownloadError, match=r"SHA256SUMS.txt, line 3: not a 'SHA256 path' line"):
        fetch(source, tmp_path / "root", server)
    assert not (tmp_path / "root" / DOWNLOADS_DIR / "SHA256SUMS.txt").exists()
