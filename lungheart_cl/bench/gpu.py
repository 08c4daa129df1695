"""Section 6 (CUDA only): step throughput per encoder with fp32, AMP bf16, channels_last and torch.compile."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from lungheart_cl.bench.common import Check, Context
from lungheart_cl.bench.steps import DATA_WAIT_TARGET, StepResult, bench_ours, print_steps

# name -> (autocast dtype, channels_last, torch.compile)
VARIANTS = {
    "fp32": (None, False, False),
    "bf16": (torch.bfloat16, False, False),
    "bf16+channels_last": (torch.bfloat16, True, False),
    "bf16+channels_last+compile": (torch.bfloat16, True, True),
}


@dataclass
class GpuResult:
    available: bool
    reason: str = ""
    device_name: str = ""
    workers: int = 0
    results: list[StepResult] = field(default_factory=list)
    compile_s: dict[str, float] = field(default_factory=dict)  # first compiled step minus a normal step
    skipped: dict[str, str] = field(default_factory=dict)  # variant -> why it did not run

    def checks(self) -> list[Check]:
        return [Check(f"GPU data wait fraction, {r.encoder} {r.variant}", r.data_wait_fraction, DATA_WAIT_TARGET,
                      "of step time", False) for r in self.results]


def run(ctx: Context) -> GpuResult:
    if not torch.cuda.is_available():
        reason = "torch.cuda.is_available() is False (no CUDA GPU or a CPU-only torch build)"
        print(f"\n[6] GPU section skipped: {reason}")
        return GpuResult(False, reason)
    sizes = ctx.sizes
    device = torch.device("cuda")
    workers = max(sizes.workers, min(8, os.cpu_count() or 1))  # a GPU host feeds the GPU with more workers
    result = GpuResult(True, device_name=torch.cuda.get_device_name(device), workers=workers)
    dm = ctx.datamodule(sizes.gpu_batch, num_workers=workers)
    for encoder in ctx.sizes.encoders:
        for variant, (amp_dtype, channels_last, compile) in VARIANTS.items():
            key = f"{encoder} {variant}"
            try:
                step = bench_ours(dm, encoder, warmup=sizes.gpu_warmup, steps=sizes.gpu_steps, device=device,
                                  variant=variant, amp_dtype=amp_dtype, channels_last=channels_last, compile=compile)
            except Exception as error:  # noqa: BLE001 -- a failing variant (compile, mostly) is reported, not fatal
                first_line = str(error).splitlines()[0][:200] if str(error) else ""
                result.skipped[key] = f"{type(error).__name__}: {first_line}"
                print(f"  skipped {key}: {result.skipped[key]}")
                continue
            finally:
                torch.cuda.empty_cache()
            result.results.append(step)
            if compile:
                result.compile_s[encoder] = step.first_step_s - step.step_ms / 1000
    print_steps(f"[6] pretraining step on {result.device_name}: batch {sizes.gpu_batch} pairs, {workers} workers, "
                f"{sizes.gpu_warmup} warm-up + {sizes.gpu_steps} timed steps; samples = pairs", result.results)
    for encoder in ctx.sizes.encoders:
        runs = {r.variant: r for r in result.results if r.encoder == encoder}
        if "fp32" in runs:
            for variant, r in runs.items():
                if variant != "fp32":
                    print(f"  {encoder} {variant}: {r.samples_per_s / runs['fp32'].samples_per_s:.2f}x fp32")
        if encoder in result.compile_s:
            helps = runs["bf16+channels_last+compile"].samples_per_s > runs.get(
                "bf16+channels_last", runs["bf16+channels_last+compile"]).samples_per_s
            print(f"  {encoder} torch.compile: {result.compile_s[encoder]:.1f} s to compile, "
                  f"{'helps' if helps else 'does not help'}")
    return result
