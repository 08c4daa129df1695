"""A frozen encoder's features by cache row: each row encoded once, then read back, kept across runs.

Linear and logistic probes never train the encoder, so a segment's features are the same in every
epoch and every run with the same encoder, front end and segment cache: `FrozenFeatureTable` holds
them on the device (NaN = not computed yet) and adds new rows to a `FeatureStore` on disk.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from lungheart_cl.feature_cache import FeatureStore

log = logging.getLogger(__name__)


class FrozenFeatureTable:
    """(cache rows, dim) features on `device`, filled from `store` (if any) at creation."""

    def __init__(self, size: int, dim: int, device: torch.device, store: FeatureStore | None):
        with torch.inference_mode(False):  # first used inside a validation or test loop, it must stay writable
            self.table = torch.full((size, dim), float("nan"), device=device)
            self.unsaved = torch.zeros(size, dtype=torch.bool)  # rows computed here, not yet in the store
        self.store = store
        if store is not None:
            rows, stored = store.load()
            self.table[torch.from_numpy(rows).to(device)] = torch.from_numpy(stored).to(device)

    def lookup(self, index: Tensor, encode: Callable[[Tensor], Tensor]) -> Tensor:
        """Features of the batch rows `index`; `encode(missing)` computes those of the rows not known yet
        (``missing`` a boolean mask over the batch)."""
        cached = self.table[index]
        missing = torch.isnan(cached[:, 0])
        if bool(missing.any()):
            cached[missing] = encode(missing)
            self.table[index] = cached
            self.unsaved[index[missing].cpu()] = True
        return cached

    def missing(self, rows: np.ndarray) -> np.ndarray:
        """Those of `rows` whose features are not known yet."""
        index = torch.as_tensor(np.array(rows), device=self.table.device)  # a writable copy
        return np.asarray(rows)[torch.isnan(self.table[index, 0]).cpu().numpy()]

    def __getitem__(self, rows: np.ndarray) -> Tensor:
        return self.table[torch.as_tensor(np.array(rows), device=self.table.device)]

    def save(self) -> None:
        """Add the rows computed since the last save to the store (call on one rank: every rank computes the same)."""
        if self.store is None or not bool(self.unsaved.any()):
            return
        rows = self.unsaved.nonzero().flatten()
        try:
            self.store.save(rows.numpy(), self.table[rows.to(self.table.device)].cpu().numpy())
        except OSError as error:  # e.g. a read-only cache: the run goes on, its features stay in memory
            log.warning("%s: cannot write the feature store (%s); features are kept in memory only",
                        self.store.path, error)
            self.store = None
        self.unsaved[rows] = False
