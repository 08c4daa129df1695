"""HTTP transfer of one file into its ``.part``: resumed with Range, checked against the announced size."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

from lungheart_cl.data.download.errors import DownloadError
from lungheart_cl.data.download.job import CHUNK_BYTES

USER_AGENT = "lungheart-cl-downloader (python urllib)"
# What a dropped, refused, timed-out or unresolvable connection raises (HTTPError is handled first).
NETWORK_ERRORS = (URLError, TimeoutError, ConnectionError, ssl.SSLError, http.client.HTTPException)


def stream(url: str, part: Path, timeout: float) -> None:
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
        return stream(url, part, timeout)
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
