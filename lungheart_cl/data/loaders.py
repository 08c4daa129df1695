"""How the data modules build their DataLoaders: seeded workers, samplers that start at a resumed
fit's epoch, evaluation loaders that are exact on every rank, and workers that never outlive a run."""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.utilities.combined_loader import _shutdown_workers_and_reset_iterator
from torch.utils.data import DataLoader

from lungheart_cl.data.datasets import collate_batch


class LoaderLifecycle:
    """Mixin of `SoundDataModule` (a LightningDataModule with ``num_workers``, ``batch_size``,
    ``start_epoch`` and ``segment_dataset``): its loaders, their resume state and their end."""

    def _loader(self, dataset, **kwargs) -> DataLoader:
        # worker seeds come from the loader's own generator: a new iterator (every epoch, or after a
        # resume with persistent workers) never draws from the global RNG that the views use
        loader = DataLoader(dataset, num_workers=self.num_workers, collate_fn=collate_batch,
                            persistent_workers=self.num_workers > 0, pin_memory=False,
                            generator=torch.Generator().manual_seed(0), **kwargs)
        for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(self.start_epoch)
        return loader

    def state_dict(self) -> dict[str, int]:
        """The epoch a fit resumed from this checkpoint continues at. Lightning builds the first training
        iterator, which workers prefetch from at once, before it sets the samplers' epoch (and before it
        restores its loops), so the loaders must start the samplers there themselves."""
        trainer = self.trainer
        return {"epoch": int(trainer.fit_loop.epoch_progress.current.processed)} if trainer is not None else {}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.start_epoch = int(state_dict.get("epoch", 0))

    def teardown(self, stage: str) -> None:
        """End the persistent workers of every loader of the run, so that none outlives it."""
        trainer = self.trainer
        if trainer is None:
            return
        for loaders in (trainer.train_dataloader, trainer.val_dataloaders, trainer.test_dataloaders):
            for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
                _shutdown_workers_and_reset_iterator(loader)  # how Lightning resets the loaders of a loop it ends

    def on_exception(self, exception: BaseException) -> None:
        # A run stopped mid-validation or mid-test: Lightning then resets only that loop's loaders, and the
        # training loader's workers would live on until the trainer is garbage-collected.
        self.teardown("exception")

    def eval_loader(self, rows: np.ndarray) -> DataLoader:
        """Every given row, in order, on every rank (evaluation is exact, never padded by a sampler)."""
        return self._loader(self.segment_dataset(rows), batch_size=self.batch_size, shuffle=False)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

