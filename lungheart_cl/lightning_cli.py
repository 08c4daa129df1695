"""The Lightning CLI behind `lungheart-cl pretrain` and `lungheart-cl finetune`.

Every argument of the model, the data module and the Trainer can come from YAML (``--config``) or
the command line; the sample rate, number of classes and task are linked from the data module to
the model so they cannot disagree, and the model's front-end arguments to the data module, which
computes the front end's statistics. A setting the parser or a constructor rejects is a `ConfigError`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from unittest import mock

from lightning.pytorch.cli import LightningCLI

from lungheart_cl.errors import ConfigError, UserError

FRONTEND_ARGS = ("n_mels", "window_ms", "hop_ms", "f_min", "f_max", "channel_norm")  # `LogMelFrontend`'s but the rate


def _frontend_settings(*values) -> dict:
    return dict(zip(FRONTEND_ARGS, values))


def _frontend_settings_unless_loaded(checkpoint, *values) -> dict | None:
    """A classifier loading an encoder takes its front end, statistics included, from the checkpoint."""
    return None if checkpoint is not None else _frontend_settings(*values)

# What `--ckpt_path` of each command resumes: the `lungheart_cl.kind` its checkpoints carry.
RESUMES = {"pretrain": "pretrain", "finetune": "classifier"}


class _CLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume from this checkpoint ('last' = this run directory's last.ckpt)")
        parser.link_arguments("data.sample_rate", "model.sample_rate", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("model.stats_segments", "data.stats_segments", apply_on="parse")
        self.link_frontend(parser)

    def link_frontend(self, parser) -> None:
        parser.link_arguments(tuple(f"model.{name}" for name in FRONTEND_ARGS), "data.frontend",
                              compute_fn=_frontend_settings, apply_on="parse")

    def _instantiate_trainer(self, config: dict, callbacks: list):
        from lungheart_cl.console import run_callbacks

        return super()._instantiate_trainer(config, [*callbacks, *run_callbacks(config)])


class _FinetuneCLI(_CLI):
    def link_frontend(self, parser) -> None:
        parser.link_arguments(("model.checkpoint", *(f"model.{name}" for name in FRONTEND_ARGS)), "data.frontend",
                              compute_fn=_frontend_settings_unless_loaded, apply_on="parse")

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.task_name", "model.task", apply_on="instantiate")
        parser.add_argument("--test", type=bool, default=True,
                            help="score the selected checkpoint on the test patients (false: on the validation "
                                 "patients, the test split unread; for choosing recipes)")


class _ParseOnly:
    """Mixin: a LightningCLI that stops after parsing (no model, data module or trainer is built)."""

    def instantiate_classes(self) -> None:
        pass


def _trainer_defaults(command: str) -> dict:
    """What every run of a command gets unless the YAML or command line says otherwise."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from lungheart_cl.callbacks import (EncoderExport, PairFallbackMonitor, RandomStateCheckpoint,
                                        ResumableModelCheckpoint, SelectionCheckpoint)
    from lungheart_cl.classifier_callbacks import EmbeddingPlot, PretrainingLeakCheck, ResultsWriter

    loggers = [{"class_path": "lungheart_cl.tracking.RunFolderCSVLogger",
                "init_args": {"save_dir": "runs", "name": command}},
               {"class_path": "lungheart_cl.tracking.OfflineFirstWandbLogger",
                "init_args": {"project": "lungheart-cl", "save_dir": "runs", "job_type": command}}]
    if command == "pretrain":  # checkpoints: best by model.monitor (validation kNN or task-probe AUROC), and last
        # last.ckpt by its own callback: save_last=True rewrites it only in epochs that improve the best
        callbacks = [SelectionCheckpoint(filename="best-{epoch:02d}"),
                     ModelCheckpoint(filename="last"), LearningRateMonitor(logging_interval="step"),
                     EncoderExport(), RandomStateCheckpoint(), PairFallbackMonitor()]
    else:  # model selection on the validation patients only
        callbacks = [ResumableModelCheckpoint(monitor="val/auroc", mode="max", filename="best-{epoch:02d}"),
                     RandomStateCheckpoint(), PretrainingLeakCheck(), EmbeddingPlot(), ResultsWriter()]
    # Our samplers shard batches over ranks themselves (metadata-stratified batches, exact evaluation).
    return {"use_distributed_sampler": False, "num_sanity_val_steps": 0, "default_root_dir": "runs",
            "log_every_n_steps": 5, "logger": loggers, "callbacks": callbacks,
            "plugins": [{"class_path": "lungheart_cl.checkpointing.AtomicCheckpointIO"}]}


def make_cli(command: str, args: list[str], instantiate: bool = True) -> LightningCLI:
    """Parse and instantiate (model, data, trainer) without running anything.

    With ``instantiate=False`` only parse: `cli.parser.parse_args(other_args)` then checks another
    argument list as a real run would (config files read, types, class paths), raising
    `argparse.ArgumentError` instead of exiting.
    """
    from lungheart_cl.console import silence_known_notices

    os.environ.setdefault("WANDB_SILENT", "true")
    silence_known_notices()
    kwargs = dict(run=False, args=args, trainer_defaults=_trainer_defaults(command),
                  save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False,
                  parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False})  # errors -> ConfigError
    if command == "pretrain":
        from lungheart_cl.data.datamodule import PretrainDataModule
        from lungheart_cl.pretrain import ContrastivePretraining

        cli_class, model_class, data_class = _CLI, ContrastivePretraining, PretrainDataModule
    elif command == "finetune":
        from lungheart_cl.classify import Classifier
        from lungheart_cl.data.datamodule import ClassificationDataModule

        cli_class, model_class, data_class = _FinetuneCLI, Classifier, ClassificationDataModule
    else:
        raise ValueError(f"unknown command {command!r}")
    if not instantiate:
        cli_class = type(f"ParseOnly{cli_class.__name__}", (_ParseOnly, cli_class), {})
    # `args` already holds the whole command line; hiding sys.argv while parsing silences Lightning's
    # "args and command line" warning. It is restored before fit, which DDP's launcher re-executes.
    try:
        with mock.patch.object(sys, "argv", sys.argv[:1]):
            cli = cli_class(model_class, data_class, **kwargs)
    except UserError:
        raise
    except (argparse.ArgumentError, ValueError) as error:  # rejected by the parser or by a constructor
        raise ConfigError(f"{error} (see `lungheart-cl {command} --help`)") from error
    from lungheart_cl.classify import FROZEN_MODES

    silence_known_notices(frozen_encoder=getattr(getattr(cli, "model", None), "mode", None) in FROZEN_MODES)
    return cli


def check_resume_checkpoint(command: str, ckpt_path: str | None, model) -> None:
    """`--ckpt_path` must hold this command's kind of run and the configured model; name the mismatch
    before Lightning's strict load reports it as unexpected state-dict keys."""
    if ckpt_path is None or ckpt_path in ("last", "best", "hpc") or ckpt_path.startswith("registry"):
        return  # names Lightning resolves to this run's own checkpoints
    from lungheart_cl.checkpointing import EXPORT_FORMAT, CheckpointError, check_same_encoder, read_checkpoint

    path, expected = Path(ckpt_path), RESUMES[command]
    payload = read_checkpoint(path)
    meta = payload.get("lungheart_cl", {}) if "state_dict" in payload else {}
    found = "an exported encoder" if payload.get("format") == EXPORT_FORMAT else (
        f"a {meta['kind']} checkpoint" if meta.get("kind") else "not a lungheart-cl checkpoint")
    if meta.get("kind") != expected:
        hint = "; start a classifier from a pretrained encoder with --model.checkpoint" if command == "finetune" else ""
        raise CheckpointError(f"{path}: {found}, but `lungheart-cl {command} --ckpt_path` resumes a {expected} "
                              f"run{hint}")
    check_same_encoder(model.encoder.config, meta["encoder_config"], path)
    if command == "finetune" and meta.get("mode") != model.mode:  # linear and finetune heads differ
        raise CheckpointError(f"{path}: a classifier checkpoint of model.mode {meta.get('mode')}, but this run's "
                              f"model.mode is {model.mode}")


def run_lightning_cli(command: str, args: list[str]) -> LightningCLI:
    """pretrain: fit. finetune: fit, select on validation, then test the selected checkpoint once (with
    ``--test false``: score it on validation instead)."""
    cli = make_cli(command, args)
    check_resume_checkpoint(command, cli.config.get("ckpt_path"), cli.model)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"), weights_only=True)
    if command == "finetune":
        best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
        final = cli.trainer.test if cli.config.get("test", True) else cli.trainer.validate
        final(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, weights_only=True)
    return cli
