"""Label-fraction report: loading, aggregation over seeds, published values, markdown/CSV/PNG, W&B offline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from lungheart_cl import report

SCHEMES = {  # (scheme, mode) -> AUROC at label fraction 0.1 and 1.0 before the per-seed offset
    ("meta_neg_same_age_group_and_sex", "linear"): (0.80, 0.84),
    ("meta_neg_same_age_group_and_sex", "finetune"): (0.78, 0.86),
    ("time_mask", "linear"): (0.70, 0.74),
    ("time_mask", "finetune"): (0.72, 0.80),
    ("random_init", "linear"): (0.55, 0.60),
    ("supervised_scratch", "scratch"): (0.62, 0.75),
}
SEED_OFFSETS = (-0.01, 0.0, 0.03)  # seeds 0, 1, 2: mean offset 0.00667, std 0.02082


def _payload(scheme: str, mode: str, fraction: float, seed: int, auroc: float) -> dict:
    metric = lambda value: {"value": value, "ci_low": value - 0.05, "ci_high": value + 0.04}  # noqa: E731
    return {"run": f"icbhi-healthy_vs_disease-{scheme}-{mode}-lf{fraction:g}-seed{seed}", "dataset": "icbhi",
            "task": "healthy_vs_disease", "level": "segment", "scheme": scheme, "mode": mode,
            "label_fraction": fraction, "seed": seed, "metrics": {"auroc": metric(auroc), "macc": metric(auroc - 0.1)},
            "n_scored": 576, "n_patients": 20, "best_val_auroc": 0.7, "pretrained": {}, "data": {}, "config": {},
            "finished": "2025-01-01T00:00:00"}


def write_fake_runs(root: Path) -> Path:
    """3 seeds x fractions 0.1/1.0 x six scheme/mode cells, nested folders, plus a broken and a foreign JSON."""
    for (scheme, mode), means in SCHEMES.items():
        for fraction, mean in zip((0.1, 1.0), means):
            for seed, offset in enumerate(SEED_OFFSETS):
                path = root / f"{scheme}-{mode}" / f"lf{fraction:g}" / f"seed{seed}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(_payload(scheme, mode, fraction, seed, mean + offset)))
    (root / "broken.json").write_text('{"run": "cut off')
    summary = root / "pretrain" / "checkpoints" / "pretrain-summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"best_checkpoint": "x.ckpt", "epochs": 2, "data": {}}))
    return root


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return write_fake_runs(tmp_path / "runs")


def _row(rows: list[report.Row], scheme: str, mode: str, fraction: float) -> report.Row:
    (match,) = [r for r in rows if (r.scheme, r.mode, r.label_fraction) == (scheme, mode, fraction)]
    return match


def test_load_results_skips_broken_and_foreign_json(runs: Path, caplog):
    scan = report.scan_results(runs)
    assert len(scan.results) == len(SCHEMES) * 2 * 3
    assert [p.name for p, _ in scan.broken] == ["broken.json"]
    assert [p.name for p in scan.other] == ["pretrain-summary.json"]
    with caplog.at_level("WARNING", logger="lungheart_cl.report"):
        assert len(report.load_results(runs)) == len(scan.results)
    assert "broken.json" in caplog.text


def test_aggregate_means_stds_counts(runs: Path):
    rows = report.aggregate_results(report.load_results(runs))
    assert len(rows) == len(SCHEMES) * 2
    row = _row(rows, "time_mask", "finetune", 0.1)
    values = 0.72 + np.asarray(SEED_OFFSETS)
    assert row.n == 3 and row.seeds == (0, 1, 2)
    assert row.mean == pytest.approx(values.mean())
    assert row.std == pytest.approx(values.std(ddof=1))
    assert row.ci_low == pytest.approx(values.mean() - 0.05)
    assert row.ci_high == pytest.approx(values.mean() + 0.04)
    assert row.values == pytest.approx(tuple(values))
    assert row.level == "segment"
    macc = _row(report.aggregate_results(report.load_results(runs), "macc"), "time_mask", "finetune", 0.1)
    assert macc.mean == pytest.approx(values.mean() - 0.1)


def test_aggregate_one_seed_and_rerun():
    first = _payload("split", "linear", 0.1, 0, 0.6)
    rerun = {**_payload("split", "linear", 0.1, 0, 0.7), "finished": "2025-02-01T00:00:00"}
    (row,) = report.aggregate_results([rerun, first])
    assert row.n == 1 and row.mean == pytest.approx(0.7) and np.isnan(row.std)  # the later run replaces the earlier
    assert report.format_cell(row) == "0.700 [0.65, 0.74] (n=1)"


def test_published_results_mapping():
    rows = report.published_results("icbhi", "healthy_vs_disease")
    best = _row(rows, "meta_neg_same_age_group_and_sex", "linear", 0.1)
    assert best.mean == pytest.approx(0.854)
    assert (best.ci_low, best.ci_high) == pytest.approx((0.854 - 0.0295, 0.854 + 0.0295))
    assert best.source == "published" and best.dataset == "icbhi"
    assert _row(rows, "supervised_scratch", "scratch", 1.0).mean == pytest.approx(0.690)
    assert {r.scheme for r in rows} >= {"baseline_logistic_on_logmel", "supervised_full_pool"}
    assert [(r.key, r.mean) for r in report.published_results("icbhi2017")] == [(r.key, r.mean) for r in rows]
    assert len(report.published_results("physionet2016")) == 26


def test_write_report_markdown_csv_and_plots(runs: Path, tmp_path: Path):
    out = tmp_path / "report"
    path = report.write_report(runs, out)
    text = path.read_text()
    mean, std = 0.72 + np.mean(SEED_OFFSETS), np.std(0.72 + np.asarray(SEED_OFFSETS), ddof=1)
    cell = f"{mean:.3f} ± {std:.3f} [{mean - 0.05:.2f}, {mean + 0.04:.2f}] (n=3)"
    assert f"| time_mask | finetune | {cell} |" in text
    assert "| 10% | 100% |" in text
    assert "| meta_neg_same_age_group_and_sex | linear | published | 0.854 [0.82, 0.88] (published) |" in text
    assert "broken.json" in text

    with (out / "report.csv").open() as handle:
        records = list(csv.DictReader(handle))
    ours = [r for r in records if r["source"] == "ours"]
    assert len(ours) == len(SCHEMES) * 2 and {r["seeds"] for r in ours} == {"0;1;2"}
    assert any(r["source"] == "published" and r["scheme"] == "split" for r in records)

    (figure,) = out.glob("*.png")
    assert figure.name == "icbhi-healthy_vs_disease-auroc.png"
    image = imread(figure)
    assert image.ndim == 3 and 500 < image.shape[0] < 1500 and 1000 < image.shape[1] < 2500
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_write_report_without_published(runs: Path, tmp_path: Path):
    text = report.write_report(runs, tmp_path / "plain", metric="macc", published=False).read_text()
    assert "published |" not in text and "(n=3)" in text
    assert (tmp_path / "plain" / "icbhi-healthy_vs_disease-macc.png").is_file()


def test_log_to_wandb_offline(runs: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "report"
    report.write_report(runs, out)
    rows = report.aggregate_results(report.load_results(runs)) + report.published_results("icbhi")
    files = report.log_to_wandb(rows, project="test", images=sorted(out.glob("*.png")), save_dir=tmp_path)
    assert files is not None and files.is_dir()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run_dir.glob("*.wandb"))
    assert (files / "media" / "images").is_dir() and (files / "media" / "table").is_dir()


def test_log_to_wandb_disabled(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert report.log_to_wandb(report.published_results("icbhi"), project="test", save_dir=tmp_path) is None


def test_wandb_panel_help():
    help_text = report.wandb_panel_help()
    assert help_text.startswith("Comparing label fractions in the W&B UI")
    assert "label_fraction" in help_text and "test/auroc" in help_text and "scheme" in help_text
    assert help_text in report.__doc__


def _budget_payload(scheme: str, mode: str, budget: int, seed: int, auroc: float) -> dict:
    """A label-budget run: no label fraction, the budget in the data summary (as `SoundDataModule.summary`)."""
    payload = _payload(scheme, mode, 1.0, seed, auroc)
    return {**payload, "run": payload["run"].replace("-lf1-", f"-n{budget}-"), "label_fraction": None,
            "data": {"label_budget": budget, "labelled_patients": budget}}


def test_budget_runs_are_cells_of_their_own_with_their_own_table_and_figure(tmp_path: Path):
    runs = tmp_path / "runs"
    runs.mkdir()
    everyone = [_payload("time_mask", "linear", 1.0, seed, 0.8) for seed in range(3)]
    budgets = [_budget_payload("time_mask", "linear", budget, seed, 0.6 + budget / 1000 + offset)
               for budget in (20, 40, 80) for seed, offset in enumerate(SEED_OFFSETS)]
    for i, payload in enumerate(everyone + budgets):
        (runs / f"{i}.json").write_text(json.dumps(payload))
    rows = report.aggregate_results(report.scan_results(runs).results)
    assert [(r.axis, r.x, r.n) for r in rows] == [("fraction", 1.0, 3), ("budget", 20.0, 3), ("budget", 40.0, 3),
                                                  ("budget", 80.0, 3)]  # 100 % of the labels is not a budget
    (n40,) = [r for r in rows if r.label_budget == 40]
    assert n40.label_fraction is None and n40.mean == pytest.approx(0.64 + np.mean(SEED_OFFSETS))

    text = report.write_report(runs, tmp_path / "report").read_text()
    assert "0 broken" in text
    assert "## icbhi · healthy_vs_disease (scored per segment) · by number of labelled training patients" in text
    assert "| scheme | mode | n=20 | n=40 | n=80 |" in text and "| scheme | mode | 10% | 100% |" in text
    assert text.count("### Beside the published values") == 1  # the study published fractions only
    figures = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert figures == ["icbhi-healthy_vs_disease-auroc-budgets.png", "icbhi-healthy_vs_disease-auroc.png"]


def test_logistic_probe_runs_get_a_panel_of_their_own(tmp_path: Path):
    """The logistic probe (model.mode logistic) was in the tables but in no panel of the figure."""
    rows = [report.Row(dataset="physionet2016", task="normal_vs_abnormal", level="recording", scheme=scheme,
                       mode=mode, label_fraction=None, metric="auroc", mean=mean, std=0.01, ci_low=mean - 0.05,
                       ci_high=mean + 0.05, n=3, values=(mean,) * 3, seeds=(0, 1, 2), label_budget=budget)
            for scheme, mode, base in (("heart_crops.last", "logistic", 0.70), ("heart_crops.init", "logistic", 0.65),
                                       ("supervised_scratch", "scratch", 0.68))
            for budget, mean in ((20, base), (40, base + 0.05))]
    styles = report.scheme_styles({r.scheme for r in rows})
    figure_path = report.plot_dataset_task(rows, [], styles, tmp_path / "f.png")
    assert imread(figure_path).shape[1] > 2.5 * 6 * 150 * 0.9  # three panels: linear, logistic, fine-tune
    without = report.plot_dataset_task([r for r in rows if r.mode != "logistic"], [], styles, tmp_path / "g.png")
    assert imread(without).shape[1] < 2.2 * 6 * 150  # no logistic runs: the two panels as before


def test_rows_follow_the_classifier_modes_order():
    """report once kept its own list of modes without logistic, so logistic rows came after scratch."""
    from lungheart_cl.modes import MODES

    payloads = [_payload("time_mask", mode, 0.1, 0, 0.7) for mode in reversed(MODES)]
    assert [row.mode for row in report.aggregate_results(payloads)] == list(MODES)
    assert MODES == ("linear", "logistic", "finetune", "scratch")
