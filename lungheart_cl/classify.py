"""The downstream LightningModule: linear probes, fine-tuning or the supervised-from-scratch baseline.

Modes:
  linear    frozen encoder in eval mode (pretrained, or randomly initialised as a baseline); its
            features are computed once per segment and cached, then a linear head is trained by
            gradient steps on standardised features (weight decay; selection on validation).
  logistic  the same frozen features, then a scikit-learn logistic regression whose C is chosen by
            patient-grouped cross-validation inside the labelled patients (`lungheart_cl.probe`),
            folded into the same Standardize + Linear head; no gradient steps, one validation.
  finetune  the pretrained encoder and a head train together (encoder at ``encoder_lr_scale`` x lr).
  scratch   the same network from random weights: the supervised baseline.
Frozen features are float32 whatever the trainer precision, and are kept on disk across runs
(`lungheart_cl.feature_cache`, ``feature_cache_dir``). Model selection uses the validation patients
only; `on_test_epoch_end` scores the test patients once, with patient-cluster bootstrap CIs
(`final_results`; `classifier_callbacks.ResultsWriter` writes them with the per-unit test and
validation predictions to the run's results JSON, `classifier_callbacks.EmbeddingPlot` draws the
test embeddings).
`finetune --test false` scores the selected model on the validation patients instead (``split: val``
in the results, the file named ``...-val.json``) and never reads the test split: the runs that
choose a recipe.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from lungheart_cl.checkpointing import CheckpointError, check_same_encoder, load_pretrained, resolve_checkpoint
from lungheart_cl.data.description import DataDescription
from lungheart_cl.data.tasks import Task
from lungheart_cl.encoders import Encoder, SmallCNN
from lungheart_cl.feature_cache import FeatureStore, feature_key
from lungheart_cl.frozen_features import FrozenFeatureTable
from lungheart_cl.heads import HeadConfig, build_head
from lungheart_cl.metrics import aggregate, evaluate
from lungheart_cl.modes import MODES, Mode
from lungheart_cl.optim import param_groups
from lungheart_cl.probe import DEFAULT_C_GRID, MAX_FOLDS, fit_logistic_probe, linear_head_weights
from lungheart_cl.sound_module import SoundModule
from lungheart_cl.views import ViewPipeline

log = logging.getLogger(__name__)

FROZEN_MODES = ("linear", "logistic")  # the encoder never trains: its features are computed once


class Classifier(SoundModule):
    """Diagnosis classifier on top of a (pretrained or random) encoder.

    One class over ~200 lines: the four modes share one training and evaluation path, and a mode is a
    few branches in it; what is not that path lives elsewhere (head: `heads`, frozen features:
    `frozen_features`, results JSON and plots: `classifier_callbacks`, optimiser: `SoundModule`).

    Args:
        mode: linear | logistic | finetune | scratch (see module docstring).
        checkpoint: pretraining checkpoint (.ckpt) or exported encoder (.pt); 'latest' = the newest
            ``encoder-best.pt`` under runs/pretrain/ (`make pretrain`); None = random initialisation.
        encoder: the encoder to build without a checkpoint; with one, it must match the checkpoint's.
        views: augmentation of the training batches in finetune/scratch modes (None = none).
        num_classes / task: linked from the data module by the CLI.
        head_hidden_dim: 0 = a linear head; > 0 = an MLP head with one hidden layer (not in logistic mode).
        encoder_lr_scale: finetune: the encoder's learning rate is this times ``lr``.
        class_weighting: "balanced" weights the loss (logistic: the regression's samples) by inverse
            class frequency of the labelled set.
        logistic_c_grid / logistic_max_folds: logistic mode's grid of C and most CV folds (None = the
            default grid, 13 values from 1e-4 to 1e2; see `lungheart_cl.probe`).
        feature_cache_dir: linear / logistic modes: where frozen features are kept across runs;
            "auto" = ``features/`` inside the data module's segment cache directory, None = in memory only.
        bootstrap_samples / ci_level: test-set confidence intervals (patients resampled).
        results_dir / embedding_plot: where `classifier_callbacks.ResultsWriter` writes the run's results
            JSON, and the 2-D projection `classifier_callbacks.EmbeddingPlot` draws of the test embeddings
            (pca | tsne | none); model keys so that experiment YAMLs and sweeps set them per run.
        scheme: name of the pretraining scheme for reports (default: from the checkpoint, or the mode).
        **kwargs: the front end (when not loaded from a checkpoint), sample rate and optimiser (`SoundModule`).
    """

    def __init__(self, mode: Mode = "linear", checkpoint: str | None = None, encoder: Encoder | None = None,
                 views: ViewPipeline | None = None, num_classes: int = 2, task: str = "healthy_vs_disease",
                 head_hidden_dim: int = 0, dropout: float = 0.0, encoder_lr_scale: float = 0.1,
                 class_weighting: Literal["balanced", "none"] = "balanced", bootstrap_samples: int = 1000,
                 ci_level: float = 0.95, results_dir: str = "runs/results", scheme: str | None = None,
                 embedding_plot: Literal["pca", "tsne", "none"] = "pca", logistic_c_grid: list[float] | None = None,
                 logistic_max_folds: int = MAX_FOLDS, feature_cache_dir: str | None = "auto", **kwargs: Any):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "logistic" and head_hidden_dim:
            raise ValueError("mode 'logistic' fits a linear head; set model.head_hidden_dim to 0")
        if mode == "finetune" and checkpoint is None:
            raise ValueError("mode 'finetune' needs a pretrained checkpoint (model.checkpoint)")
        if mode == "scratch" and checkpoint is not None:
            raise ValueError("mode 'scratch' trains from random weights; remove model.checkpoint or use finetune")
        self.mode, self.task_name = mode, task
        self.task: Task | None = None  # the data module's task, taken at setup: its classes, level and metric
        self.provenance: dict = {}
        checkpoint = resolve_checkpoint(checkpoint)
        sample_rate = self.hparams.sample_rate
        if checkpoint is not None:
            loaded = load_pretrained(checkpoint)
            check_same_encoder(encoder.config if encoder is not None else None, loaded.encoder.config,
                               Path(checkpoint))
            if loaded.frontend.sample_rate != sample_rate:
                raise CheckpointError(f"{checkpoint}: pretrained on {loaded.frontend.sample_rate} Hz audio, but the "
                                      f"data module serves {sample_rate} Hz; set data.sample_rate to match")
            self.encoder, self.frontend, self.provenance = loaded.encoder, loaded.frontend, loaded.provenance
        else:
            self.encoder = encoder if encoder is not None else SmallCNN()
        default_scheme = "pretrained" if checkpoint else "supervised_scratch" if mode == "scratch" else "random_init"
        self.scheme = scheme or self.provenance.get("scheme") or default_scheme
        self.views = views
        self.frozen = mode in FROZEN_MODES
        self.head_config = HeadConfig(self.encoder.embedding_dim, num_classes, head_hidden_dim, dropout, self.frozen)
        self.head = build_head(self.head_config)
        if self.frozen:
            self.encoder.requires_grad_(False)
        # logistic: the head is fitted in closed form at fit start, so Lightning takes no optimizer steps
        self.automatic_optimization = mode != "logistic"
        self.register_buffer("class_weights", torch.ones(num_classes), persistent=False)
        self.probe: dict | None = None  # logistic mode: chosen C and its cross-validated AUROC
        self.val_predictions: dict | None = None  # the selected epoch's, as the results JSON holds them
        self._features: FrozenFeatureTable | None = None  # frozen modes: features by cache row
        self._outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self.final_results: dict | None = None  # the selected model's scores on its final split (`_score_final`)

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        data = self.data
        if data is None:
            return
        self.check_sample_rate(data)
        if data.task is None or data.task.name != self.task_name or data.num_classes != self.hparams.num_classes:
            raise ValueError(f"model task {self.task_name} ({self.hparams.num_classes} classes) differs from the data "
                             f"module's task {data.task.name if data.task else None} ({data.num_classes} classes)")
        self.task = data.task
        if stage == "fit":
            self.fit_frontend(data)
            counts = np.bincount(data.labelled_labels, minlength=self.task.num_classes).astype(float)
            if self.hparams.class_weighting == "balanced":
                weights = counts.sum() / (self.task.num_classes * np.maximum(counts, 1))
                self.class_weights = torch.as_tensor(weights, dtype=torch.float32, device=self.device)

    def on_fit_start(self) -> None:
        data = self.data
        for logger in self.loggers:  # the keys a W&B workspace groups and plots label fractions by
            logger.log_hyperparams({"scheme": self.scheme, "mode": self.mode, "seed": data.label_seed,
                                    "label_fraction": data.label_fraction, "dataset": data.dataset,
                                    "task": self.task.name})
        if self.frozen:  # the labelled features, computed once; the head's standardisation or whole fit
            features = self._frozen_features(data.labelled_rows)
            if self.mode == "linear":
                self.head[0].fit(features)
            else:
                self._fit_probe(features, data)

    def _fit_probe(self, features: Tensor, data: DataDescription) -> None:
        """Logistic mode: C by patient-grouped CV on the labelled rows only, the fit folded into the head."""
        hp, rows = self.hparams, data.labelled_rows
        labels, row_ids, metric = data.labelled_labels, data.row_ids, self.task.score

        def task_level_auroc(probs: np.ndarray, windows: np.ndarray) -> float:  # as validation and test are scored
            predictions = aggregate(probs, labels[windows], rows[windows], row_ids, self.task.level)
            return metric(predictions.probs, predictions.labels)["auroc"]

        fit = fit_logistic_probe(features.cpu().numpy(), labels, row_ids["patient_id"][rows], task_level_auroc,
                                 self.task.num_classes, tuple(hp.logistic_c_grid or DEFAULT_C_GRID),
                                 hp.logistic_max_folds, "balanced" if hp.class_weighting == "balanced" else None)
        standardize, linear = self.head[0], self.head[-1]
        with torch.no_grad():
            for target, value in zip((standardize.mean, standardize.std, linear.weight, linear.bias),
                                     linear_head_weights(fit.pipeline, self.task.num_classes)):
                target.copy_(torch.as_tensor(value, dtype=target.dtype))
        self.probe = {**fit.summary(), "level": self.task.level}
        log.info("logistic probe: C=%g, cross-validated AUROC %s (%d folds over %d labelled patients)",
                 fit.c, fit.cv_auroc, fit.folds, fit.patients)
        for logger in self.loggers:
            logger.log_metrics({f"probe/{k}": v for k, v in (("C", fit.c), ("cv_auroc", fit.cv_auroc))
                                if v is not None}, step=0)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # frozen: batch-norm statistics stay those of pretraining
        return self

    # -------------------------------------------------------------- features
    def _spec(self, batch: dict, augment: bool) -> Tensor:
        wave, valid = batch["wave"].float(), batch["valid"]
        if augment and self.views is not None:
            return self.views.render(wave, valid, self.frontend)
        return self.frontend(wave, valid)

    def features(self, batch: dict, augment: bool = False) -> Tensor:
        if not self.frozen:
            return self.encoder(self._spec(batch, augment))
        if self.data is None:  # no data module, so no rows to cache by
            return self._encode_frozen(batch)
        # frozen encoder: each segment's features are computed once, then read from the table
        return self._feature_table().lookup(
            batch["index"], lambda missing: self._encode_frozen({k: batch[k][missing] for k in ("wave", "valid")}))

    @torch.no_grad()
    def _encode_frozen(self, batch: dict) -> Tensor:
        self.encoder.eval()  # hooks such as on_fit_start run before Lightning's train()/eval() switch
        with torch.autocast(self.device.type, enabled=False):  # stored features must not depend on the precision
            return self.encoder(self._spec(batch, False)).float()

    def _feature_table(self) -> FrozenFeatureTable:
        """The frozen features of this encoder, front end and segment cache; on first use filled from the
        feature store (``feature_cache_dir``), if any."""
        if self._features is None:
            data, dim, store_dir = self.data, self.encoder.embedding_dim, self.hparams.feature_cache_dir
            store = None
            if store_dir is not None:
                root = data.cache_directory / "features" if store_dir == "auto" else Path(store_dir)
                store = FeatureStore(root, feature_key(self.encoder, self.frontend, data.cache_key), data.num_rows, dim)
            self._features = FrozenFeatureTable(data.num_rows, dim, self.device, store)
        return self._features

    def _frozen_features(self, rows: np.ndarray) -> Tensor:
        """Features of these cache rows; only rows not known yet are read and encoded."""
        table = self._feature_table()
        for batch in self.data.read_rows(table.missing(rows)):
            self.features({k: v.to(self.device) for k, v in batch.items() if k != "meta"})
        self._save_features()
        return table[rows]

    def _save_features(self) -> None:
        if self._features is not None and self.trainer.is_global_zero:
            self._features.save()

    def forward(self, batch: dict) -> Tensor:
        return self.head(self.features(batch)).float().softmax(-1)

    # -------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        if self.mode == "logistic":
            # The head was fitted in closed form at fit start. Lightning counts training by optimizer steps
            # (ModelCheckpoint saves nothing before one), so that fit is the run's one step, taken on the
            # no-op stand-in optimizer Lightning uses without configure_optimizers; stopping now makes it
            # validate once (val/auroc, the checkpoint) and end the fit, whatever max_epochs says.
            self.optimizers().step()
            self.trainer.should_stop = True
            return None
        logits = self.head(self.features(batch, augment=True)).float()
        loss = F.cross_entropy(logits, batch["label"], weight=self.class_weights)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(logits))
        return loss

    def _collect(self, batch: dict) -> Tensor:
        features = self.features(batch)
        logits = self.head(features).float()
        self._outputs.append((logits.softmax(-1), batch["label"], batch["index"]))
        return features

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        """The batch's features and rows, for callbacks (`classifier_callbacks.EmbeddingPlot`)."""
        return {"features": self._collect(batch), "index": batch["index"]}

    def _predictions(self):
        outputs, self._outputs = self._outputs, []
        probs, labels, rows = (torch.cat(parts).cpu().numpy() for parts in zip(*outputs))
        return aggregate(probs, labels, rows, self.data.row_ids, self.task.level)

    def on_validation_epoch_end(self) -> None:
        if not self._outputs:
            return
        predictions = self._predictions()
        metrics = self.task.score(predictions.probs, predictions.labels)
        nll = F.nll_loss(torch.log(torch.from_numpy(predictions.probs).clamp_min(1e-7)),
                         torch.from_numpy(predictions.labels))
        self.log_dict({f"val/{k}": float(v) for k, v in metrics.items() if k != "auroc"})
        self.log("val/loss", float(nll))
        self.log("val/auroc", float(metrics["auroc"]), prog_bar=True)  # the model-selection metric
        if not self.trainer.sanity_checking:  # kept with the checkpoint saved for this epoch (`on_save_checkpoint`)
            self.val_predictions = predictions.to_json()
        self._save_features()
        if self.trainer.state.fn == TrainerFn.VALIDATING:  # `finetune --test false`: the selected model, test unread
            self._score_final("val", predictions)

    def on_test_epoch_end(self) -> None:
        self._score_final("test", self._predictions())

    def _score_final(self, split: str, predictions) -> None:
        """Score the selected model once on `split` (test; or val when the test split stays unread) with
        patient-cluster bootstrap CIs: `final_results`, which `classifier_callbacks.ResultsWriter` writes."""
        results = evaluate(self.task, predictions, self.hparams.bootstrap_samples, self.hparams.ci_level)
        if split == "test":  # validation metrics are already logged under val/
            self.log_dict({f"test/{name}": m["value"] for name, m in results.items()})
        self.final_results = {"split": split, "metrics": results, "n_scored": int(len(predictions.labels)),
                              "n_patients": int(len(np.unique(predictions.patients))),
                              "level": self.task.level, f"{split}_predictions": predictions.to_json()}
        self._save_features()

    def run_name(self) -> str:
        data = self.data
        return f"{data.dataset}-{self.task.name}-{self.scheme}-{self.mode}-{data.label_tag}-seed{data.label_seed}"

    # ------------------------------------------------------------- optimiser
    def param_groups(self) -> list[dict] | None:
        if self.mode == "logistic":
            return None  # the head is fitted in closed form (`_fit_probe`); Lightning says it runs without one
        hp = self.hparams
        groups = param_groups(self.head, hp.weight_decay, hp.lr)
        if self.mode != "linear":
            encoder_lr = hp.lr * (hp.encoder_lr_scale if self.mode == "finetune" else 1.0)
            groups += param_groups(self.encoder, hp.weight_decay, encoder_lr)
        return groups

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        data = self.data
        checkpoint["lungheart_cl"] = {
            "kind": "classifier", "encoder_config": self.encoder.config, "frontend_config": self.frontend.config,
            "head_config": self.head_config.to_dict(),  # what `predict` rebuilds the head from (`heads.build_head`)
            "task": self.task.name, "classes": list(self.task.classes), "mode": self.mode, "scheme": self.scheme,
            "pretrained": self.provenance, "dataset": data.dataset if data is not None else None,
            # how audio was cut for training, so `predict` prepares new recordings identically
            "cache_config": asdict(data.cache_config) if data is not None else None,
            "probe": self.probe, "val_predictions": self.val_predictions}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("lungheart_cl", {})
        self.probe, self.val_predictions = meta.get("probe", self.probe), meta.get("val_predictions")
        self._features = None  # other weights may follow: the features are looked up again under their key
