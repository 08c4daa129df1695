"""Section 5: peak memory of the pretraining step per encoder: CPU RSS, and the CUDA allocator's peak on GPU.

CPU: each (encoder, pipeline) runs the section 3 step loop in a fresh process
(``python -m lungheart_cl.bench.memory ...``), which reports its peak RSS increase over the loop
(``/proc/self/status`` VmHWM, reset through ``clear_refs``); in one long process, memory freed by an
earlier benchmark is reused without showing. DataLoader workers are not included. GPU: the
``torch.cuda.max_memory_allocated`` figures of section 6.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lungheart_cl.bench.common import FULL, QUICK, Context, table
from lungheart_cl.bench.steps import bench_ours, bench_reference


@dataclass
class MemoryRow:
    encoder: str
    pipeline: str  # ours | reference (section 3's)
    device: str
    variant: str
    batch_pairs: int
    peak_rss_mb: float | None  # main process, above its level before the step loop
    cuda_peak_mb: float | None  # torch.cuda.max_memory_allocated over the loop


@dataclass
class MemoryResult:
    rows: list[MemoryRow]
    ratio: dict[str, float]  # ours / reference peak RSS increase per encoder

    def checks(self) -> list:
        return []


def measure_in_subprocess(ctx: Context, encoder: str, pipeline: str) -> dict:
    command = [sys.executable, "-m", "lungheart_cl.bench.memory", "--encoder", encoder, "--pipeline", pipeline,
               "--data-dir", str(Path(ctx.data_dir).resolve())] + (["--quick"] if ctx.quick else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(ctx: Context, earlier: dict) -> MemoryResult:
    rows, ratio = [], {}
    for encoder in ctx.sizes.encoders:
        peaks = {}
        for pipeline in ("ours", "reference"):
            step = measure_in_subprocess(ctx, encoder, pipeline)
            peaks[pipeline] = step["peak_rss_mb"]
            rows.append(MemoryRow(encoder, pipeline, "cpu", step["variant"], step["batch_pairs"],
                                  step["peak_rss_mb"], None))
        if peaks["ours"] is not None and peaks["reference"]:
            ratio[encoder] = peaks["ours"] / peaks["reference"]
    rows += [MemoryRow(r.encoder, r.pipeline, r.device, r.variant, r.batch_pairs, None, r.cuda_peak_mb)
             for r in getattr(earlier.get("gpu"), "results", [])]
    table(f"[5] peak memory of the step loop ({ctx.sizes.memory_warmup} + {ctx.sizes.memory_steps} steps, a fresh "
          "process each; RSS of the main process above its level before the loop, DataLoader workers excluded)",
          ["encoder", "pipeline", "device", "variant", "batch pairs", "peak RSS +MiB", "CUDA peak MiB"],
          [[r.encoder, r.pipeline, r.device, r.variant, r.batch_pairs, r.peak_rss_mb, r.cuda_peak_mb] for r in rows])
    for encoder, value in ratio.items():
        print(f"  ratio ours/reference peak RSS increase, {encoder}: {value:.2f}x")
    if not torch.cuda.is_available():
        print("  CUDA peak: no GPU here (section 6 measures it where CUDA is available)")
    return MemoryResult(rows, ratio)


def main(argv: list[str] | None = None) -> None:
    """One measurement in this (fresh) process; prints the step result as a JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoder", choices=FULL.encoders, required=True)
    parser.add_argument("--pipeline", choices=("ours", "reference"), required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    ctx = Context(QUICK if args.quick else FULL, args.data_dir, args.quick)
    sizes = ctx.sizes
    dm = ctx.datamodule(sizes.step_batch)
    if args.pipeline == "ours":
        step = bench_ours(dm, args.encoder, warmup=sizes.memory_warmup, steps=sizes.memory_steps,
                          device=torch.device("cpu"), measure_rss=True)
    else:
        step = bench_reference(dm, args.encoder, warmup=sizes.memory_warmup, steps=sizes.memory_steps,
                               workers=sizes.workers, measure_rss=True)
    print(json.dumps(asdict(step)))


if __name__ == "__main__":
    main()
