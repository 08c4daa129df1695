"""The Lightning CLI behind `lungheart-cl pretrain` and `lungheart-cl finetune`.

Every argument of the model, the data module and the Trainer can come from YAML (``--config``) or
the command line; the sample rate, number of classes and task are linked from the data module to
the model so they cannot disagree.
"""

from __future__ import annotations

import os
import sys
from unittest import mock

from lightning.pytorch.cli import LightningCLI


class _CLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume from this checkpoint ('last' = this run directory's last.ckpt)")
        parser.link_arguments("data.sample_rate", "model.sample_rate", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")


class _FinetuneCLI(_CLI):
    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.task_name", "model.task", apply_on="instantiate")


def _trainer_defaults(command: str) -> dict:
    """What every run of a command gets unless the YAML or command line says otherwise."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from lungheart_cl.callbacks import EncoderExport, RandomStateCheckpoint, ResumableModelCheckpoint

    loggers = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": "runs", "name": command}},
               {"class_path": "lungheart_cl.tracking.OfflineFirstWandbLogger",
                "init_args": {"project": "lungheart-cl", "save_dir": "runs", "job_type": command}}]
    if command == "pretrain":  # checkpoints: best by validation kNN AUROC (higher is better), and last
        # last.ckpt by its own callback: save_last=True rewrites it only in epochs that improve the best
        callbacks = [ResumableModelCheckpoint(monitor="val/knn_auroc", mode="max", filename="best-{epoch:02d}"),
                     ModelCheckpoint(filename="last"), LearningRateMonitor(logging_interval="step"),
                     EncoderExport(), RandomStateCheckpoint()]
    else:  # model selection on the validation patients only
        callbacks = [ResumableModelCheckpoint(monitor="val/auroc", mode="max", filename="best-{epoch:02d}"),
                     RandomStateCheckpoint()]
    # Our samplers shard batches over ranks themselves (metadata-stratified batches, exact evaluation).
    return {"use_distributed_sampler": False, "num_sanity_val_steps": 0, "default_root_dir": "runs",
            "log_every_n_steps": 5, "logger": loggers, "callbacks": callbacks,
            "plugins": [{"class_path": "lungheart_cl.checkpointing.AtomicCheckpointIO"}]}


def make_cli(command: str, args: list[str]) -> LightningCLI:
    """Parse and instantiate (model, data, trainer) without running anything."""
    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs = dict(run=False, args=args, trainer_defaults=_trainer_defaults(command),
                  save_config_kwargs={"overwrite": True},
                  parser_kwargs={"parser_mode": "omegaconf"}, auto_configure_optimizers=False)
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
    # `args` already holds the whole command line; hiding sys.argv while parsing silences Lightning's
    # "args and command line" warning. It is restored before fit, which DDP's launcher re-executes.
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        return cli_class(model_class, data_class, **kwargs)


def run_lightning_cli(command: str, args: list[str]) -> LightningCLI:
    """pretrain: fit. finetune: fit, select on validation, then test the selected checkpoint once."""
    cli = make_cli(command, args)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"), weights_only=True)
    if command == "finetune":
        best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, weights_only=True)
    return cli
