"""Process-wide start-up settings: freed training memory is reused, not faulted in again every step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A training step's pattern: large blocks allocated, written and freed, again and again.
STEPS = """
import resource, sys, torch
if sys.argv[1] != "default":
    from lungheart_cl.runtime import keep_freed_memory
    assert keep_freed_memory() == (sys.argv[1] == "kept")
def step():
    blocks = [torch.ones(64, 1 << 18) for _ in range(6)]  # 6 x 64 MB, above glibc's mmap threshold
    return sum(float(b[0, 0]) for b in blocks)
for _ in range(3):  # the heap settles within a few steps
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""


def _faults_per_step(mode: str) -> int:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"} | ({"LUNGHEART_NO_MALLOPT": "1"} if mode == "off" else {})
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_heap_removes_the_page_faults_of_every_step():
    default, kept = _faults_per_step("default"), _faults_per_step("kept")
    pages_touched = 6 * 64 * (1 << 20) // 4096
    assert default > 0.9 * pages_touched  # every step faults its fresh pages in
    assert kept < 0.05 * pages_touched  # freed blocks are reused


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_no_mallopt_switch_leaves_the_default_heap():
    """LUNGHEART_NO_MALLOPT=1: `keep_freed_memory` does nothing, the bench's baseline (the script checks
    that it returns False)."""
    pages_touched = 6 * 64 * (1 << 20) // 4096
    assert _faults_per_step("off") > 0.9 * pages_touched
