"""Callbacks: export the pretrained encoder on its own, and print a run summary a user can act on."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from lungheart_cl.checkpointing import export_encoder, export_from_checkpoint


def _checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)


class EncoderExport(Callback):
    """At the end of pretraining, write ``encoder-best.pt`` (best validation kNN AUROC) and
    ``encoder-last.pt`` beside the checkpoints, plus ``pretrain-summary.json``."""

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = _checkpoint_callback(trainer)
        directory = Path(checkpoint.dirpath) if checkpoint and checkpoint.dirpath else Path(trainer.default_root_dir)
        provenance = {"scheme": pl_module.hparams.get("scheme"), "epoch": trainer.current_epoch,
                      "global_step": trainer.global_step, "data": pl_module.pretraining_data(),
                      "knn_auroc_init": pl_module.knn_auroc_init}
        last = export_encoder(pl_module.encoder, pl_module.frontend, directory / "encoder-last.pt", provenance)
        best_path = checkpoint.best_model_path if checkpoint else ""
        best = export_from_checkpoint(Path(best_path), directory / "encoder-best.pt") if best_path else last
        best_score = checkpoint.best_model_score if checkpoint else None
        summary = {
            "best_checkpoint": best_path or None,
            "encoder_best": str(best), "encoder_last": str(last),
            "val_knn_auroc_before": pl_module.knn_auroc_init,
            "val_knn_auroc_best": float(best_score) if best_score is not None else None,
            "epochs": trainer.current_epoch, "data": _data_summary(trainer),
        }
        (directory / "pretrain-summary.json").write_text(json.dumps(summary, indent=2))
        print(_format(summary))


def _data_summary(trainer: L.Trainer) -> dict:
    data = getattr(trainer, "datamodule", None)
    return data.summary() if data is not None and hasattr(data, "summary") else {}


def _format(summary: dict) -> str:
    before, best = summary["val_knn_auroc_before"], summary["val_knn_auroc_best"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    return "\n".join([
        "", "pretraining finished",
        f"  validation kNN AUROC: {fmt(before)} (random init) -> {fmt(best)} (best epoch)",
        f"  best checkpoint:      {summary['best_checkpoint']}",
        f"  exported encoder:     {summary['encoder_best']}",
        "  next: make finetune   (uses the newest exported encoder)", ""])
