"""Paired comparison: pairing by labelled subset, the two-way bootstrap (signal, identity, coverage), the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm, rankdata

from lungheart_cl.metrics import Predictions, binary_metrics
from lungheart_cl.pairing import ComparisonError, Method, compare_methods, paired_bootstrap, parse_method
from lungheart_cl.report import scan_results

REPO = Path(__file__).resolve().parents[1]
TEST_RECORDINGS = 80


def _probs(score: np.ndarray) -> np.ndarray:
    p1 = 1 / (1 + np.exp(-score))
    return np.stack([1 - p1, p1], 1)


def _result(scheme: str, mode: str, seed: int, budget: int | None, probs: np.ndarray, labels: np.ndarray,
            ids: list[str]) -> dict:
    """A results file as `Classifier` writes it (recording-level PhysioNet task), with its test_predictions."""
    metrics = {name: {"value": value, "ci_low": value - 0.05, "ci_high": value + 0.05}
               for name, value in binary_metrics(probs, labels).items()}
    tag = f"n{budget}" if budget is not None else "lf0.1"
    return {"run": f"physionet2016-normal_vs_abnormal-{scheme}-{mode}-{tag}-seed{seed}", "dataset": "physionet2016",
            "task": "normal_vs_abnormal", "level": "recording", "scheme": scheme, "mode": mode,
            "label_fraction": None if budget is not None else 0.1, "seed": seed, "metrics": metrics,
            "data": {"label_budget": budget, "labelled_patients": budget or 7, "labelled_recordings": budget or 7},
            "test_predictions": {"ids": ids, "patients": ids, "labels": labels.tolist(), "probs": probs.tolist()},
            "finished": "2025-01-01T00:00:00"}


def write_runs(root: Path, signal: float, budgets=(20, 40), seeds=(0, 1, 2), b_scheme: str = "better",
               skip: tuple = ()) -> Path:
    """random_init (a) and `b_scheme` (b = a's scores + `signal` x label) on the same test recordings, per budget
    and seed; `skip` lists (scheme, budget, seed) left out."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(TEST_RECORDINGS) % 2)
    ids = [f"rec{i:03d}" for i in range(TEST_RECORDINGS)]
    for budget in budgets:
        for seed in seeds:
            score = 0.6 * labels + rng.normal(0, 1, TEST_RECORDINGS)
            for scheme, mode, shift in (("random_init", "linear", 0.0), (b_scheme, "linear", signal)):
                if (scheme, budget, seed) in skip:
                    continue
                path = root / f"{scheme}-n{budget}-seed{seed}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(_result(scheme, mode, seed, budget, _probs(score + shift * labels), labels,
                                                   ids)))
    return root


def _compare(root: Path, b: str = "better", **kwargs):
    return compare_methods(scan_results(root).results, parse_method("random_init"), parse_method(b),
                           num_samples=300, **kwargs)


def test_methods_parse_as_scheme_and_optional_mode():
    assert parse_method("time_mask:linear") == Method("time_mask", "linear")
    assert parse_method("raw_audio+meta_neg_same_age_group_and_sex") == Method("raw_audio+meta_neg_same_age_group_and_sex")
    with pytest.raises(ComparisonError, match="SCHEME:MODE"):
        parse_method("time_mask:linaer")


def test_a_method_with_added_signal_has_a_ci_above_zero(tmp_path):
    rows, notes = _compare(write_runs(tmp_path, signal=1.0))
    assert [(r.axis, r.x, r.pairs) for r in rows] == [("budget", 20.0, 3), ("budget", 40.0, 3)] and notes == []
    for row in rows:
        assert row.mean_b > row.mean_a and row.wins == 3
        assert 0 < row.ci_low < row.mean_difference < row.ci_high and row.ci_above_zero


def test_identical_methods_give_a_zero_width_ci_that_contains_zero(tmp_path):
    rows, _ = _compare(write_runs(tmp_path, signal=0.0, b_scheme="copy"), b="copy")
    for row in rows:
        assert row.mean_difference == 0 and row.wins == row.losses == 0
        assert row.ci_low == row.ci_high == 0 and not row.ci_above_zero


def test_runs_pair_by_budget_and_seed_and_the_unpaired_are_named(tmp_path):
    root = write_runs(tmp_path, signal=1.0, skip=(("better", 40, 2), ("random_init", 20, 0)))
    rows, notes = _compare(root)
    assert [(r.x, r.seeds) for r in rows] == [(20.0, (1, 2)), (40.0, (0, 1))]
    assert notes == ["physionet2016 normal_vs_abnormal n=40 seed 2: random_init only (unpaired, left out)",
                     "physionet2016 normal_vs_abnormal n=20 seed 0: better only (unpaired, left out)"]


def test_pairs_on_different_test_sets_or_without_predictions_are_errors(tmp_path):
    root = write_runs(tmp_path, signal=1.0, budgets=(20,), seeds=(0,))
    path = root / "better-n20-seed0.json"
    result = json.loads(path.read_text())
    result["test_predictions"]["ids"][0] = "another"
    path.write_text(json.dumps(result))
    with pytest.raises(ComparisonError, match="different test sets .*79 in common"):
        _compare(root)
    del result["test_predictions"]
    path.write_text(json.dumps(result))
    with pytest.raises(ComparisonError, match="better-n20-seed0.json: no test_predictions"):
        _compare(root)
    with pytest.raises(ComparisonError, match="no results of tme_mask; the results hold better:linear, random_init"):
        _compare(root, b="tme_mask")


def test_a_scheme_run_in_several_modes_must_name_one(tmp_path):
    root = write_runs(tmp_path, signal=1.0, budgets=(20,), seeds=(0,))
    result = json.loads((root / "better-n20-seed0.json").read_text())
    (root / "better-finetune.json").write_text(json.dumps({**result, "mode": "finetune"}))
    with pytest.raises(ComparisonError, match="better was run in modes finetune, linear; name one"):
        _compare(root)
    (row,), _ = _compare(root, b="better:finetune")
    assert row.b == "better:finetune" and row.pairs == 1


# ------------------------------------------------------------------------------------------ coverage
def _fast_auroc(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mann-Whitney AUROC: fast enough for the thousands of resamples of a coverage simulation."""
    positive = labels == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    ranks = rankdata(probs[:, 1])
    return {"auroc": float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))}


QUALITY, QUALITY_SD, EXTRA, EXTRA_SD, EXTRA_SIGNAL, NOISE = 1.0, 0.3, 0.5, 0.1, 0.5, 0.5


def _population_auroc(weight: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """AUROC of weight * z + extra * v + NOISE * e, z ~ N(label, 1), v ~ N(EXTRA_SIGNAL * label, 1), e ~ N(0, 1)."""
    return norm.cdf((weight + extra * EXTRA_SIGNAL) / np.sqrt(2 * (weight ** 2 + extra ** 2 + NOISE ** 2)))


def _draws(rng: np.random.Generator, patients: int, draws: int) -> list[tuple[Predictions, Predictions]]:
    """One test set; per label draw a pair of classifiers whose quality varies with the draw. Both read the
    patients' feature z, b also a feature v that a lacks (so their difference depends on which patients are
    tested, for every draw alike), each with its own noise."""
    labels = rng.permutation(np.arange(patients) % 2)
    z, v = labels + rng.normal(0, 1, patients), EXTRA_SIGNAL * labels + rng.normal(0, 1, patients)
    ids = np.arange(patients).astype(str)
    pairs = []
    for _ in range(draws):
        weight, extra = rng.normal(QUALITY, QUALITY_SD), rng.normal(EXTRA, EXTRA_SD)
        scores = (weight * z, weight * z + extra * v)
        pairs.append(tuple(Predictions(_probs(s + NOISE * rng.normal(0, 1, patients)), labels, ids, ids)
                           for s in scores))
    return pairs


def test_the_two_way_bootstrap_covers_the_expected_difference_and_the_draws_alone_do_not():
    rng = np.random.default_rng(7)
    weight, extra = rng.normal(QUALITY, QUALITY_SD, 1_000_000), rng.normal(EXTRA, EXTRA_SD, 1_000_000)
    truth = float((_population_auroc(weight, extra) - _population_auroc(weight, 0)).mean())  # over draws, patients
    both, draws_only = [], []
    for replicate in range(100):
        pairs = _draws(rng, patients=60, draws=5)
        low, high = paired_bootstrap(pairs, _fast_auroc, "auroc", num_samples=150, seed=replicate)
        both.append(low <= truth <= high)
        gaps = np.asarray([_fast_auroc(b.probs, b.labels)["auroc"] - _fast_auroc(a.probs, a.labels)["auroc"]
                           for a, b in pairs])
        means = gaps[rng.integers(0, len(gaps), (150, len(gaps)))].mean(1)
        draws_only.append(np.quantile(means, 0.025) <= truth <= np.quantile(means, 0.975))
    assert np.mean(both) >= 0.9  # nominal 0.95; the crossed-design bootstrap errs on the wide side
    assert np.mean(draws_only) < 0.8  # resampling the draws alone ignores the shared test patients


# ----------------------------------------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled")
    return subprocess.run([sys.executable, "-m", "lungheart_cl", "compare", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_compare_cli_writes_the_markdown_and_csv_and_says_ci_above_zero(tmp_path):
    runs = write_runs(tmp_path / "runs", signal=1.0)
    done = _cli(str(runs), "--a", "random_init", "--b", "better:linear", "--samples", "200")
    assert done.returncode == 0, done.stderr
    table = (runs / "report" / "compare.md").read_text()
    assert table in done.stdout
    assert "| labels | labelled patients | pairs (seeds) | a: random_init | b: better:linear | mean b − a | " \
           "95 % CI of b − a | CI > 0 | wins (b > a) |" in table
    assert "| n=20 | 20 | 3 (0, 1, 2) |" in table and "| yes | 3 of 3 |" in table
    with (runs / "report" / "compare.csv").open() as handle:
        records = list(csv.DictReader(handle))
    assert [(r["x"], r["ci_above_zero"], r["seeds"]) for r in records] == [("20.0", "True", "0;1;2"),
                                                                          ("40.0", "True", "0;1;2")]

    bad = _cli(str(runs), "--a", "random_init", "--b", "tme_mask")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "compare: no results of tme_mask; the results hold better:linear, random_init:linear"]
