"""What a training run prints: progress one line per epoch off a terminal, no known-harmless notices.

On a terminal Lightning's own TQDM bar is kept. Written to a file or a pipe, carriage-return
progress bars become megabytes of noise, so `EpochLines` prints one line per epoch instead.
`EpochLoggingInterval` fits the step-logging interval to short epochs rather than hiding the warning.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.trainer.states import TrainerFn

# Notices every run would print that say nothing about the run (matched on their exact text).
HARMLESS_WARNINGS = (
    # Lightning 2.6 still builds torch's deprecated LeafSpec; nothing for a user to change
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # by design: views and the log-mel front end run on the device, in the model's batch hook
    r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`",
)
FROZEN_ENCODER_WARNINGS = (
    # a probe keeps its frozen encoder in eval mode on purpose (batch-norm statistics of pretraining)
    r"Found \d+ module\(s\) in eval mode at the start of training",
    # the logistic probe is fitted in closed form: by design it has no optimizer
    r"`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer",
)
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(LITLOGGER_TIP)


def silence_known_notices(frozen_encoder: bool = False) -> None:
    """Filter the notices above out of this process (idempotent); `frozen_encoder` for the probes (linear, logistic)."""
    from lightning_utilities.core import rank_zero

    for message in HARMLESS_WARNINGS + (FROZEN_ENCODER_WARNINGS if frozen_encoder else ()):
        warnings.filterwarnings("ignore", message=message)
    rank_zero.log.addFilter(_not_an_advert)  # Lightning's rank-zero info logger; added once


def interactive() -> bool:
    """Both output streams are terminals (TQDM writes to stdout, logs go to stderr)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class EpochLines(ProgressBar):
    """Progress for logs: one line on stderr per training epoch (after its validation), per test run."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = time.monotonic()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _line(self, text: str) -> None:
        if self._enabled:
            print(f"{text} ({time.monotonic() - self._started:.1f} s)", file=sys.stderr, flush=True)

    def _start(self) -> None:
        self._started = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # inside fit, the epoch's line covers its validation
            self._start()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = "".join(f", {k} {v:.4g}" if isinstance(v, float) else f", {k} {v}" for k, v in metrics.items())
        self._line(f"epoch {trainer.current_epoch + 1}{epochs}: {trainer.num_training_batches} batches{shown}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            self._line(f"validation: {sum(trainer.num_val_batches)} batches")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._line(f"test: {sum(trainer.num_test_batches)} batches")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._line(f"predict: {sum(trainer.num_predict_batches)} batches")


class EpochLoggingInterval(Callback):
    """Caps ``Trainer.log_every_n_steps`` at the batches of one epoch, so every epoch logs its steps
    (and Lightning does not warn that a short epoch logs none)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.datamodule is None:
            return
        batches = len(trainer.datamodule.train_dataloader())
        limit = trainer.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        trainer.log_every_n_steps = max(1, min(trainer.log_every_n_steps, batches))


def run_callbacks(trainer_config: dict) -> list[Callback]:
    """The callbacks above for a Trainer configured with `trainer_config` (a LightningCLI trainer dict)."""
    callbacks: list[Callback] = [EpochLoggingInterval()]
    chosen = [c for c in trainer_config.get("callbacks") or [] if isinstance(c, ProgressBar)]
    if trainer_config.get("enable_progress_bar") is not False and not chosen and not interactive():
        callbacks.append(EpochLines())
    return callbacks
