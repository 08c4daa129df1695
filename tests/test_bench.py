"""`make bench --quick` end to end on tiny data: every section runs and writes finite positive figures.

Speed is measured by the bench itself, never here: no timing thresholds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# figures that must be finite and positive, per section (ratios included)
FIGURES = {
    "cache": ["audio_s", "build_s", "hit_s", "x_real_time", "naive_s", "naive_x_real_time", "speedup"],
    "loader": ["segments_per_s", "naive_segments_per_s", "speedup"],
    "loss": ["metadata_ms", "simclr_ms", "ratio"],
    "step": ["data_ms", "views_ms", "compute_ms", "step_ms", "data_wait_fraction", "samples_per_s",
             "cpu_ms_per_sample"],
    "memory": ["peak_rss_mb"],
    "pool": ["audio_s", "pool_build_s", "pool_hit_s", "pool_x_real_time", "single_build_s", "single_x_real_time",
             "build_ratio", "pool_batches_per_s", "single_batches_per_s", "loader_ratio"],
    "heart": ["pairs_per_s", "epochs_per_min", "epochs_per_min_cpu_bound", "epoch_batches", "pool_segments",
              "setup_s"],
}
HEART_CASES = {"heart_crops", "heart_crops, default heap", "heart_crops, 0 workers", "heart_wave",
               "time_mask, log-mel per batch", "time_mask, precomputed log-mel"}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_bench_writes_finite_positive_figures(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "lungheart_cl.bench", "--quick", "--data-dir", str(tmp_path / "data"),
                           "--out", str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "summary" in done.stdout and "[6]" in done.stdout and "[7]" in done.stdout

    report = json.loads(out.read_text())
    sections = report["sections"]
    assert set(sections) == {"cache", "loader", "step", "loss", "gpu", "memory", "pool", "heart"}
    assert not report["errors"]
    for key in FIGURES["cache"] + FIGURES["loader"]:
        section = "cache" if key in FIGURES["cache"] else "loader"
        assert positive(sections[section][key]), (section, key, sections[section][key])
    assert all(positive(sections["pool"][key]) for key in FIGURES["pool"]), sections["pool"]
    for row in sections["loss"]["rows"]:
        assert all(positive(row[key]) for key in FIGURES["loss"]), row
    assert {r["pipeline"] for r in sections["step"]["results"]} == {"ours", "reference"}
    for row in sections["step"]["results"]:
        assert all(positive(row[key]) for key in FIGURES["step"]), row
    cpu_rows = [r for r in sections["memory"]["rows"] if r["device"] == "cpu"]
    assert cpu_rows and all(positive(r["peak_rss_mb"]) for r in cpu_rows), cpu_rows
    assert all(positive(v) for key in ("speedup", "cpu_speedup") for v in sections["step"][key].values())
    if not sections["gpu"]["available"]:
        assert sections["gpu"]["reason"]
    assert_heart_figures(sections["heart"])
    checks = report["checks"]
    assert checks and all(isinstance(c["passed"], bool) for c in checks)
    assert {"cache build", "cache hit", "DataLoader throughput", "pool DataLoader vs one source"} <= {c["name"] for c in checks}


def fraction(value) -> bool:
    return isinstance(value, (int, float)) and 0 <= value <= 1


def assert_heart_figures(heart: dict) -> None:
    """Section 8 on the tiny synthetic PhysioNet 2016 of --quick: every case ran and reported its figures."""
    assert not heart["skipped"]
    results = {r["case"]: r for r in heart["results"]}
    assert set(results) == HEART_CASES
    for case, row in results.items():
        assert all(positive(row[key]) for key in FIGURES["heart"]), row
        assert fraction(row["data_wait_fraction"]) and fraction(row["system_cpu_fraction"]), row
        assert all(positive(row["step"][key]) for key in FIGURES["step"]), row
        assert row["step"]["cpu_user_s"] > 0 and row["step"]["cpu_system_s"] >= 0, row
        assert row["mallopt"] == (case != "heart_crops, default heap"), row  # the baseline ran without mallopt
        assert (row["logmel"] == "precomputed") == (row["precompute_s"] is not None), row
    assert results["heart_crops, 0 workers"]["workers"] == 0 and results["heart_crops"]["workers"] == 2
    # heart_crops's 1-s hops give more windows per recording, so more batches per epoch than heart_wave
    assert results["heart_crops"]["epoch_batches"] > results["heart_wave"]["epoch_batches"]
    assert set(heart["ratios"]) == {"pairs/s, kept heap / default heap", "CPU time per pair, default heap / kept heap",
                                    "pairs/s, 2 workers / 0 workers", "pairs/s, precomputed / per batch",
                                    "CPU time per pair, per batch / precomputed",
                                    "pairs/s, precomputed / per batch, same model compute"}
    assert all(positive(v) for v in heart["ratios"].values())
    assert heart["kept"]


def test_heart_section_skips_with_one_line_without_data(tmp_path):
    missing = tmp_path / "no-physionet"
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "lungheart_cl.bench", "--sections", "heart", "--data-root",
                           str(missing), "--data-dir", str(tmp_path / "data"), "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    skip_lines = [line for line in done.stdout.splitlines() if "skipped" in line]
    assert len(skip_lines) == 1 and str(missing) in skip_lines[0], done.stdout
    heart = json.loads(out.read_text())["sections"]["heart"]
    assert str(missing) in heart["skipped"] and heart["results"] == []


def test_precomputed_log_mels_give_the_views_of_the_front_end_per_batch():
    """The bench's precomputed variant measures the same computation as training (time_mask: spectrogram
    views only), for plain and channel-normalised front ends."""
    import torch

    from lungheart_cl.bench.heart_case import precomputed_views
    from lungheart_cl.pretrain import ContrastivePretraining
    from lungheart_cl.views import TimeMask, ViewPipeline

    generator = torch.Generator().manual_seed(0)
    wave = torch.randn(6, 8000, generator=generator)
    valid = torch.tensor([[0, 8000], [0, 5000], [1000, 8000], [0, 8000], [0, 3000], [2000, 6000]])
    for channel_norm in (False, True):
        model = ContrastivePretraining(views=ViewPipeline(spec=[TimeMask(0.2, 2)]), sample_rate=2000, window_ms=64.0,
                                       hop_ms=16.0, f_min=25.0, f_max=800.0, channel_norm=channel_norm)
        batch = {"wave": wave[:3], "partner_wave": wave[3:], "valid": valid[:3], "partner_valid": valid[3:]}
        logmels = model.frontend(wave, valid).reshape(6, -1)
        stored = {"wave": logmels[:3], "partner_wave": logmels[3:], "valid": valid[:3], "partner_valid": valid[3:]}
        torch.manual_seed(1)
        expected = model.make_views(batch)
        torch.manual_seed(1)
        got = precomputed_views(model, stored)
        assert got.shape == expected.shape
        assert torch.equal(got, expected)
        assert (got == 0).any()  # the time masks did cut something
