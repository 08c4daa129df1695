"""The download catalogue: what each registered dataset declares about where its files come from
(``DatasetSpec.download``, a `DatasetSource` in the dataset's own module) and the lookups over the
registry. `lungheart_cl.data.download` fetches, verifies and unpacks what an entry names."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

from lungheart_cl.data.sources import dataset_names, get_spec


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


def downloadable() -> tuple[str, ...]:
    """The registered datasets that declare a download entry."""
    return tuple(name for name in dataset_names() if get_spec(name).download is not None)


def dataset_source(dataset: str | DatasetSource) -> DatasetSource:
    """The download entry of a registered dataset (a `DatasetSource` is returned as is)."""
    if isinstance(dataset, DatasetSource):
        return dataset
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
