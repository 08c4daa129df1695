"""The base of the two LightningModules: the front end's arguments, the data they see, one optimiser.

`ContrastivePretraining` and `Classifier` both turn waveform batches into log-mel spectrograms with a
`LogMelFrontend`, read the data only through the data module's `DataDescription`, and optimise with
a warmup + cosine schedule stepped per batch; that is declared here once.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lungheart_cl.data.description import DataDescription
from lungheart_cl.frontend import LogMelFrontend
from lungheart_cl.optim import OptimizerName, make_optimizer, warmup_cosine


class SoundModule(L.LightningModule):
    """Front end, data description and optimiser shared by pretraining and classification.

    The optimiser stays named by ``model.optimizer`` / ``model.lr`` / ``model.weight_decay`` /
    ``model.warmup_epochs`` / ``model.min_lr_ratio`` rather than LightningCLI's ``OptimizerCallable`` /
    ``LRSchedulerCallable``: those would replace these keys with ``model.optimizer.class_path`` /
    ``init_args.lr``, breaking every experiment YAML, the sweeps' ``args: {model.lr: ...}`` overrides and
    ``experiments/heart/pretrain.sh``, and a callable cannot size the warmup in epochs or build the
    per-group rates (no decay on biases and norms, ``encoder_lr_scale``) without the module's groups
    anyway. So the one `configure_optimizers` lives here and subclasses give only `param_groups`. The
    front end's arguments stay flat (``model.f_min``, not ``model.frontend.init_args.f_min``) for the
    same reason; they are declared here once and subclasses take them through ``**kwargs``.

    Args:
        sample_rate: audio rate of the cache (linked from the data module by the CLI).
        n_mels / window_ms / hop_ms / f_min / f_max / channel_norm: the log-mel front end (`LogMelFrontend`).
        stats_segments: training segments the front end's per-mel statistics are computed over (by the
            data module, which the CLI links this to).
        optimizer / lr / weight_decay: adam | adamw | lars | sgd.
        warmup_epochs / min_lr_ratio: linear warmup then cosine decay, stepped per batch.
    """

    def __init__(self, sample_rate: int = 4000, n_mels: int = 64, window_ms: float = 128.0, hop_ms: float = 32.0,
                 f_min: float = 50.0, f_max: float | None = None, channel_norm: bool = False,
                 stats_segments: int = 2000, optimizer: OptimizerName = "adamw", lr: float = 1e-3,
                 weight_decay: float = 1e-4, warmup_epochs: float = 0.0, min_lr_ratio: float = 0.01):
        super().__init__()
        # the modules a subclass is given are saved in its checkpoint's weights, not as hyperparameters
        self.save_hyperparameters(ignore=["encoder", "views", "loss"])
        self.frontend = LogMelFrontend(sample_rate, n_mels, window_ms, hop_ms, f_min, f_max, channel_norm)

    @property
    def data(self) -> DataDescription | None:
        """The attached data module's description (None without a trainer, a data module or its setup)."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer
            return None
        module = getattr(trainer, "datamodule", None)
        return getattr(module, "description", None)

    def check_sample_rate(self, data: DataDescription) -> None:
        if data.sample_rate != self.frontend.sample_rate:
            raise ValueError(f"model front end expects {self.frontend.sample_rate} Hz audio but the data module "
                             f"serves {data.sample_rate} Hz; set model.sample_rate (the CLI links it)")

    def fit_frontend(self, data: DataDescription) -> None:
        """Set the data module's front-end statistics, unless fitted already (a checkpoint's, a resumed run's)."""
        if bool(self.frontend.fitted):
            return
        stats, wanted = data.frontend_statistics, (self.frontend.config, self.hparams.stats_segments)
        if stats is None or (stats.config, stats.max_segments) != wanted:
            computed = (stats.config, stats.max_segments) if stats is not None else "none"
            raise ValueError(f"the data module computed front-end statistics for {computed}, but the model's front "
                             f"end and stats_segments are {wanted}; set data.frontend and data.stats_segments to "
                             f"the model's (the CLI links them)")
        self.frontend.set_statistics(stats.mean, stats.std)

    def param_groups(self) -> list[dict[str, Any]] | None:
        """The optimiser's parameter groups, each with its ``lr`` and ``weight_decay``; None = no optimiser."""
        raise NotImplementedError

    def configure_optimizers(self) -> dict | None:
        groups = self.param_groups()
        if groups is None:
            return None
        hp = self.hparams
        optimizer = make_optimizer(hp.optimizer, groups, hp.lr, hp.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(hp.warmup_epochs * total / max(self.trainer.max_epochs or 1, 1))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, hp.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
