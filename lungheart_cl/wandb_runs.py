"""The one W&B-mode policy (offline unless the user has logged in; ``WANDB_MODE`` wins) and W&B runs
that never block on the network. Light on purpose: no Lightning, and wandb only imported to start a run."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

WandbMode = Literal["online", "offline", "disabled"]


def wandb_logged_in() -> bool:
    """True when an API key is configured (environment or ~/.netrc), without touching the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode() -> WandbMode:
    """``WANDB_MODE`` wins (``dryrun`` is W&B's old name for offline); otherwise online only when an API key
    is configured, so nothing waits for a login."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("online", "offline", "disabled"):
        return mode  # type: ignore[return-value]
    if mode == "dryrun":
        return "offline"
    return "online" if wandb_logged_in() else "offline"


def start_wandb_run(project: str, name: str, job_type: str, save_dir: str | Path | None = None,
                    init_timeout: float = 15.0):
    """A new W&B run in `wandb_mode`, with a short init timeout and an offline fallback when the server is
    slow or refuses (sync later with ``wandb sync``)."""
    import wandb

    mode = wandb_mode()
    settings = wandb.Settings(init_timeout=init_timeout, silent=True, console="off", x_disable_stats=True)
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    init = {"project": project, "name": name, "job_type": job_type, "dir": save_dir, "settings": settings,
            "reinit": "create_new"}
    try:
        return wandb.init(mode=mode, **init)
    except wandb.Error as error:
        if mode != "online":
            raise
        log.warning("W&B online init failed (%s); logging offline", error)
        return wandb.init(mode="offline", **init)


def run_files_dir(run) -> Path | None:
    """Where a run keeps its files, or None for a disabled (no-op) run."""
    return None if run.settings.mode == "disabled" else Path(run.dir)
