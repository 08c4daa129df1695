"""Section 7's cases (`pretrain_epochs`), each measured in the process that runs
``python -m lungheart_cl.bench.heart_case --case ...``: the run built from its configs as
``lungheart-cl pretrain`` builds it (`make_cli`), then section 3's step loop over the real sampler and
DataLoader workers, one JSON line per case. The process applies `keep_freed_memory` as the CLI does.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lungheart_cl.bench.steps import StepResult, run_steps
from lungheart_cl.data.datasets import SegmentStore
from lungheart_cl.errors import UserError
from lungheart_cl.runtime import keep_freed_memory

REPO = Path(__file__).resolve().parents[2]
ENCODER = "lungheart_cl.encoders.SmallCNN"


@dataclass(frozen=True)
class HeartSizes:
    """How much each case does; `QUICK_HEART` is for the test (tiny synthetic data)."""

    batch_pairs: int = 128
    warmup: int = 2
    steps: int = 20
    max_timed_s: float = 60.0  # per case: fewer steps on a busy machine, so the section ends in ~10 min
    synthetic_recordings: int = 0  # quick only: a synthetic PhysioNet 2016 when no --data-root is given


FULL_HEART = HeartSizes()
QUICK_HEART = HeartSizes(batch_pairs=8, warmup=1, steps=2, max_timed_s=math.inf, synthetic_recordings=10)


@dataclass(frozen=True)
class Case:
    name: str
    scheme: str  # experiments/schemes/<scheme>.yaml on experiments/physionet2016/pretrain.yaml
    workers: int
    mallopt: bool = True  # False: its process runs with LUNGHEART_NO_MALLOPT=1
    precomputed: bool = False  # log-mels computed once for the cache instead of per batch


# Each comparison's two sides run back to back, so a slow spell of the shared machine hits both alike.
CASES = (
    Case("heart_crops", "heart_crops", 2),
    Case("heart_crops, default heap", "heart_crops", 2, mallopt=False),
    Case("heart_crops, 0 workers", "heart_crops", 0),
    Case("heart_wave", "heart_wave", 2),
    Case("time_mask, log-mel per batch", "time_mask", 2),
    Case("time_mask, precomputed log-mel", "time_mask", 2, precomputed=True),
)


@dataclass
class EpochResult:
    case: str
    scheme: str
    workers: int
    mallopt: bool  # whether keep_freed_memory took effect in the case's process
    logmel: str  # per batch | precomputed
    cache_segments: int
    pool_segments: int  # the training patients' segments
    epoch_batches: int  # len(train loader)
    pairs_per_s: float
    data_wait_fraction: float
    system_cpu_fraction: float  # kernel share of the CPU time of the timed steps (main process + workers)
    epochs_per_min: float  # extrapolated from the timed steps (training batches only)
    epochs_per_min_cpu_bound: float  # ... from the CPU time per pair, as if every core were the case's alone
    setup_s: float  # untimed: configs, data module (cache), front-end statistics
    precompute_s: float | None  # untimed: the one-off log-mel pass (precomputed case)
    step: StepResult


def run_args(scheme: str, root: Path, cache_dir: Path, batch_pairs: int, workers: int) -> list[str]:
    """The `lungheart-cl pretrain` arguments of a CPU heart run on `root` (the paper's CPU grid's encoder)."""
    experiments = REPO / "experiments"
    return ["--config", str(experiments / "physionet2016" / "pretrain.yaml"),
            "--config", str(experiments / "schemes" / f"{scheme}.yaml"),
            f"--model.encoder={ENCODER}", f"--data.root={root}", f"--data.cache_dir={cache_dir}",
            f"--data.batch_size={batch_pairs}", f"--data.num_workers={workers}",
            "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.logger=false"]


def precompute_log_mels(model, dm, path: Path) -> SegmentStore:
    """The normalised front-end output of every cache segment, once, as float16 rows of a memmap (the
    cache's precision); a store in place of the waveforms' (the front end is deterministic)."""
    frames = model.frontend.num_frames(dm.store.shape[1])
    shape = (dm.store.shape[0], model.frontend.n_mels * frames)
    out = np.memmap(path, dtype=np.float16, mode="w+", shape=shape)
    rows = np.arange(shape[0])
    with torch.no_grad():
        for start, batch in zip(range(0, shape[0], 256), dm.iterate_rows(rows, batch_size=256)):
            spec = model.frontend(batch["wave"].float(), batch["valid"])
            out[start: start + len(spec)] = spec.reshape(len(spec), -1).half().numpy()
    out.flush()
    del out
    return SegmentStore(path, shape)


def precomputed_views(model, batch: dict) -> torch.Tensor:
    """`make_views` on precomputed log-mels (served as the batch's "wave" rows): the spectrogram views only."""
    frontend = model.frontend
    spec = torch.cat([batch["wave"], batch["partner_wave"]]).float()
    spec = spec.reshape(len(spec), 1, frontend.n_mels, -1)
    valid = torch.cat([batch["valid"], batch["partner_valid"]])
    spec, _ = model.views.apply_spec(spec, frontend.valid_frames(valid, spec.shape[-1]))
    return spec


def measure(case: Case, root: Path, cache_dir: Path, sizes: HeartSizes, mallopt: bool) -> EpochResult:
    """Build the run as `lungheart-cl pretrain` would, then time `sizes.warmup` + `sizes.steps` steps;
    `mallopt` says whether this process keeps its freed memory (`keep_freed_memory`)."""
    from lungheart_cl.data.statistics import fit_frontend_statistics
    from lungheart_cl.lightning_cli import make_cli

    start = time.perf_counter()
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # no "GPU available ..." lines per case
    try:
        cli = make_cli("pretrain", run_args(case.scheme, root, cache_dir, sizes.batch_pairs, case.workers))
    finally:
        lightning_log.setLevel(level)
    model, dm = cli.model, cli.datamodule
    dm.setup("fit")  # builds the segment cache on first use
    fit_frontend_statistics(model.frontend, dm, max_segments=model.hparams.stats_segments)  # as on_fit_start
    model.train()
    train = dm.train_dataloader()
    setup_s, precompute_s = time.perf_counter() - start, None
    with tempfile.TemporaryDirectory(dir=dm.cache_dir, prefix="bench-logmel-") as scratch:
        loader, to_spec = train, model.make_views
        if case.precomputed:
            if len(model.views.wave):
                raise ValueError(f"precomputed log-mels need spectrogram views only; scheme {case.scheme} has "
                                 f"waveform views {[type(v).__name__ for v in model.views.wave]}")
            start = time.perf_counter()
            dataset = copy.copy(train.dataset)  # the training dataset, serving log-mel rows as its "wave"
            dataset.store = precompute_log_mels(model, dm, Path(scratch) / "logmel.f16")
            precompute_s = time.perf_counter() - start
            loader = DataLoader(dataset, batch_sampler=train.batch_sampler, num_workers=train.num_workers,
                                collate_fn=train.collate_fn, persistent_workers=train.persistent_workers,
                                generator=train.generator)
            to_spec = partial(precomputed_views, model)
        step = run_steps(loader, model, to_spec, pipeline="ours", encoder="SmallCNN", variant=case.name,
                         warmup=sizes.warmup, steps=sizes.steps, device=torch.device("cpu"),
                         max_timed_s=sizes.max_timed_s)
    cpu = (step.cpu_user_s or 0.0) + (step.cpu_system_s or 0.0)
    epoch_cpu_s = len(train) * step.batch_pairs * step.cpu_ms_per_sample / 1000
    logmel = "precomputed" if case.precomputed else "per batch"
    return EpochResult(case.name, case.scheme, case.workers, mallopt, logmel,
                       dm.store.shape[0], len(dm.pool_rows()), len(train), step.samples_per_s, step.data_wait_fraction,
                       step.cpu_system_s / cpu if cpu > 0 else math.nan,
                       60.0 / (len(train) * step.step_ms / 1000), 60.0 * (os.cpu_count() or 1) / epoch_cpu_s,
                       setup_s, precompute_s, step)


def main(argv: list[str] | None = None) -> int:
    """The given cases in turn in this (fresh) process; prints each result as a JSON line."""
    mallopt = keep_freed_memory()  # as the CLI does; LUNGHEART_NO_MALLOPT=1 for the baseline
    parser = argparse.ArgumentParser(prog="python -m lungheart_cl.bench.heart_case")
    parser.add_argument("--case", nargs="+", choices=[c.name for c in CASES], required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = QUICK_HEART if args.quick else FULL_HEART
    for case in (c for name in args.case for c in CASES if c.name == name):
        try:
            result = measure(case, args.data_root, args.cache_dir, sizes, mallopt)
        except UserError as error:  # a bad data root: one line
            print(f"lungheart-cl bench: {error}", file=sys.stderr)
            return 2
        print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
