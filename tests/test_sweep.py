"""The sweep runner: spec loading, argument flattening, resumption; the reduced paper grid (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lungheart_cl.sweep import Sweep, SweepSpec, _flag_args, _flatten

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]


def test_nested_and_dotted_arguments_become_flags():
    assert _flatten({"trainer": {"max_epochs": 1}, "data.task": "crackle"}) == {
        "trainer.max_epochs": 1, "data.task": "crackle"}
    assert _flag_args({"model.checkpoint": None, "data.batch_strata": ["sex"], "model.lr": 0.1}) == [
        "--model.checkpoint", "null", "--data.batch_strata", '["sex"]', "--model.lr", "0.1"]


def test_overrides_reach_every_run(tmp_path):
    spec = SweepSpec.load(REPO / "experiments/paper_embedded.yaml",
                          ["pretrain_args.trainer.max_epochs=1", f"runs_dir={tmp_path}", "seeds=[3]"])
    assert spec.pretrain_args["trainer.max_epochs"] == 1 and spec.pretrain_args["data.task"] == "healthy_vs_disease"
    assert spec.seeds == [3] and spec.runs_dir == str(tmp_path)


def test_finished_runs_are_skipped(tmp_path, monkeypatch):
    spec = SweepSpec.load(REPO / "experiments/finetune_grid_default.yaml", [f"runs_dir={tmp_path}", "seeds=[0]",
                                                                            "label_fractions=[0.1]"])
    sweep = Sweep(spec)
    ran: list[str] = []
    monkeypatch.setattr("lungheart_cl.lightning_cli.run_lightning_cli", lambda command, args: ran.append(command))
    for key in ("pretrained-linear-lf0.1-seed0", "pretrained-finetune-lf0.1-seed0", "random_init-linear-lf0.1-seed0",
                "supervised_scratch-scratch-lf0.1-seed0"):
        sweep._mark(key, {"results": "x"})
    monkeypatch.setattr(Sweep, "report", lambda self: tmp_path)
    sweep.run()
    assert ran == []  # everything was already done


@pytest.mark.slow
def test_reduced_paper_grid_on_the_embedded_data(tmp_path, monkeypatch):
    from lungheart_cl.sweep import run_sweep

    monkeypatch.chdir(REPO)  # spec paths are relative to the repository root, as `make paper` runs them
    cache = tmp_path / "cache"
    report = run_sweep(REPO / "experiments/paper_embedded.yaml", [
        f"runs_dir={tmp_path / 'paper'}", "pretrain_args.trainer.max_epochs=1", "pretrain_args.data.synthetic_patients=40",
        "common_args.data.synthetic_patients=40", "common_args.trainer.max_epochs=3",
        f"pretrain_args.data.cache_dir={cache}", f"common_args.data.cache_dir={cache}"])
    results = list((tmp_path / "paper" / "results").glob("*.json"))
    assert len(results) == (4 * 2 + 2) * 2  # (schemes x modes + baselines) x fractions
    text = report.read_text()
    assert "published" in text and "meta_neg_same_age_group_and_sex" in text
    assert list(report.parent.glob("*.png"))
    assert all(json.loads(r.read_text())["task"] == "healthy_vs_disease" for r in results)
