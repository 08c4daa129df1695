"""The contrastive pretraining LightningModule.

Per step: (anchor, partner) waveforms reach the device -> raw-audio views -> log-mel front end ->
spectrogram views (all batched, in `on_after_batch_transfer`) -> encoder -> projector ->
metadata-aware NT-Xent, gathered over ranks. An online linear probe on detached features trains
alongside; every validation epoch a kNN monitor scores the validation windows against a labelled
bank of training patients, and a logistic probe fitted on (a label budget of) that bank scores the
validation patients at the task's level. `model.monitor` chooses which of the two selects the best
checkpoint. Data without labels (``num_classes`` 0) trains without any monitor: no validation, and
the last encoder is the one kept. The test split is never touched here.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lungheart_cl.data.datasets import METADATA_KEYS
from lungheart_cl.data.description import DataDescription
from lungheart_cl.encoders import Encoder, Projector, SmallCNN
from lungheart_cl.losses import MetadataNTXent
from lungheart_cl.monitor import TaskProbeScore, auroc, knn_class_scores, monitor_patients, task_probe_score
from lungheart_cl.optim import param_groups
from lungheart_cl.sound_module import SoundModule
from lungheart_cl.views import ViewPipeline, spectrogram_mask

log = logging.getLogger(__name__)


class ContrastivePretraining(SoundModule):
    """SimCLR-style pretraining with pluggable views and metadata-aware positives/negatives.

    Args:
        encoder: spectrogram encoder (`SmallCNN` for CPU, `ResNet18Encoder` as in the study).
        views: view generators applied to both views (default: the study's spectrogram masking).
        loss: `MetadataNTXent` (temperature, positive_keys, negative_keys).
        num_classes: classes of the data module's task, for the online probe (linked by the CLI); 0 for
            data without labels: no probe and no kNN monitor.
        projector_hidden_dim / projector_dim: projection head (the study: 512 -> 256).
        warmup_epochs: linear warmup before the cosine decay (see `SoundModule`).
        knn_k / knn_temperature: the kNN monitor (`val/knn_auroc`, validation windows).
        monitor: what selects the best checkpoint and ``encoder-best.pt``: ``knn_auroc`` or ``task_probe_auroc``
            (`val/task_probe_auroc`: a standardised, class-balanced logistic regression on the bank windows of
            the monitor's labelled patients, scored on the validation windows averaged per recording or
            patient as the task is scored downstream). Both are logged every epoch.
        monitor_labelled_patients: the task probe's label budget: this many bank patients, class-stratified
            and drawn with ``data.label_seed`` as ``data.labelled_patients`` draws; null = every bank patient.
            Drawn once per run and kept in its checkpoints.
        monitor_probe_c: the task probe's C; null = chosen each epoch by the patient-grouped cross-validation
            of ``model.mode logistic`` over `monitor.MONITOR_C_GRID`.
        channels_last: NHWC memory format (faster convolutions on recent GPUs).
        scheme: a name for this pairing/augmentation scheme, carried into exported encoders and reports.
        **kwargs: the front end, sample rate and optimiser (`SoundModule`).
    """

    def __init__(self, encoder: Encoder | None = None, views: ViewPipeline | None = None,
                 loss: MetadataNTXent | None = None, num_classes: int = 2, projector_hidden_dim: int = 512,
                 projector_dim: int = 256, warmup_epochs: float = 1.0, knn_k: int = 10, knn_temperature: float = 0.07,
                 monitor: Literal["knn_auroc", "task_probe_auroc"] = "knn_auroc",
                 monitor_labelled_patients: int | None = None, monitor_probe_c: float | None = None,
                 channels_last: bool = False, scheme: str = "custom", **kwargs: Any):
        super().__init__(warmup_epochs=warmup_epochs, **kwargs)
        self.encoder = encoder if encoder is not None else SmallCNN()
        self.views = views if views is not None else spectrogram_mask()
        self.criterion = loss if loss is not None else MetadataNTXent()
        self.projector = Projector(self.encoder.embedding_dim, projector_hidden_dim, projector_dim)
        self.probe = nn.Linear(self.encoder.embedding_dim, num_classes) if num_classes else None
        self.num_classes = num_classes
        self.knn_auroc_init: float | None = None
        self.task_probe_auroc_init: float | None = None
        self.monitor_patients: list[str] | None = None  # the task probe's labelled patients, fixed for the run
        self.last_task_probe: TaskProbeScore | None = None  # the latest task probe (on rank 0 only)
        self._val_outputs: dict[int, list[tuple[Tensor, Tensor, Tensor, Tensor]]] = {}
        self._pool: dict = {}  # which audio the encoder saw (the data description's), kept in checkpoints

    @property
    def selection_metric(self) -> str:
        """The logged key that selects the best checkpoint (`callbacks.SelectionCheckpoint` monitors it)."""
        return f"val/{self.hparams.monitor}"

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        data = self.data
        if data is None:
            return
        self.check_sample_rate(data)
        self._pool = dict(data.pool)
        # unlabelled data has no monitor; a resumed run restores its checkpoint's draw (`on_load_checkpoint`)
        if self.probe is not None and self.monitor_patients is None:
            bank = data.monitor_bank_rows
            self.monitor_patients = monitor_patients(
                sorted(set(data.row_ids["patient_id"][bank].tolist())), dict(data.monitor_strata),
                self.hparams.monitor_labelled_patients, data.label_seed)

    def on_fit_start(self) -> None:
        # after a checkpoint is restored: a resumed run keeps the statistics it was trained with
        data = self.data
        if data is not None:
            self.fit_frontend(data)

    # -------------------------------------------------------- device-side data
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if "partner_wave" in batch:
            batch["views"] = self.make_views(batch)
        else:
            batch["spec"] = self.frontend(batch["wave"], batch["valid"])
        return batch

    def make_views(self, batch: dict) -> Tensor:
        """Two augmented log-mel views per sample, stacked: rows [0, B) anchors, [B, 2B) partners."""
        wave = torch.cat([batch["wave"], batch["partner_wave"]]).float()
        valid = torch.cat([batch["valid"], batch["partner_valid"]])
        return self.views.render(wave, valid, self.frontend)

    def embed(self, spec: Tensor) -> Tensor:
        if self.hparams.channels_last:
            spec = spec.contiguous(memory_format=torch.channels_last)
        return self.encoder(spec)

    # ---------------------------------------------------------------- training
    def _gather(self, tensor: Tensor) -> Tensor:
        return self.all_gather(tensor, sync_grads=tensor.requires_grad).flatten(0, 1)

    def view_keys(self, batch: dict) -> dict[str, Tensor]:
        """Per-view metadata keys for the loss; both views of a sample share its anchor row as "sample"."""
        keys = {"sample": torch.cat([batch["index"], batch["index"]])}
        for key in METADATA_KEYS:
            keys[key] = torch.cat([batch["meta"][key], batch["partner_meta"][key]])
        return keys

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        batch_size = batch["wave"].shape[0]
        features = self.embed(batch["views"])
        z = self.projector(features)
        distributed = self.trainer is not None and self.trainer.world_size > 1
        out = self.criterion(z, self.view_keys(batch), gather=self._gather if distributed else None,
                             rank=self.global_rank, world_size=self.trainer.world_size if distributed else 1)
        probe_loss = self._probe_loss(features[:batch_size].detach(), batch["label"])
        self.log_dict({"train/loss": out.loss, "train/positive_similarity": out.positive_similarity,
                       "train/negative_similarity": out.negative_similarity,
                       "train/negatives_per_row": out.negatives_per_row, "train/valid_rows": out.valid_fraction,
                       "train/probe_loss": probe_loss}, on_step=True, on_epoch=True, batch_size=batch_size,
                      sync_dist=distributed)
        return out.loss + probe_loss

    def _probe_loss(self, features: Tensor, labels: Tensor) -> Tensor:
        if self.probe is None:  # no labels
            return features.sum() * 0.0
        logits = self.probe(features)
        if not bool((labels >= 0).any()):  # batch without labelled segments: keep the graph, add nothing
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), labels, ignore_index=-1)

    # ----------------------------------------------------- online evaluation
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        features = self.embed(batch["spec"])
        probs = self.probe(features).float().softmax(-1)
        self._val_outputs.setdefault(dataloader_idx, []).append(
            (features.float(), batch["label"], probs, batch["index"]))

    def on_validation_epoch_end(self) -> None:
        outputs, self._val_outputs = self._val_outputs, {}
        if 0 not in outputs or 1 not in outputs:
            return
        bank, bank_labels, _, bank_rows = (torch.cat(parts) for parts in zip(*outputs[0]))
        val, val_labels, val_probs, val_rows = (torch.cat(parts) for parts in zip(*outputs[1]))
        knn = self._knn_auroc(bank, bank_labels, val, val_labels)
        self.log("val/knn_auroc", knn, prog_bar=True, sync_dist=True)
        self.log("val/probe_auroc", auroc(val_probs, val_labels, self.num_classes), sync_dist=True)
        task_auroc, c = self._task_probe((bank, bank_labels, bank_rows), (val, val_labels, val_rows))
        self.log("val/task_probe_auroc", task_auroc, prog_bar=True, sync_dist=True)  # identical on every rank
        self.log("val/task_probe_c", c, sync_dist=True)

    def _task_probe(self, bank: tuple[Tensor, Tensor, Tensor], val: tuple[Tensor, Tensor, Tensor]) -> tuple[float, float]:
        """(AUROC, C) of the task probe: fitted on rank 0 only (each rank holds every bank and validation
        window) and broadcast, so every rank logs and selects on the same value."""
        data = self.data
        result = (float("nan"), float("nan"))
        if self.global_rank == 0:
            (features, labels, rows), (val_features, val_labels, val_rows) = (
                tuple(t.cpu().numpy() for t in part) for part in (bank, val))
            chosen = np.isin(data.row_ids["patient_id"][rows], self.monitor_patients)
            self.last_task_probe = task_probe_score(
                features[chosen], labels[chosen], rows[chosen], val_features, val_labels, val_rows, data.row_ids,
                data.task, self.hparams.monitor_probe_c, seed=data.label_seed)
            result = (self.last_task_probe.auroc, self.last_task_probe.c)
        return self.trainer.strategy.broadcast(result, src=0)

    def _knn_auroc(self, bank: Tensor, bank_labels: Tensor, val: Tensor, val_labels: Tensor) -> Tensor:
        scores = knn_class_scores(bank, bank_labels, val, self.num_classes, self.hparams.knn_k,
                                  self.hparams.knn_temperature)
        return auroc(scores, val_labels, self.num_classes)

    @torch.no_grad()
    def evaluate_monitor(self, data: DataDescription) -> tuple[float, float]:
        """(kNN AUROC, task-probe AUROC) of the current encoder on the validation patients (used before
        training starts)."""
        was_training = self.training
        self.eval()
        parts = []
        for rows in (data.monitor_bank_rows, data.eval_rows["val"]):
            features, labels = [], []
            for batch in data.read_rows(rows):
                spec = self.frontend(batch["wave"].to(self.device), batch["valid"].to(self.device))
                features.append(self.embed(spec).float())
                labels.append(batch["label"].to(self.device))
            parts.append((torch.cat(features), torch.cat(labels), torch.as_tensor(np.array(rows))))  # writable copy
        self.train(was_training)
        (bank, bank_labels, _), (val, val_labels, _) = parts
        task_auroc, _ = self._task_probe(*parts)
        return float(self._knn_auroc(bank, bank_labels, val, val_labels)), task_auroc

    def on_train_start(self) -> None:
        data = self.data
        if self.probe is None:
            log.info("no labels: pretraining without the kNN / linear-probe monitor; the last encoder is kept "
                     "(encoder-best.pt = encoder-last.pt)")
            return
        if data is not None and self.knn_auroc_init is None:  # a resumed run has them from the checkpoint
            self.knn_auroc_init, self.task_probe_auroc_init = self.evaluate_monitor(data)
            # identical on every rank
            self.log_dict({"val/knn_auroc_init": self.knn_auroc_init,
                           "val/task_probe_auroc_init": self.task_probe_auroc_init}, sync_dist=True)

    # ------------------------------------------------------------ optimiser
    def param_groups(self) -> list[dict]:
        hp = self.hparams
        groups = param_groups(nn.ModuleList([self.encoder, self.projector]), hp.weight_decay, hp.lr)
        if self.probe is not None:
            groups.append({"params": list(self.probe.parameters()), "weight_decay": 0.0, "lr": hp.lr})
        return groups

    # ------------------------------------------------------------ checkpoint
    def pretraining_data(self) -> dict:
        """Which audio the encoder saw, so a classifier can refuse test patients it was pretrained on."""
        return dict(self._pool)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lungheart_cl"] = {"kind": "pretrain", "scheme": self.hparams.scheme,
                                      "encoder_config": self.encoder.config,
                                      "frontend_config": self.frontend.config,
                                      "knn_auroc_init": self.knn_auroc_init,
                                      "task_probe_auroc_init": self.task_probe_auroc_init,
                                      "monitor_patients": self.monitor_patients, "data": self.pretraining_data()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("lungheart_cl", {})
        self.knn_auroc_init, self.task_probe_auroc_init = meta.get("knn_auroc_init"), meta.get("task_probe_auroc_init")
        self.monitor_patients = meta.get("monitor_patients", self.monitor_patients)
