"""Section 7: pretraining on a real heart pool, in pairs/s and epochs per minute.

The case issue 11 found slow (50-58 pairs/s, 36-40 % of the CPU time in the kernel): heart shapes
(2 kHz, 4-s windows, log-mel 25-800 Hz, SmallCNN, batch 128 pairs) on real recordings, PhysioNet 2016
by default, with the heart views of experiments/schemes/heart_crops.yaml (RandomTimeCrop,
TimeReversal, RandomPassFilter, Gain, AddNoise uniform; 1-s window hops, two crops of a recording) and
heart_wave.yaml (the same views but the crop, same-segment pairs). Model and data module are built
from the run configs exactly as ``lungheart-cl pretrain`` builds them (`make_cli`); each case then runs
section 3's step loop over the real sampler and DataLoader workers, in a fresh process that applies
`keep_freed_memory` as the CLI does (`heart_case`: ``python -m lungheart_cl.bench.heart_case --case ...``). Fresh,
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

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lungheart_cl.bench.common import Check, Context, table
from lungheart_cl.bench.heart_case import CASES, FULL_HEART, QUICK_HEART, REPO, Case, EpochResult, HeartSizes
from lungheart_cl.bench.steps import DATA_WAIT_TARGET, StepResult
from lungheart_cl.runtime import NO_MALLOPT_ENV

DEFAULT_ROOT = Path("../shared/data/physionet2016")  # relative to the repository, as the tests find ../shared
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
    command = [sys.executable, "-m", "lungheart_cl.bench.heart_case", "--case", *(c.name for c in cases),
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


