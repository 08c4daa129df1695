"""Section 7: pretraining on a real heart pool, in pairs/s and epochs per minute.

The case issue 11 found slow (50-58 pairs/s, 36-40 % of the CPU time in the kernel): heart shapes
(2 kHz, 4-s windows, log-mel 25-800 Hz, SmallCNN, batch 128 pairs) on real recordings, PhysioNet 2016
by default, with the heart views of experiments/schemes/heart_crops.yaml (RandomTimeCrop,
TimeReversal, RandomPassFilter, Gain, AddNoise uniform; 1-s window hops, two crops of a recording) and
heart_wave.yaml (the same views but the crop, same-segment pairs). Model and data module are built
from the run configs exactly as ``lungheart-cl pretrain`` builds them (`make_cli`); each case then runs
section 3's step loop over the real sampler and DataLoader workers, in a fresh process that applies
`keep_freed_memory` as the CLI does (``python -m lungheart_cl.bench.pretrain_epochs --case ...``). Fresh,
because forked workers share the parent's heap copy-on-write: a heap kept large by earlier sections
would be copied page by page, in the kernel, during the timed steps.

- heart_crops with 2 and 0 workers, heart_wave with 2 workers;
- heart_crops with 2 workers and glibc's default heap (``LUNGHEART_NO_MALLOPT=1``), the baseline;
- time_mask (spectrogram views only) with the log-mel front end per batch, as training runs, against
  the same steps on log-mels precomputed once for the whole cache. This variant exists here only, as
  a measurement: it cannot serve waveform views, which need the waveform.

Epochs per minute are extrapolated from the timed steps: 60 / (len(train loader) x seconds per step),
training batches only (the epoch-end kNN validation is not included).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lungheart_cl.bench.common import Check, Context, table
from lungheart_cl.bench.steps import DATA_WAIT_TARGET, StepResult, run_steps
from lungheart_cl.data.datasets import SegmentStore
from lungheart_cl.errors import UserError
from lungheart_cl.runtime import NO_MALLOPT_ENV, keep_freed_memory

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = Path("../shared/data/physionet2016")  # relative to the repository, as the tests find ../shared
ENCODER = "lungheart_cl.encoders.SmallCNN"
PRECOMPUTED_WINS = 1.3  # a training path for precomputed log-mels would have to gain more than this
HEAP_RATIO, LOGMEL_RATIO = "pairs/s, kept heap / default heap", "pairs/s, precomputed / per batch"
# The two time_mask cases run the same model on the same shapes: only data wait and front end + views differ.
# On a shared machine the model compute's spread between two runs exceeds the front end's whole cost, so
# the gain is also estimated from the parts that differ, with one model compute time for both.
LOGMEL_PARTS_RATIO = "pairs/s, precomputed / per batch, same model compute"
# (label, case a, case b, figure): a's figure over b's; CPU time per pair the other way round (less is better)
RATIOS = (
    (HEAP_RATIO, "heart_crops", "heart_crops, default heap", "pairs_per_s"),
    ("CPU time per pair, default heap / kept heap", "heart_crops, default heap", "heart_crops", "cpu_ms_per_pair"),
    ("pairs/s, 2 workers / 0 workers", "heart_crops", "heart_crops, 0 workers", "pairs_per_s"),
    (LOGMEL_RATIO, "time_mask, precomputed log-mel", "time_mask, log-mel per batch", "pairs_per_s"),
    ("CPU time per pair, per batch / precomputed", "time_mask, log-mel per batch", "time_mask, precomputed log-mel",
     "cpu_ms_per_pair"),
)


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


@dataclass
class HeartSection:
    data_root: str
    skipped: str = ""  # why no case ran
    results: list[EpochResult] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    kept: str = ""  # which log-mel path training keeps, and why

    def checks(self) -> list[Check]:
        out = [Check(f"real heart data wait fraction, {r.case}", r.data_wait_fraction, DATA_WAIT_TARGET,
                     "of step time", False)
               for r in self.results if r.workers and r.mallopt and r.logmel == "per batch"]
        if HEAP_RATIO in self.ratios:
            out.append(Check(f"real heart {HEAP_RATIO}", self.ratios[HEAP_RATIO], 1.0, "x", True))
        return out


# ------------------------------------------------------------------------------- one case, in-process
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


# ------------------------------------------------------------------------------ the section, in the bench
def data_root(ctx: Context, given: Path | None) -> Path:
    """--data-root; else the shared real PhysioNet 2016 beside the repository, or (--quick) a tiny synthetic one."""
    if given is not None:
        return given.expanduser().resolve()
    if not ctx.quick:
        return (REPO / DEFAULT_ROOT).resolve()
    root = Path(ctx.data_dir) / "physionet2016-quick"
    if not root.exists():
        from lungheart_cl.data.synthetic import synthesize

        Path(ctx.data_dir).mkdir(parents=True, exist_ok=True)
        synthesize("physionet2016", root, patients=QUICK_HEART.synthetic_recordings, seed=0)
    return root


def measure_in_subprocess(ctx: Context, cases: list[Case], root: Path) -> list[EpochResult]:
    """The cases in turn in one fresh process, with LUNGHEART_NO_MALLOPT=1 unless they keep the heap."""
    mallopt = {case.mallopt for case in cases}
    if len(mallopt) != 1:
        raise ValueError("cases measured in one process must share its heap setting")
    env = {k: v for k, v in os.environ.items() if k != NO_MALLOPT_ENV}
    env |= {} if mallopt.pop() else {NO_MALLOPT_ENV: "1"}
    command = [sys.executable, "-m", "lungheart_cl.bench.pretrain_epochs", "--case", *(c.name for c in cases),
               "--data-root", str(root), "--cache-dir", str(Path(ctx.cache_root).resolve())]
    command += ["--quick"] if ctx.quick else []
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()[-len(cases):]
    return [EpochResult(**{**fields, "step": StepResult(**fields["step"])}) for fields in map(json.loads, lines)]


def process_groups(quick: bool) -> list[list[Case]]:
    """A fresh process per case; --quick: one per heap setting, to keep the test short."""
    if not quick:
        return [[case] for case in CASES]
    return [[c for c in CASES if c.mallopt], [c for c in CASES if not c.mallopt]]


def figure(result: EpochResult, name: str) -> float:
    return result.step.cpu_ms_per_sample if name == "cpu_ms_per_pair" else getattr(result, name)


def run(ctx: Context, given_root: Path | None = None) -> HeartSection:
    sizes = QUICK_HEART if ctx.quick else FULL_HEART
    root = data_root(ctx, given_root)
    if not any(folder.is_dir() for folder in root.glob("training-*")):
        reason = f"no PhysioNet 2016 recordings (training-*/ folders) at {root}; give one with --data-root"
        print(f"\n[7] real-data pretraining skipped: {reason}")
        return HeartSection(str(root), skipped=reason)
    print(f"\n[7] real-data pretraining on {root}: {len(CASES)} cases{'' if ctx.quick else ', a fresh process each'} "
          f"(cache and statistics untimed) ...", flush=True)
    section = HeartSection(str(root))
    by_name: dict[str, EpochResult] = {}
    for cases in process_groups(ctx.quick):
        start = time.perf_counter()
        for result in measure_in_subprocess(ctx, cases, root):
            by_name[result.case] = result
            print(f"  {result.case}: {result.pairs_per_s:.1f} pairs/s over {result.step.steps} steps "
                  f"(setup {result.setup_s:.0f} s)", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s with the process start)", flush=True)
    section.results = [by_name[case.name] for case in CASES]
    for label, a, b, name in RATIOS:
        if a in by_name and b in by_name:
            section.ratios[label] = figure(by_name[a], name) / figure(by_name[b], name)
    per_batch, precomputed = by_name.get("time_mask, log-mel per batch"), by_name.get("time_mask, precomputed log-mel")
    if per_batch is not None and precomputed is not None:
        differing = precomputed.step.data_ms + precomputed.step.views_ms  # the rest is the same model compute
        pre = per_batch.step.step_ms / (differing + per_batch.step.compute_ms)
        section.ratios[LOGMEL_PARTS_RATIO] = pre
        section.kept = (f"precomputed log-mels win {pre:.2f}x (> {PRECOMPUTED_WINS}x, same model compute) for "
                        f"spectrogram-only schemes: a training path would pay (none added; the lead decides)"
                        if pre > PRECOMPUTED_WINS else
                        f"kept: the log-mel front end per batch, as training runs: precomputing gains {pre:.2f}x with "
                        f"the same model compute (not > {PRECOMPUTED_WINS}x; end to end "
                        f"{section.ratios[LOGMEL_RATIO]:.2f}x), "
                        f"and it could serve spectrogram-only schemes alone (waveform views need the waveform)")
    print_section(section, sizes)
    return section


def print_section(section: HeartSection, sizes: HeartSizes) -> None:
    rows = [[r.case, r.workers, "kept" if r.mallopt else "default", r.logmel, r.step.steps, r.step.data_ms,
             r.step.views_ms, r.step.compute_ms, r.step.step_ms, f"{r.data_wait_fraction:.1%}", r.pairs_per_s,
             r.step.cpu_ms_per_sample, r.step.cpu_user_s, r.step.cpu_system_s, f"{r.system_cpu_fraction:.0%}",
             r.step.cores_used, r.epoch_batches, r.epochs_per_min, r.epochs_per_min_cpu_bound]
            for r in section.results]
    table(f"[7] pretraining on a real heart pool ({section.data_root}; {torch.get_num_threads()} torch threads): "
          f"SmallCNN, batch {sizes.batch_pairs} pairs, 2 kHz 4-s windows, log-mel 25-800 Hz, {sizes.warmup} warm-up "
          f"+ up to {sizes.steps} timed steps per case"
          f"{f' (or {sizes.max_timed_s:g} s of them)' if math.isfinite(sizes.max_timed_s) else ''}",
          ["case", "workers", "heap", "log-mel", "steps", "data ms", "views ms", "compute ms", "step ms",
           "data wait", "pairs/s", "CPU ms/pair", "user CPU s", "system CPU s", "kernel", "cores used",
           "epoch batches", "epochs/min*", "CPU-bound epochs/min**"], rows)
    print("  heap: kept = keep_freed_memory() as the CLI applies it; default = LUNGHEART_NO_MALLOPT=1 (glibc's)")
    print("  * extrapolated: 60 s / (epoch batches x step time of the timed steps); training batches only (the "
          "epoch-end kNN validation is not included)")
    print(f"  ** extrapolated from CPU time: 60 s x {os.cpu_count()} cores / (epoch pairs x CPU ms/pair), as if no "
          "other work shared the cores (compare the cores used with the core count)")
    for label, value in section.ratios.items():
        print(f"  {label}: {value:.2f}x")
    for r in section.results:
        if r.precompute_s is not None:
            print(f"  {r.case}: computing the log-mels of all {r.cache_segments:,} cache segments took "
                  f"{r.precompute_s:.1f} s once (untimed above)")
    if section.kept:
        print(f"  {section.kept}")


def main(argv: list[str] | None = None) -> int:
    """The given cases in turn in this (fresh) process; prints each result as a JSON line."""
    mallopt = keep_freed_memory()  # as the CLI does; LUNGHEART_NO_MALLOPT=1 for the baseline
    parser = argparse.ArgumentParser(prog="python -m lungheart_cl.bench.pretrain_epochs")
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
