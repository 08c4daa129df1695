"""What every section shares: sizes, the benchmark data, a timer, PASS/FAIL checks, tables, memory probes."""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from torch.utils.data import DataLoader

from lungheart_cl.data.datamodule import PretrainDataModule

T = TypeVar("T")
# What the benchmark measures: a synthetic dataset of this registered kind, `ICBHI_SIZED` in full size.
BENCH_DATASET = "icbhi"
# About the size of the real ICBHI database: 126 patients, ~920 recordings, ~5.5 hours.
ICBHI_SIZED = {"patients": 126, "recordings_per_patient": 920 / 126, "duration_s": 20.0}


@dataclass(frozen=True)
class Sizes:
    """How much each section does; `QUICK` is for the test (seconds, tiny data)."""

    dataset: dict  # options of `synthesize(BENCH_DATASET, ...)`; empty = `ICBHI_SIZED`
    rounds: int = 3  # each measurement and its baseline run in turn this often; the best round counts
    naive_decode_fraction: float = 0.1  # recordings the librosa baseline decodes
    loader_batch: int = 128
    loader_warmup: int = 10
    loader_batches: int = 200  # per round
    naive_loader_batches: int = 50
    encoders: tuple[str, ...] = ("SmallCNN", "ResNet18Encoder")  # sections 3, 5, 6
    step_batch: int = 64  # pairs; twice as many views
    step_warmup: int = 2
    step_steps: dict = field(default_factory=lambda: {"SmallCNN": 15, "ResNet18Encoder": 6})  # per round
    reference_steps: dict = field(default_factory=lambda: {"SmallCNN": 8, "ResNet18Encoder": 4})
    loss_pairs: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    loss_min_seconds: float = 0.5  # each size repeats until this long (at least one call after a warm-up)
    memory_warmup: int = 1  # section 5: a fresh process per encoder and pipeline
    memory_steps: int = 2
    gpu_batch: int = 256
    gpu_warmup: int = 5
    gpu_steps: int = 30
    workers: int = 2


FULL = Sizes(dataset={})
QUICK = Sizes(dataset={"patients": 12, "recordings_per_patient": 2.0, "duration_s": 8.0}, rounds=1,
              naive_decode_fraction=0.5, loader_batch=16, loader_warmup=2, loader_batches=8, naive_loader_batches=4,
              encoders=("SmallCNN",), step_batch=8, step_warmup=1, step_steps={"SmallCNN": 2},
              reference_steps={"SmallCNN": 2}, loss_pairs=(32, 64), loss_min_seconds=0.0,
              memory_warmup=1, memory_steps=1, gpu_batch=16, gpu_warmup=1, gpu_steps=2)


@dataclass
class Context:
    sizes: Sizes
    data_dir: Path  # cache/bench: the synthetic dataset and its persistent cache
    quick: bool = False
    deadline: float = math.inf  # perf_counter time after which `alternate` runs no further rounds

    @property
    def dataset_root(self) -> Path:
        return self.data_dir / (f"{BENCH_DATASET}-quick" if self.quick else f"{BENCH_DATASET}-sized-seed0")

    @property
    def cache_root(self) -> Path:
        return self.data_dir / "cache"

    def ensure_dataset(self) -> Path:
        """Write the synthetic benchmark dataset once (untimed); later runs reuse it."""
        root = self.dataset_root
        if not root.exists():
            from lungheart_cl.data.synthetic import synthesize

            print(f"generating the benchmark dataset under {root} (once, untimed) ...", flush=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            synthesize(BENCH_DATASET, root, seed=0, **(self.sizes.dataset or ICBHI_SIZED))
        return root

    def datamodule(self, batch_size: int, num_workers: int | None = None) -> PretrainDataModule:
        """The default lung pretraining data (experiments/pretrain_lung_default.yaml) on the bench dataset."""
        dm = PretrainDataModule(dataset=BENCH_DATASET, root=str(self.ensure_dataset()), cache_dir=str(self.cache_root),
                                batch_size=batch_size, num_workers=self.sizes.workers if num_workers is None
                                else num_workers, pair_policy="same_segment", batch_strata=["age_group", "sex"],
                                strata_per_batch=2)
        dm.setup("fit")  # builds the persistent cache on first use (untimed)
        return dm


# ------------------------------------------------------------------------------------------ timing
class Stopwatch:
    """perf_counter laps: ``lap()`` returns the seconds since the previous lap (or the start)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        return seconds


def alternate(ctx: Context, **measures: Callable[[], T]) -> dict[str, list[T]]:
    """Run every measurement once per round, in turn (A, B, A, B, ...), so a slow spell caused by other
    work on the machine falls on all of them alike; callers keep each one's best round. Rounds after
    the first are skipped once the run is past its soft time budget (`Context.deadline`)."""
    results: dict[str, list[T]] = {name: [] for name in measures}
    for round_index in range(ctx.sizes.rounds):
        if round_index and time.perf_counter() > ctx.deadline:
            print(f"  (time budget spent: {round_index} of {ctx.sizes.rounds} rounds)")
            break
        for name, measure in measures.items():
            results[name].append(measure())
    return results


def cpu_times() -> tuple[float, float]:
    """(user, system) CPU seconds of this process and its live children (DataLoader workers), from /proc;
    this process alone where /proc is missing. Unlike wall time, it barely moves when other work shares
    the CPUs; system time is the kernel's share (page faults, memory mapping)."""
    own = os.times()
    user, system = own.user, own.system
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    me = str(os.getpid())
    try:
        names = os.listdir("/proc")
    except OSError:
        return user, system
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid; then utime and stime are fields 14 and 15 of stat
            user += int(fields[11]) / tick
            system += int(fields[12]) / tick
    return user, system


def timed(fn, *args, **kwargs):
    """(fn's result, wall seconds)."""
    watch = Stopwatch()
    result = fn(*args, **kwargs)
    return result, watch.lap()


def endless(loader: DataLoader) -> Iterator:
    """Batches of `loader` epoch after epoch, the epoch set where Lightning's fit loop sets it."""
    epoch = 0
    while True:
        for holder in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):  # as Lightning's fit loop
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)
        yield from loader
        epoch += 1


@contextmanager
def batches_of(loader: DataLoader):
    """`endless(loader)`, shutting its (persistent) workers down afterwards."""
    batches = endless(loader)
    try:
        yield batches
    finally:
        batches.close()
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        gc.collect()


# ------------------------------------------------------------------------------------ peak memory
def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@contextmanager
def peak_rss():
    """Peak resident memory of this process above its level at entry, in MiB (``probe["mb"]``).

    Resets the kernel's high-water mark (``/proc/self/clear_refs``, 5) so one process can measure
    several stretches; without /proc the figure is None.
    """
    gc.collect()
    probe: dict = {"mb": None}
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        start = _status_kb("VmRSS")
    except OSError:
        start = None
    try:
        yield probe
    finally:
        peak = _status_kb("VmHWM")
        if start is not None and peak is not None:
            probe["mb"] = max(peak - start, 0) / 1024


# --------------------------------------------------------------------------------- checks, tables
@dataclass
class Check:
    """One PASS/FAIL line against a target."""

    name: str
    value: float
    target: float
    unit: str
    higher_is_better: bool
    passed: bool = False

    def __post_init__(self) -> None:
        self.value = None if self.value is None else float(self.value)
        finite = self.value is not None and math.isfinite(self.value)
        better = finite and (self.value >= self.target if self.higher_is_better else self.value < self.target)
        self.passed = bool(better)

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<"
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {value} {self.unit} (target {op} {self.target:g})"


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def table(title: str, header: list[str], rows: list[list]) -> None:
    """Print an aligned text table."""
    cells = [header] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
