"""Experiment tracking that never blocks: W&B offline unless the user has logged in."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


def wandb_logged_in() -> bool:
    """True when an API key is configured (environment or ~/.netrc), without touching the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class OfflineFirstWandbLogger(WandbLogger):
    """WandbLogger that runs offline (sync later with `wandb sync`) unless logged in or told otherwise.

    ``WANDB_MODE`` (online / offline / disabled) always wins, so tests and CI can set ``disabled``.
    """

    def __init__(self, project: str = "lungheart-cl", save_dir: str = "runs", offline: bool | None = None,
                 **kwargs):
        env_mode = os.environ.get("WANDB_MODE", "").lower()
        if env_mode == "disabled":  # Lightning's offline flag would overwrite WANDB_MODE with "dryrun"
            offline = False
            kwargs.setdefault("mode", "disabled")
        elif offline is None:
            offline = env_mode in ("offline", "dryrun") or (env_mode != "online" and not wandb_logged_in())
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("settings", _settings())
        super().__init__(project=project, save_dir=save_dir, offline=offline, **kwargs)


def _settings():
    import wandb

    return wandb.Settings(init_timeout=30, silent=True, console="off")
