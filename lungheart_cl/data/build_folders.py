"""What a killed cache build leaves, and how the next one tells it from a live concurrent build.

A build works in ``.building-{cache name}.{pid}@{host}.{token}`` beside its target: a later build on
the same host removes the folders whose builder process is gone (a ``kill -9`` runs no cleanup) and
keeps the others (a live concurrent build; another host's, which it cannot check). Its pool workers
end with their builder instead of living on as orphans that hold memory.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

BUILD_PREFIX = ".building-"
# Cache names hold no "." or "@", host names no "@".
BUILD_NAME = re.compile(r"\.building-(?P<cache>[^.@]+)\.(?P<pid>\d+)@(?P<host>[^@]+)\.[0-9a-f]+")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def new_build_directory(target: Path) -> Path:
    """An empty folder beside `target` named after its builder, so a later build can tell a dead
    builder's debris from a live concurrent build. os.mkdir applies the umask (mkdtemp's private
    0700 would survive the rename and lock the group out of a shared cache)."""
    while True:
        name = f"{BUILD_PREFIX}{target.name}.{os.getpid()}@{socket.gethostname()}.{secrets.token_hex(4)}"
        try:
            os.mkdir(target.parent / name)
            return target.parent / name
        except FileExistsError:
            continue


def remove_stale_builds(cache_root: Path) -> list[Path]:
    """Delete the build folders in `cache_root` whose builder, a process on this host, is gone (a build
    killed with kill -9 cannot clean up). Live builders' folders and other hosts' are kept."""
    host, removed = socket.gethostname(), []
    for path in Path(cache_root).glob(f"{BUILD_PREFIX}*"):
        match = BUILD_NAME.fullmatch(path.name)
        if match and match["host"] == host and not _process_alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s, left by build process %s that is gone", path, match["pid"])
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def end_with_parent(parent: int) -> None:
    """Pool-worker initializer: the worker ends when its builder does, even by kill -9 (no orphans
    holding memory). Linux: the kernel kills it (PR_SET_PDEATHSIG); elsewhere a thread watches."""
    if not _kill_me_when_parent_dies():
        threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the builder died before the signal was armed
        os._exit(1)


def _kill_me_when_parent_dies() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
