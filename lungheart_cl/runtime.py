"""Process-wide settings for fast CPU training, applied once at start-up by the CLI and the bench.

glibc hands allocations above its mmap threshold (at most 32 MB) straight to the kernel and unmaps
them on free. A training step's activations and gradients are such blocks, so every step maps fresh
pages that the kernel must zero-fill: about a million minor page faults per step on a SmallCNN batch
of 256 heart windows, 40 % of the CPU time spent in the kernel (measured: 979k faults and 19 s of
system time over 8 steps, against 16k and 0.3 s with the heap kept; 1.7x the step rate). Keeping freed
memory in the heap lets the next step reuse it; peak memory is unchanged, it is only not given back.
``LUNGHEART_NO_MALLOPT=1`` leaves glibc's defaults, the baseline `make bench` measures against.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
_KEEP_BYTES = 1 << 30
NO_MALLOPT_ENV = "LUNGHEART_NO_MALLOPT"


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from the heap and keep freed ones; False where there is no glibc
    or `NO_MALLOPT_ENV` is set (to anything but 0)."""
    if os.environ.get(NO_MALLOPT_ENV, "") not in ("", "0"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # musl, macOS, Windows: their allocators differ
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
