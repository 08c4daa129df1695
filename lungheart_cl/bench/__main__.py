"""``python -m lungheart_cl.bench [--quick] [--out runs/bench/bench.json] [--sections cache loader ...]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from lungheart_cl.bench import SECTIONS, cache_build, gpu, loader, loss, memory, pool, pretrain_epochs, steps
from lungheart_cl.bench.common import FULL, QUICK, Context

RUN_ORDER = ("cache", "loader", "pool", "step", "loss", "gpu", "memory", "heart")  # memory reports what step and gpu measured
SOFT_BUDGET_S = 270  # after data preparation, no further alternating rounds: a busy machine still ends in 10 min


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lungheart_cl.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny data and few steps (for tests)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench.json"), help="JSON of all figures")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS),
                        help=f"names or numbers 1-{len(SECTIONS)}: {' '.join(SECTIONS)}")
    parser.add_argument("--data-dir", type=Path, default=Path("cache/bench"),
                        help="benchmark data, generated once and reused")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="section heart: a PhysioNet 2016 root (default: ../shared/data/physionet2016 beside "
                             "the repository; --quick: a tiny synthetic one)")
    args = parser.parse_args(argv)
    chosen = set()
    for name in args.sections:
        name = SECTIONS[int(name) - 1] if name.isdigit() and 1 <= int(name) <= len(SECTIONS) else name
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}; choose from {' '.join(SECTIONS)} or 1-{len(SECTIONS)}")
        chosen.add(name)
    args.sections = [s for s in RUN_ORDER if s in chosen]
    return args


def run_section(name: str, ctx: Context, results: dict, args: argparse.Namespace):
    if name == "cache":
        return cache_build.run(ctx)
    if name == "loader":
        return loader.run(ctx)
    if name == "pool":
        return pool.run(ctx)
    if name == "step":
        return steps.run(ctx)
    if name == "loss":
        return loss.run(ctx)
    if name == "gpu":
        return gpu.run(ctx)
    if name == "heart":
        return pretrain_epochs.run(ctx, args.data_root)
    return memory.run(ctx, results)


def main(argv: list[str] | None = None) -> int:
    from lungheart_cl.runtime import keep_freed_memory

    keep_freed_memory()  # as the CLI does, so the bench measures what runs get
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    ctx = Context(QUICK if args.quick else FULL, args.data_dir, args.quick)
    print(f"lungheart-cl bench{' (quick)' if args.quick else ''}: torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}; "
          f"load average {_load()} (other processes disturb the timings)", flush=True)
    load_start = _load()
    needs_data = {"cache", "loader", "step", "memory"} | ({"gpu"} if torch.cuda.is_available() else set())
    prepare_s = prepare(ctx) if needs_data & set(args.sections) else 0.0
    ctx.deadline = time.perf_counter() + SOFT_BUDGET_S
    results, seconds, errors = {}, {}, {}
    for name in args.sections:
        section_start = time.perf_counter()
        try:
            results[name] = run_section(name, ctx, results, args)
        except Exception:  # noqa: BLE001 -- one broken section must not hide the others' figures
            errors[name] = traceback.format_exc()
            print(f"\nsection {name} FAILED:\n{errors[name]}", file=sys.stderr, flush=True)
        seconds[name] = time.perf_counter() - section_start
        sys.stdout.flush()

    checks = [check for result in results.values() for check in result.checks()]
    total_s = time.perf_counter() - started
    print("\nsummary")
    for check in checks:
        print(f"  {check.line()}")
    for name, error in errors.items():
        print(f"  ERROR {name}: {error.strip().splitlines()[-1]}")
    print("  sections: " + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items()))
    print(f"  data preparation {prepare_s:.0f} s (untimed by the sections); whole run {total_s:.0f} s; "
          f"load average {_load()}")

    report = {
        "meta": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
                 "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                 "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                 "data_dir": str(args.data_dir), "prepare_s": prepare_s, "section_s": seconds, "total_s": total_s,
                 "load_average_start": load_start, "load_average_end": _load()},
        "sections": {name: asdict(result) for name, result in results.items()},
        "checks": [asdict(check) for check in checks],
        "errors": errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=_plain))
    print(f"  wrote {args.out}")
    return 1 if errors else 0


def _load() -> list[float]:
    """1/5/15-minute load averages: other work on the machine shows here."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


def _plain(value):
    """numpy scalars and anything else json cannot write."""
    return value.item() if hasattr(value, "item") else str(value)


def prepare(ctx: Context) -> float:
    """Generate the dataset and build the persistent cache before any section (untimed by them); seconds."""
    start = time.perf_counter()
    ctx.datamodule(ctx.sizes.step_batch)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
