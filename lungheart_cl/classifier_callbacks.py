"""Callbacks of `lungheart-cl finetune` around `Classifier`: refuse an encoder pretrained on this run's
held-out patients, write the run's results JSON, and draw the test embeddings.

They sit beside `callbacks.EncoderExport` (pretraining's), in a module of their own to keep both small.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from lungheart_cl.checkpointing import CheckpointError
from lungheart_cl.data.pool import pretrained_sources


class PretrainingLeakCheck(Callback):
    """No source of the encoder's pretraining pool of this dataset may hold this run's validation or test
    patients (the encoder's provenance against the data description's split), checked at every setup."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = getattr(trainer.datamodule, "description", None)
        if data is None:
            return
        held_out = set(data.split_patients["val"]) | set(data.split_patients["test"])
        provenance = getattr(pl_module, "provenance", {})
        leaked_patients: set[str] = set()
        leaks = []
        for source in pretrained_sources(provenance.get("data", {})):
            leaked = sorted(held_out & set(source["pool_patients"])) if source.get("dataset") == data.dataset else []
            if leaked:
                leaked_patients.update(leaked)
                more = f" and {len(leaked) - 5} more" if len(leaked) > 5 else ""
                leaks.append(f"source {source['name']} (dataset {source['dataset']}) patient(s) "
                             f"{', '.join(leaked[:5])}{more}")
        if leaks:
            raise CheckpointError(
                f"{provenance.get('checkpoint')}: pretrained on {len(leaked_patients)} patient(s) that are in "
                f"this run's validation/test split: {'; '.join(leaks)}; pretrain and evaluate with the same "
                f"data.split, val_fraction, test_fraction and split_seed")


class ResultsWriter(Callback):
    """The results JSON of the run, written once the selected model is scored (`Classifier.final_results`):
    after the test, or after `finetune --test false`'s validation; into ``model.results_dir``."""

    def __init__(self) -> None:
        self.path: Path | None = None  # the file written last

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # `finetune --test false`: the selected model, test unread
            self._write(trainer, pl_module)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.final_results is None:
            return
        data, hp = trainer.datamodule, pl_module.hparams
        checkpoint_cb = trainer.checkpoint_callback
        payload = {
            "run": pl_module.run_name(), "dataset": data.dataset, "task": pl_module.task.name,
            "level": pl_module.task.level, "scheme": pl_module.scheme, "mode": pl_module.mode,
            "label_fraction": data.label_fraction, "seed": data.label_seed,
            "global_seed": int(os.environ.get("PL_GLOBAL_SEED", -1)),
            "ci": {"method": "patient-cluster bootstrap, percentile", "samples": hp.bootstrap_samples,
                   "level": hp.ci_level},
            **pl_module.final_results,
            "best_val_auroc": float(checkpoint_cb.best_model_score) if checkpoint_cb and
            checkpoint_cb.best_model_score is not None else None,
            "selected_checkpoint": checkpoint_cb.best_model_path if checkpoint_cb else None,
            # the selected checkpoint's validation predictions, to choose recipes on validation
            "val_predictions": pl_module.val_predictions, "probe": pl_module.probe,
            "pretrained": pl_module.provenance, "data": data.summary(),
            "config": {"model": dict(hp), "data": dict(data.hparams)},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        # a validation-only run (`--test false`) never replaces the test results of the same run name
        suffix = "" if payload["split"] == "test" else f"-{payload['split']}"
        path = Path(hp.results_dir) / f"{payload['run']}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        os.replace(tmp, path)
        print(f"results: {path}")
        self.path = path


def results_path(trainer: L.Trainer) -> Path | None:
    """Where the trainer's `ResultsWriter` wrote the run's results JSON (None: it wrote none)."""
    writer = next((c for c in trainer.callbacks if isinstance(c, ResultsWriter)), None)
    return writer.path if writer is not None else None


class EmbeddingPlot(Callback):
    """The test embeddings in 2-D (``model.embedding_plot``: pca | tsne | none), coloured by label and by
    metadata; PNG beside the results JSON, and in W&B."""

    def __init__(self) -> None:
        self._features: list[torch.Tensor] = []
        self._rows: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._features, self._rows = [], []

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        if pl_module.hparams.embedding_plot != "none":
            self._features.append(outputs["features"].detach().float().cpu())
            self._rows.append(outputs["index"].cpu())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        features, rows = self._features, self._rows
        self._features, self._rows = [], []
        if trainer.is_global_zero and features:
            self._plot(trainer, pl_module, torch.cat(features).numpy(), torch.cat(rows).numpy())

    @staticmethod
    def _plot(trainer: L.Trainer, pl_module: L.LightningModule, features: np.ndarray, rows: np.ndarray) -> None:
        from lungheart_cl.embeddings import log_embeddings_to_wandb, plot_embeddings, project_embeddings

        data, method = trainer.datamodule, pl_module.hparams.embedding_plot
        colour_by = {"label": [pl_module.task.classes[i] for i in data.labels[rows]]}
        colour_by |= {name: data.manifest[name][rows].tolist() for name in ("age_group", "sex", "location", "device")}
        points = project_embeddings(features, method)
        name = pl_module.run_name()
        path = Path(pl_module.hparams.results_dir) / f"{name}-embeddings.png"
        plot_embeddings(points, colour_by, path, f"{name}: test embeddings ({method})")
        for logger in pl_module.loggers:
            if isinstance(logger, WandbLogger):
                log_embeddings_to_wandb(points, colour_by, image=path, key="test/embeddings", run=logger.experiment)
