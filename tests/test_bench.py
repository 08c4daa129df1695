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
}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_bench_writes_finite_positive_figures(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "lungheart_cl.bench", "--quick", "--data-dir", str(tmp_path / "data"),
                           "--out", str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "summary" in done.stdout and "[6]" in done.stdout

    report = json.loads(out.read_text())
    sections = report["sections"]
    assert set(sections) == {"cache", "loader", "step", "loss", "gpu", "memory", "pool"}
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
    checks = report["checks"]
    assert checks and all(isinstance(c["passed"], bool) for c in checks)
    assert {"cache build", "cache hit", "DataLoader throughput", "pool DataLoader vs one source"} <= {c["name"] for c in checks}
