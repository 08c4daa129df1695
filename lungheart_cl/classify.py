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
only; `on_test_epoch_end` scores the test patients once, with patient-cluster bootstrap CIs, and
writes the run's results JSON with the per-unit test and validation predictions. `finetune --test
false` scores the selected model on the validation patients instead (``split: val`` in the results,
the file named ``...-val.json``) and never reads the test split: the runs that choose a recipe.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from lungheart_cl.checkpointing import CheckpointError, check_same_encoder, load_pretrained
from lungheart_cl.data.pool import pretrained_sources
from lungheart_cl.data.tasks import Task
from lungheart_cl.encoders import Encoder, SmallCNN
from lungheart_cl.feature_cache import FeatureStore, feature_key
from lungheart_cl.frontend import LogMelFrontend
from lungheart_cl.metrics import aggregate, evaluate
from lungheart_cl.optim import OptimizerName, make_optimizer, param_groups, warmup_cosine
from lungheart_cl.probe import DEFAULT_C_GRID, MAX_FOLDS, fit_logistic_probe, linear_head_weights
from lungheart_cl.views import ViewPipeline

log = logging.getLogger(__name__)

Mode = Literal["linear", "logistic", "finetune", "scratch"]
MODES = ("linear", "logistic", "finetune", "scratch")
FROZEN_MODES = ("linear", "logistic")  # the encoder never trains: its features are computed once


class Standardize(nn.Module):
    """(x - mean) / std with statistics fitted once (`fit`), stored as buffers."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, features: Tensor) -> None:
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def resolve_checkpoint(checkpoint: str | None, runs_dir: str = "runs/pretrain") -> str | None:
    """'latest' = the newest encoder exported by `lungheart-cl pretrain` (under runs/pretrain/);
    sweeps keep their own pretrainings under their runs_dir, so they never become 'latest'."""
    if checkpoint != "latest":
        return checkpoint
    candidates = sorted(Path(runs_dir).glob("**/encoder-best.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise CheckpointError(f"checkpoint 'latest': no encoder-best.pt under {runs_dir}/; run `make pretrain` first")
    return str(candidates[-1])


class Classifier(L.LightningModule):
    """Diagnosis classifier on top of a (pretrained or random) encoder.

    Args:
        mode: linear | logistic | finetune | scratch (see module docstring).
        checkpoint: pretraining checkpoint (.ckpt) or exported encoder (.pt); 'latest' = the newest
            ``encoder-best.pt`` under runs/pretrain/ (`make pretrain`); None = random initialisation.
        encoder: the encoder to build without a checkpoint; with one, it must match the checkpoint's.
        views: augmentation of the training batches in finetune/scratch modes (None = none).
        sample_rate / num_classes / task: linked from the data module by the CLI.
        n_mels / window_ms / hop_ms / f_min / f_max / channel_norm: front end when not loaded from a checkpoint.
        head_hidden_dim: 0 = a linear head; > 0 = an MLP head with one hidden layer (not in logistic mode).
        lr / encoder_lr_scale / weight_decay / optimizer / warmup_epochs / min_lr_ratio: optimisation.
        class_weighting: "balanced" weights the loss (logistic: the regression's samples) by inverse
            class frequency of the labelled set.
        logistic_c_grid / logistic_max_folds: logistic mode's grid of C and most CV folds (None = the
            default grid, 13 values from 1e-4 to 1e2; see `lungheart_cl.probe`).
        feature_cache_dir: linear / logistic modes: where frozen features are kept across runs;
            "auto" = ``features/`` inside the data module's segment cache directory, None = in memory only.
        bootstrap_samples / ci_level: test-set confidence intervals (patients resampled).
        results_dir: where the results JSON of the run (and its embedding picture) is written.
        embedding_plot: 2-D projection of the test embeddings drawn at the end: pca | tsne | none.
        scheme: name of the pretraining scheme for reports (default: from the checkpoint, or the mode).
    """

    def __init__(self, mode: Mode = "linear", checkpoint: str | None = None, encoder: Encoder | None = None,
                 views: ViewPipeline | None = None, sample_rate: int = 4000, num_classes: int = 2,
                 task: str = "healthy_vs_disease", n_mels: int = 64, window_ms: float = 128.0, hop_ms: float = 32.0,
                 f_min: float = 50.0, f_max: float | None = None, channel_norm: bool = False, head_hidden_dim: int = 0, dropout: float = 0.0,
                 optimizer: OptimizerName = "adamw", lr: float = 1e-3, encoder_lr_scale: float = 0.1,
                 weight_decay: float = 1e-4, warmup_epochs: float = 0.0, min_lr_ratio: float = 0.01,
                 class_weighting: Literal["balanced", "none"] = "balanced", bootstrap_samples: int = 1000,
                 ci_level: float = 0.95, results_dir: str = "runs/results", scheme: str | None = None,
                 stats_segments: int = 2000, embedding_plot: Literal["pca", "tsne", "none"] = "pca",
                 logistic_c_grid: list[float] | None = None, logistic_max_folds: int = MAX_FOLDS,
                 feature_cache_dir: str | None = "auto"):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "views"])
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
            self.frontend = LogMelFrontend(sample_rate, n_mels, window_ms, hop_ms, f_min, f_max, channel_norm)
        default_scheme = "pretrained" if checkpoint else "supervised_scratch" if mode == "scratch" else "random_init"
        self.scheme = scheme or self.provenance.get("scheme") or default_scheme
        self.views = views
        dim = self.encoder.embedding_dim
        # standardising features makes one learning rate suit any encoder's feature scale: fixed
        # statistics of the labelled set for a frozen encoder, batch statistics while it trains
        self.frozen = mode in FROZEN_MODES
        norm = Standardize(dim) if self.frozen else nn.BatchNorm1d(dim, affine=False)
        head: list[nn.Module] = [norm, nn.Dropout(dropout)]
        head += ([nn.Linear(dim, head_hidden_dim), nn.ReLU(inplace=True), nn.Linear(head_hidden_dim, num_classes)]
                 if head_hidden_dim else [nn.Linear(dim, num_classes)])
        self.head = nn.Sequential(*head)
        if self.frozen:
            self.encoder.requires_grad_(False)
        # logistic: the head is fitted in closed form at fit start, so Lightning takes no optimizer steps
        self.automatic_optimization = mode != "logistic"
        self.register_buffer("class_weights", torch.ones(num_classes), persistent=False)
        self.probe: dict | None = None  # logistic mode: chosen C and its cross-validated AUROC
        self._val_predictions: dict | None = None  # the last validation epoch's, as written to the results JSON
        self._feature_cache: Tensor | None = None  # frozen features by cache row, NaN = not computed yet
        self._unsaved: Tensor | None = None  # rows computed in this process and not yet in the feature store
        self._feature_store: FeatureStore | None = None
        self._outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self._test_features: list[Tensor] = []
        self.final_results: dict | None = None  # the selected model's scores on its final split (`_score_final`)
        self.results_path: Path | None = None

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule if self.trainer is not None else None
        if data is None:
            return
        if data.sample_rate != self.frontend.sample_rate:
            raise ValueError(f"front end expects {self.frontend.sample_rate} Hz, data module serves {data.sample_rate} Hz")
        if data.task_name != self.task_name or data.num_classes != self.hparams.num_classes:
            raise ValueError(f"model task {self.task_name} ({self.hparams.num_classes} classes) differs from the data "
                             f"module's task {data.task_name} ({data.num_classes} classes)")
        self.task = data.task
        self._check_pretraining_did_not_see(data)
        if stage == "fit":
            if not bool(self.frontend.fitted):
                from lungheart_cl.data.statistics import fit_frontend_statistics

                fit_frontend_statistics(self.frontend, data, max_segments=self.hparams.stats_segments)
            labels = data.labels[data.labelled_rows]
            counts = np.bincount(labels, minlength=self.task.num_classes).astype(float)
            if self.hparams.class_weighting == "balanced":
                weights = counts.sum() / (self.task.num_classes * np.maximum(counts, 1))
                self.class_weights = torch.as_tensor(weights, dtype=torch.float32, device=self.device)

    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
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

    def _fit_probe(self, features: Tensor, data) -> None:
        """Logistic mode: C by patient-grouped CV on the labelled rows only, the fit folded into the head."""
        hp, rows = self.hparams, data.labelled_rows
        labels, manifest, metric = data.labels[rows], data.manifest, self.task.score

        def task_level_auroc(probs: np.ndarray, windows: np.ndarray) -> float:  # as validation and test are scored
            predictions = aggregate(probs, labels[windows], rows[windows], manifest, self.task.level)
            return metric(predictions.probs, predictions.labels)["auroc"]

        fit = fit_logistic_probe(features.cpu().numpy(), labels, manifest["patient_id"][rows], task_level_auroc,
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

    def _check_pretraining_did_not_see(self, data) -> None:
        """No source of the pretraining pool of this dataset may hold this run's validation or test patients."""
        held_out = set(data.split.patients(data.manifest, "val")) | set(data.split.patients(data.manifest, "test"))
        leaked_patients: set[str] = set()
        leaks = []
        for source in pretrained_sources(self.provenance.get("data", {})):
            leaked = sorted(held_out & set(source["pool_patients"])) if source.get("dataset") == data.dataset else []
            if leaked:
                leaked_patients.update(leaked)
                more = f" and {len(leaked) - 5} more" if len(leaked) > 5 else ""
                leaks.append(f"source {source['name']} (dataset {source['dataset']}) patient(s) "
                             f"{', '.join(leaked[:5])}{more}")
        if leaks:
            raise CheckpointError(
                f"{self.provenance.get('checkpoint')}: pretrained on {len(leaked_patients)} patient(s) that are in "
                f"this run's validation/test split: {'; '.join(leaks)}; pretrain and evaluate with the same "
                f"data.split, val_fraction, test_fraction and split_seed")

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
        if self._trainer is None:  # no data module, so no rows to cache by
            return self._encode_frozen(batch)
        # frozen encoder: each segment's features are computed once, then read from the cache
        index, table = batch["index"], self._feature_table()
        cached = table[index]
        missing = torch.isnan(cached[:, 0])
        if bool(missing.any()):
            cached[missing] = self._encode_frozen({k: v[missing] for k, v in batch.items() if k in ("wave", "valid")})
            table[index] = cached
            self._unsaved[index[missing].cpu()] = True
        return cached

    @torch.no_grad()
    def _encode_frozen(self, batch: dict) -> Tensor:
        self.encoder.eval()  # hooks such as on_fit_start run before Lightning's train()/eval() switch
        with torch.autocast(self.device.type, enabled=False):  # stored features must not depend on the precision
            return self.encoder(self._spec(batch, False)).float()

    def _feature_table(self) -> Tensor:
        """(cache rows, embedding_dim) frozen features, NaN where not computed yet; on first use it is
        filled from the feature store of this encoder, front end and segment cache, if any."""
        if self._feature_cache is not None:
            return self._feature_cache
        data = self.trainer.datamodule
        size, dim = int(data.labels.shape[0]), self.encoder.embedding_dim
        with torch.inference_mode(False):  # first used inside a validation or test loop, it must stay writable
            table = torch.full((size, dim), float("nan"), device=self.device)
            self._unsaved = torch.zeros(size, dtype=torch.bool)
        self._feature_store = None
        if self.hparams.feature_cache_dir is not None:
            root = (Path(data.cache.directory) / "features" if self.hparams.feature_cache_dir == "auto"
                    else Path(self.hparams.feature_cache_dir))
            self._feature_store = FeatureStore(root, feature_key(self.encoder, self.frontend, data.cache.info["key"]),
                                               size, dim)
            rows, stored = self._feature_store.load()
            table[torch.from_numpy(rows).to(self.device)] = torch.from_numpy(stored).to(self.device)
        self._feature_cache = table
        return table

    def _frozen_features(self, rows: np.ndarray) -> Tensor:
        """Features of these cache rows; only rows not cached yet are read and encoded."""
        data, table = self.trainer.datamodule, self._feature_table()
        index = torch.as_tensor(rows, device=self.device)
        missing = np.asarray(rows)[torch.isnan(table[index, 0]).cpu().numpy()]
        for batch in data.iterate_rows(missing):
            self.features({k: v.to(self.device) for k, v in batch.items() if k != "meta"})
        self._save_features()
        return table[index]

    def _save_features(self) -> None:
        """Add the rows computed since the last save to the feature store (rank 0; every rank computes the same)."""
        store, unsaved = self._feature_store, self._unsaved
        if store is None or unsaved is None or not bool(unsaved.any()) or not self.trainer.is_global_zero:
            return
        rows = unsaved.nonzero().flatten()
        try:
            store.save(rows.numpy(), self._feature_cache[rows.to(self.device)].cpu().numpy())
        except OSError as error:  # e.g. a read-only cache: the run goes on, its features stay in memory
            log.warning("%s: cannot write the feature store (%s); features are kept in memory only", store.path, error)
            self._feature_store = None
        unsaved[rows] = False

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

    def test_step(self, batch: dict, batch_idx: int) -> None:
        features = self._collect(batch)
        if self.hparams.embedding_plot != "none":
            self._test_features.append(features.detach().float().cpu())

    def _predictions(self):
        outputs, self._outputs = self._outputs, []
        probs, labels, rows = (torch.cat(parts).cpu().numpy() for parts in zip(*outputs))
        return aggregate(probs, labels, rows, self.trainer.datamodule.manifest, self.task.level)

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
            self._val_predictions = predictions.to_json()
        self._save_features()
        if self.trainer.state.fn == TrainerFn.VALIDATING:  # `finetune --test false`: the selected model, test unread
            self._score_final("val", predictions)

    def on_test_epoch_end(self) -> None:
        rows = torch.cat([index for _, _, index in self._outputs]).cpu().numpy()
        self._score_final("test", self._predictions())
        if self.trainer.is_global_zero and self._test_features:
            self._plot_embeddings(torch.cat(self._test_features).numpy(), rows)
        self._test_features = []

    def _score_final(self, split: str, predictions) -> None:
        """Score the selected model once on `split` (test; or val when the test split stays unread) with
        patient-cluster bootstrap CIs, and write the results JSON."""
        results = evaluate(self.task, predictions, self.hparams.bootstrap_samples, self.hparams.ci_level)
        if split == "test":  # validation metrics are already logged under val/
            self.log_dict({f"test/{name}": m["value"] for name, m in results.items()})
        self.final_results = {"split": split, "metrics": results, "n_scored": int(len(predictions.labels)),
                              "n_patients": int(len(np.unique(predictions.patients))),
                              "level": self.task.level, f"{split}_predictions": predictions.to_json()}
        self._save_features()
        if self.trainer.is_global_zero:
            self.results_path = self._write_results()

    def _plot_embeddings(self, features: np.ndarray, rows: np.ndarray) -> None:
        """Test embeddings in 2-D, coloured by label and by metadata; PNG beside the results, and in W&B."""
        from lungheart_cl.embeddings import log_embeddings_to_wandb, plot_embeddings, project_embeddings

        manifest = self.trainer.datamodule.manifest
        labels = self.trainer.datamodule.labels[rows]
        colour_by = {"label": [self.task.classes[i] for i in labels]}
        colour_by |= {name: manifest[name][rows].tolist() for name in ("age_group", "sex", "location", "device")}
        points = project_embeddings(features, self.hparams.embedding_plot)
        path = Path(self.hparams.results_dir) / f"{self.run_name()}-embeddings.png"
        plot_embeddings(points, colour_by, path, f"{self.run_name()}: test embeddings ({self.hparams.embedding_plot})")
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                log_embeddings_to_wandb(points, colour_by, image=path, key="test/embeddings", run=logger.experiment)

    # --------------------------------------------------------------- results
    def run_name(self) -> str:
        data = self.trainer.datamodule
        return f"{data.dataset}-{self.task.name}-{self.scheme}-{self.mode}-{data.label_tag}-seed{data.label_seed}"

    def _write_results(self) -> Path:
        data = self.trainer.datamodule
        checkpoint_cb = self.trainer.checkpoint_callback
        payload = {
            "run": self.run_name(), "dataset": data.dataset, "task": self.task.name, "level": self.task.level,
            "scheme": self.scheme, "mode": self.mode, "label_fraction": data.label_fraction,
            "seed": data.label_seed, "global_seed": int(os.environ.get("PL_GLOBAL_SEED", -1)),
            "ci": {"method": "patient-cluster bootstrap, percentile", "samples": self.hparams.bootstrap_samples,
                   "level": self.hparams.ci_level},
            **self.final_results,
            "best_val_auroc": float(checkpoint_cb.best_model_score) if checkpoint_cb and
            checkpoint_cb.best_model_score is not None else None,
            "selected_checkpoint": checkpoint_cb.best_model_path if checkpoint_cb else None,
            # the selected checkpoint's validation predictions, to choose recipes on validation
            "val_predictions": self._val_predictions, "probe": self.probe,
            "pretrained": self.provenance, "data": data.summary(),
            "config": {"model": dict(self.hparams), "data": dict(data.hparams)},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        # a validation-only run (`--test false`) never replaces the test results of the same run name
        suffix = "" if payload["split"] == "test" else f"-{payload['split']}"
        path = Path(self.hparams.results_dir) / f"{payload['run']}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        os.replace(tmp, path)
        print(f"results: {path}")
        return path

    # ------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict | None:
        if self.mode == "logistic":
            return None  # the head is fitted in closed form (`_fit_probe`); Lightning says it runs without one
        hp = self.hparams
        groups = param_groups(self.head, hp.weight_decay, hp.lr)
        if self.mode != "linear":
            encoder_lr = hp.lr * (hp.encoder_lr_scale if self.mode == "finetune" else 1.0)
            groups += param_groups(self.encoder, hp.weight_decay, encoder_lr)
        optimizer = make_optimizer(hp.optimizer, groups, hp.lr, hp.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(hp.warmup_epochs * total / max(self.trainer.max_epochs or 1, 1))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, hp.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        data = self._trainer.datamodule if self._trainer is not None else None
        checkpoint["lungheart_cl"] = {
            "kind": "classifier", "encoder_config": self.encoder.config, "frontend_config": self.frontend.config,
            "task": self.task.name, "classes": list(self.task.classes), "mode": self.mode, "scheme": self.scheme,
            "pretrained": self.provenance, "dataset": data.dataset if data is not None else None,
            # how audio was cut for training, so `predict` prepares new recordings identically
            "cache_config": asdict(data.cache_config) if data is not None else None,
            "probe": self.probe, "val_predictions": self._val_predictions}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("lungheart_cl", {})
        self.probe, self._val_predictions = meta.get("probe", self.probe), meta.get("val_predictions")
        self._feature_cache = None  # other weights may follow: the features are looked up again under their key
