"""Torch datasets over a segment cache. Workers only slice the memmap: no decoding, no spectrograms.

Waveforms are served in float16, the cache's precision; models convert them on the device.

Both datasets implement ``__getitems__`` so a DataLoader fetches a whole batch with one sorted
fancy-index read and returns ready-made batch tensors (see `collate_batch`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lungheart_cl.data.records import is_unknown

Manifest = dict[str, np.ndarray]
# "site": the recording's sub-database or campaign; "source": the run's source it came from (a pool's member)
METADATA_KEYS = ("patient", "recording", "location", "device", "site", "source", "age_group", "sex")
_MANIFEST_COLUMN = {"patient": "patient_id", "recording": "recording_id", "location": "location",
                    "device": "device", "site": "site", "source": "source", "age_group": "age_group", "sex": "sex"}
# An unknown value equals only itself: the same patient's (age group, sex) or the same recording's (the rest).
_UNKNOWN_SCOPE = {"age_group": "patient_id", "sex": "patient_id", "location": "recording_id",
                  "device": "recording_id", "site": "recording_id"}


def metadata_codes(manifest: Manifest) -> dict[str, np.ndarray]:
    """Integer code per segment for each metadata key (codes shared by all splits).

    Equal codes mean equal metadata to the loss (positives, restricted negatives). A missing value
    (`records.is_unknown`) is no value: its code is unique to its patient (age group, sex) or recording
    (location, device, site), so two unknowns of different patients are never "the same age group"."""
    codes = {}
    for key in METADATA_KEYS:
        values = manifest[_MANIFEST_COLUMN[key]]
        code = np.unique(values, return_inverse=True)[1].astype(np.int64)
        if key in _UNKNOWN_SCOPE:
            unknown = is_unknown(values)
            known = np.unique(values[~unknown], return_inverse=True)[1]
            scope = np.unique(manifest[_UNKNOWN_SCOPE[key]][unknown], return_inverse=True)[1]
            code[~unknown] = known
            code[unknown] = (known.max() + 1 if len(known) else 0) + scope
        codes[key] = code
    return codes


def collate_batch(batch: dict) -> dict:
    """The dataset already returns a batch; the DataLoader must not stack it again."""
    return batch


class SegmentStore:
    """Read-only access to the float16 segment memmap, opened lazily in each worker process."""

    def __init__(self, path: Path, shape: tuple[int, int]):
        self.path, self.shape = Path(path), tuple(shape)
        self._array: np.memmap | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape, "_array": None}  # never pickle the mapping

    def read(self, rows: np.ndarray) -> torch.Tensor:
        """float16 rows as stored: half the bytes through worker shared memory and host-to-device
        copies; the model converts to float32 on the device."""
        if self._array is None:
            self._array = np.memmap(self.path, dtype=np.float16, mode="r", shape=self.shape)
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")  # sorted reads walk the file forwards
        out = np.empty((len(rows), self.shape[1]), dtype=np.float16)
        out[order] = self._array[rows[order]]
        return torch.from_numpy(out)


class _CacheDataset(Dataset):
    def __init__(self, store: SegmentStore, manifest: Manifest, codes: dict[str, np.ndarray], labels: np.ndarray):
        self.store = store
        self.codes = {k: torch.from_numpy(v) for k, v in codes.items()}
        self.valid = torch.from_numpy(np.stack([manifest["valid_start"], manifest["valid_end"]], 1))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def _fields(self, rows: np.ndarray, prefix: str = "") -> dict:
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return {f"{prefix}wave": self.store.read(rows), f"{prefix}index": index,
                f"{prefix}valid": self.valid[index], f"{prefix}meta": {k: v[index] for k, v in self.codes.items()}}

    def __getitem__(self, item):  # single-item access, for inspection and tests
        return {k: v[0] if torch.is_tensor(v) else {m: t[0] for m, t in v.items()}
                for k, v in self.__getitems__([item]).items()}


class PairDataset(_CacheDataset):
    """Pretraining: batches of (anchor, partner) rows from `StratifiedPairSampler`."""

    def __len__(self) -> int:
        return self.store.shape[0]

    def __getitem__(self, item):
        return super().__getitem__(item if isinstance(item, tuple) else (item, item))

    def __getitems__(self, pairs: list[tuple[int, int]]) -> dict:
        pairs_array = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        batch = self._fields(pairs_array[:, 0])
        batch.update(self._fields(pairs_array[:, 1], prefix="partner_"))
        batch["label"] = self.labels[batch["index"]]
        return batch


class SegmentDataset(_CacheDataset):
    """Classification and evaluation: the given cache rows with their task labels."""

    def __init__(self, store: SegmentStore, manifest: Manifest, codes: dict[str, np.ndarray], labels: np.ndarray,
                 rows: np.ndarray):
        super().__init__(store, manifest, codes, labels)
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, items: list[int]) -> dict:
        batch = self._fields(self.rows[np.asarray(items, dtype=np.int64)])
        batch["label"] = self.labels[batch["index"]]
        return batch
