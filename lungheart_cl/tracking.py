"""Lightning loggers that never block (W&B in `wandb_runs.wandb_mode`: offline unless the user has logged in)
and leave no empty run folders."""

from __future__ import annotations

from pathlib import Path

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from lungheart_cl.wandb_runs import wandb_mode


class OfflineFirstWandbLogger(WandbLogger):
    """WandbLogger in `wandb_mode` (offline unless logged in; ``WANDB_MODE`` wins, so tests and CI can set
    ``disabled``) unless ``offline`` says otherwise; sync offline runs later with `wandb sync`."""

    def __init__(self, project: str = "lungheart-cl", save_dir: str = "runs", offline: bool | None = None,
                 **kwargs):
        mode = wandb_mode()
        if mode == "disabled":  # Lightning's offline flag would overwrite WANDB_MODE with "dryrun"
            offline = False
            kwargs.setdefault("mode", "disabled")
        elif offline is None:
            offline = mode == "offline"
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("settings", _settings())
        super().__init__(project=project, save_dir=save_dir, offline=offline, **kwargs)
        # Lightning always passes wandb.init(anonymous=...), which W&B ignores and warns about on every run
        self._wandb_init.pop("anonymous", None)


def _settings():
    import wandb

    return wandb.Settings(init_timeout=30, silent=True, console="off")


class RunFolderCSVLogger(CSVLogger):
    """CSVLogger whose run folder (``runs/<name>/version_N``) appears with its first file.

    Lightning creates every logger's experiment before the data module's ``setup``; with the plain
    CSVLogger, a run that fails its data checks (a label fraction that selects no patient of a class)
    leaves an empty ``version_N`` folder behind.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _FolderOnWriteExperiment(self.log_dir)
        return self._experiment


class _FolderOnWriteExperiment(ExperimentWriter):
    """ExperimentWriter that creates its folder on the first write rather than on construction."""

    def __init__(self, log_dir: str) -> None:
        existed = get_filesystem(log_dir).isdir(log_dir)
        super().__init__(log_dir)
        if not existed:  # the parent class has just created it, empty
            self._fs.rmdir(log_dir)

    def log_hparams(self, params: dict) -> None:
        self._fs.makedirs(self.log_dir, exist_ok=True)
        super().log_hparams(params)

    def save(self) -> None:
        if self.metrics:
            self._fs.makedirs(self.log_dir, exist_ok=True)
        super().save()
