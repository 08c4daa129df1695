"""Callbacks: export the pretrained encoder on its own and print a run summary a user can act on;
report pairs that fell back; make a run resumed from a checkpoint continue exactly like the
uninterrupted one. (The classifier's are in `classifier_callbacks`.)"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from lungheart_cl.checkpointing import export_encoder, export_from_checkpoint

log = logging.getLogger(__name__)


def _checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)


def _export_directory(trainer: L.Trainer) -> Path:
    checkpoint = _checkpoint_callback(trainer)
    return Path(checkpoint.dirpath) if checkpoint and checkpoint.dirpath else Path(trainer.default_root_dir)


class EncoderExport(Callback):
    """Write ``encoder-init.pt`` as training starts (the same network, front end and statistics before
    any pretraining: the random-init baseline that differs from the pretrained encoder only in its
    weights), and at the end ``encoder-best.pt`` (the best checkpoint's encoder: best validation kNN or
    task-probe AUROC, as ``model.monitor`` says), ``encoder-last.pt`` and ``pretrain-summary.json``,
    beside the checkpoints."""

    def _provenance(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        return {"scheme": pl_module.hparams.get("scheme"), "epoch": trainer.current_epoch,
                "global_step": trainer.global_step, "data": pl_module.pretraining_data(),
                "knn_auroc_init": pl_module.knn_auroc_init, "task_probe_auroc_init": pl_module.task_probe_auroc_init}

    @rank_zero_only
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the module's on_train_start (statistics fitted, initial kNN scored); never on resume
        if trainer.global_step == 0 and trainer.current_epoch == 0:
            provenance = {**self._provenance(trainer, pl_module), "initial_weights": True}
            export_encoder(pl_module.encoder, pl_module.frontend, _export_directory(trainer) / "encoder-init.pt",
                           provenance)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = _checkpoint_callback(trainer)
        directory = _export_directory(trainer)
        provenance = self._provenance(trainer, pl_module)
        last = export_encoder(pl_module.encoder, pl_module.frontend, directory / "encoder-last.pt", provenance)
        best_path = checkpoint.best_model_path if checkpoint else ""
        best = export_from_checkpoint(Path(best_path), directory / "encoder-best.pt") if best_path else last
        best_score = float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score is not None else None
        monitor = checkpoint.monitor if checkpoint else None
        inits = {"val/knn_auroc": pl_module.knn_auroc_init, "val/task_probe_auroc": pl_module.task_probe_auroc_init}
        summary = {
            "best_checkpoint": best_path or None,
            "encoder_best": str(best), "encoder_last": str(last),
            "monitor": monitor, "monitor_before": inits.get(monitor), "monitor_best": best_score,
            "monitor_labelled_patients": len(pl_module.monitor_patients or []),
            "val_knn_auroc_before": pl_module.knn_auroc_init,
            "val_knn_auroc_best": best_score if monitor == "val/knn_auroc" else None,
            "val_task_probe_auroc_before": pl_module.task_probe_auroc_init,
            "epochs": trainer.current_epoch, "data": _data_summary(trainer),
        }
        (directory / "pretrain-summary.json").write_text(json.dumps(summary, indent=2))
        print(_format(summary, _level(trainer)))


class PairFallbackMonitor(Callback):
    """Logs ``train/pair_fallback_fraction`` every epoch: the share of served (anchor, partner) pairs for
    which the pair policy found no candidate and fell back (`PairPolicy.is_fallback`), and warns once, in
    one line, when more than ``warn_above`` of an epoch's pairs fell back: a same_patient_different_location
    run on data with one location per patient (PhysioNet 2016) is then plain SimCLR."""

    def __init__(self, warn_above: float = 0.5) -> None:
        self.warn_above = warn_above
        self._fallbacks = self._pairs = 0
        self._warned = False

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fallbacks = self._pairs = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        fallbacks = getattr(trainer.datamodule, "pair_fallbacks", None)
        if fallbacks is None or "partner_index" not in batch:
            return
        flags = fallbacks(batch["index"].cpu().numpy(), batch["partner_index"].cpu().numpy())
        self._fallbacks += int(flags.sum())
        self._pairs += len(flags)
        pl_module.log("train/pair_fallback_fraction", float(flags.mean()), on_step=False, on_epoch=True,
                      batch_size=len(flags), sync_dist=trainer.world_size > 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._warned or not self._pairs or self._fallbacks / self._pairs <= self.warn_above:
            return
        self._warned = True
        policy = trainer.datamodule.pair_fallbacks.policy.name
        if trainer.is_global_zero:
            log.warning("pair policy %s fell back for %.0f%% of the pairs of epoch %d (no other candidate: the anchor "
                        "itself or a nearer segment), so those pairs are plain SimCLR; see "
                        "train/pair_fallback_fraction", policy, 100 * self._fallbacks / self._pairs,
                        trainer.current_epoch)


def _data_summary(trainer: L.Trainer) -> dict:
    data = getattr(trainer, "datamodule", None)
    return data.summary() if data is not None and hasattr(data, "summary") else {}


def _level(trainer: L.Trainer) -> str:
    data = getattr(trainer, "datamodule", None)
    task = getattr(data, "task", None)
    return task.level if task is not None else "task"


def _format(summary: dict, level: str = "task") -> str:
    names = {"val/knn_auroc": "kNN AUROC",
             "val/task_probe_auroc": f"{level}-level probe AUROC ({summary['monitor_labelled_patients']} labelled patients)"}
    name = names.get(summary["monitor"], summary["monitor"])
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    before, best = summary["monitor_before"], summary["monitor_best"]
    monitor = (f"{name}: {fmt(before)} (random init) -> {fmt(best)} (best epoch)" if before is not None or best is not None
               else "kNN AUROC: none (no labels, so no monitor: the last encoder is kept)")
    return "\n".join([
        "", "pretraining finished",
        f"  validation {monitor}",
        f"  best checkpoint:      {summary['best_checkpoint']}",
        f"  exported encoder:     {summary['encoder_best']}",
        "  next: make finetune   (uses the newest exported encoder)", ""])


def capture_random_state(device: torch.device) -> dict[str, Any]:
    """torch (CPU, and `device` if it is a GPU), numpy and Python random states as tensors and plain data,
    so a checkpoint holding them still loads with ``weights_only=True``."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, key.tolist(), pos, has_gauss, gauss],
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_random_state(state: dict[str, Any], device: torch.device) -> None:
    """Set the generators `capture_random_state` read."""
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class RandomStateCheckpoint(Callback):
    """Every checkpoint carries each rank's random state; a run resumed from it sets that state again
    when its first epoch starts, so it draws the same views as the uninterrupted run.

    The state is taken when the checkpoint is written (the default ones at the end of a training
    epoch) and set again at the resumed run's first ``on_train_epoch_start``: the uninterrupted run
    draws nothing in between, and whatever the resumed run does before that hook (setup, restoring,
    building loaders, hooks skipped or re-run) cannot shift the stream. DataLoaders seed their workers
    from their own generator and the batch sampler and pair policy are seeded by (seed, epoch), so
    they need no state here.
    """

    KEY = "random_state"

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        state = capture_random_state(pl_module.device)
        ranks = [state]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            ranks = [None] * trainer.world_size  # every rank writes a checkpoint together; rank 0 keeps it
            dist.all_gather_object(ranks, state)
        checkpoint[self.KEY] = ranks

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._pending:
            return
        ranks, self._pending = self._pending, None
        # with another number of processes the run cannot repeat exactly; each rank still continues a saved stream
        restore_random_state(ranks[trainer.global_rank % len(ranks)], pl_module.device)


class ResumableModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps the best-so-far of the run it resumes, and saves nothing for data without
    labels (no monitor to select by: the last checkpoint is the one kept).

    A resumed CLI run logs to a new version folder, so its checkpoint folder differs from the one
    saved; Lightning then reloads only ``best_model_path`` and the next epoch would become "best"
    whatever its score. Here the scores of the earlier checkpoints are kept too (their files stay where
    they are: Lightning never deletes checkpoints outside its own folder).
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        data = trainer.datamodule
        if data is not None and not data.has_monitor:  # data without labels: nothing to select by
            self.save_top_k = 0

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        same_folder = state_dict.get("dirpath", self.dirpath) == self.dirpath
        self.best_model_score = state_dict["best_model_score"]
        self.best_model_path = state_dict["best_model_path"]
        self.best_k_models = state_dict.get("best_k_models", self.best_k_models)
        self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        if same_folder:
            self.last_model_path = state_dict.get("last_model_path", self.last_model_path)


class SelectionCheckpoint(ResumableModelCheckpoint):
    """The pretraining's best checkpoint (highest value): it monitors the key the module selects on,
    ``ContrastivePretraining.selection_metric`` (``model.monitor``), set before any state is restored."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(mode="max", **kwargs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.monitor = pl_module.selection_metric  # before Lightning restores callback states by this key
        super().setup(trainer, pl_module, stage)
