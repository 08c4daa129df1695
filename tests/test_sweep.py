"""The sweep runner: spec loading, argument flattening, resumption; the reduced paper grid (slow)."""

from __future__ import annotations

import json
import re
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lungheart_cl.sweep import Sweep, SweepSpec, _flag_args
from lungheart_cl.sweep_spec import _flatten

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]

# Written into the test's folder (on the subprocess's PYTHONPATH) and added to every run's callbacks.
HOLD_TRAINING = """
import os, time
from lightning.pytorch.callbacks import Callback

class HoldTraining(Callback):
    \"\"\"With $HOLD_FILE set and absent: at the first training batch, create it and hold that batch until a
    SIGTERM reaches the trainer, so the test's signal lands inside a run (not between runs).\"\"\"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        hold = os.environ.get("HOLD_FILE")
        if not hold or os.path.exists(hold):
            return
        open(hold, "w").close()
        deadline = time.monotonic() + 300  # a bound, should the signal never come
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)

class FailTest(Callback):
    \"\"\"Fails a run that reads its test split.\"\"\"

    def on_test_start(self, trainer, pl_module):
        raise RuntimeError("the test split was read")

class FailValidation(Callback):
    \"\"\"Stops a run with an error in the middle of its first validation (training loader workers alive).\"\"\"

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        raise RuntimeError("validation failed on purpose")
"""

TINY = {"trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False},
        "data": {"synthetic_patients": 24, "batch_size": 8, "num_workers": 2}}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One synthetic dataset and cache for this module's sweeps."""
    return tmp_path_factory.mktemp("cache")


def _tiny_spec(folder: Path, cache: Path, pretrain: list[dict] | None = None, callback: str | None = None,
               **entries) -> Path:
    """A sweep spec in `folder` over the embedded data with tiny runs (1 epoch, batch 8, 2 workers)."""
    args = json.loads(json.dumps(TINY))
    args["data"]["cache_dir"] = str(cache)
    if callback is not None:
        args["trainer"]["callbacks+"] = {"class_path": f"probes.{callback}"}
    spec = {"runs_dir": str(folder / "runs"), "finetune_config": "experiments/finetune_lung_default.yaml",
            "label_fractions": [1.0], "seeds": [0], "evaluations": [{"mode": "linear"}],
            "pretrain": pretrain or [], "pretrain_args": args, "common_args": args, **entries}
    (folder / "probes.py").write_text(HOLD_TRAINING)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _sweep_cli(folder: Path, *args: str, **env: str) -> subprocess.Popen:
    """`python -m lungheart_cl sweep ...` as a user runs it, from the repository root (spec paths are relative)."""
    environment = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join([str(REPO), str(folder)]), **env)
    return subprocess.Popen([sys.executable, "-m", "lungheart_cl", "sweep", *args], cwd=REPO, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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


def test_a_misspelled_spec_key_names_the_spec(tmp_path):
    spec = REPO / "experiments/finetune_grid_default.yaml"
    with pytest.raises(ValueError, match=f"{spec}: .*unexpected keyword argument 'seed'"):
        SweepSpec.load(spec, ["seed=[0]"])


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
    code = run_sweep(REPO / "experiments/paper_embedded.yaml", [
        f"runs_dir={tmp_path / 'paper'}", "pretrain_args.trainer.max_epochs=1", "pretrain_args.data.synthetic_patients=40",
        "common_args.data.synthetic_patients=40", "common_args.trainer.max_epochs=3",
        f"pretrain_args.data.cache_dir={cache}", f"common_args.data.cache_dir={cache}"])
    assert code == 0
    report = tmp_path / "paper" / "report" / "report.md"
    results = list((tmp_path / "paper" / "results").glob("*.json"))
    assert len(results) == (4 * 2 + 2) * 2  # (schemes x modes + baselines) x fractions
    text = report.read_text()
    assert "published" in text and "meta_neg_same_age_group_and_sex" in text
    assert list(report.parent.glob("*.png"))
    assert all(json.loads(r.read_text())["task"] == "healthy_vs_disease" for r in results)


BASELINES = [{"scheme": "random_init", "mode": "linear", "args": {"model.checkpoint": None}},
             {"scheme": "supervised_scratch", "mode": "scratch", "args": {"model.checkpoint": None}}]


def test_bad_paths_and_overrides_anywhere_in_the_spec_stop_the_sweep_before_the_first_run(tmp_path, cache_dir):
    schemes = [{"name": name, "config": ["experiments/pretrain_lung_default.yaml", f"experiments/schemes/{name}.yaml"]}
               for name in ("time_mask", "tme_mask")]  # the second scheme misspelled
    spec = _tiny_spec(tmp_path, cache_dir, pretrain=schemes)
    done = _sweep_cli(tmp_path, str(spec), "common_args.data.batch_sise=8")  # a misspelled finetune override
    out, err = done.communicate(timeout=600)
    assert done.returncode == 2, err
    assert "pretrain-tme_mask-seed0:" in err and "experiments/schemes/tme_mask.yaml" in err
    assert "time_mask-linear-lf1-seed0:" in err and "batch_sise" in err
    assert "pretrain-time_mask-seed0:" not in err  # the good pretraining parses
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_a_runs_workers_end_with_it_even_when_it_fails(tmp_path, cache_dir, monkeypatch):
    """In-process runs (the sweep's) must not inherit worker processes: a run stopped by an error in the
    middle of validation leaves its training loader's persistent workers behind unless the data module ends them."""
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(tmp_path))
    sweep = Sweep(SweepSpec.load(_tiny_spec(tmp_path, cache_dir, callback="FailValidation", baselines=BASELINES[:1],
                                            evaluations=[])))
    (run,) = sweep.plan(lambda scheme, seed: "unused")
    before = set(multiprocessing.active_children())  # other tests' loaders may still await garbage collection
    with pytest.raises(RuntimeError, match="validation failed on purpose"):
        sweep.execute(run)
    assert set(multiprocessing.active_children()) <= before
    assert not (tmp_path / "runs" / "done").exists()


def test_sigterm_stops_the_sweep_unmarked_and_the_next_call_resumes_it(tmp_path, cache_dir):
    spec = _tiny_spec(tmp_path, cache_dir, callback="HoldTraining", baselines=BASELINES[1:], evaluations=[])
    hold = tmp_path / "holding"
    sweep = _sweep_cli(tmp_path, str(spec), HOLD_FILE=str(hold))
    while not hold.exists() and sweep.poll() is None:  # until the first run is inside its first training batch
        time.sleep(0.1)
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err
    assert not list((tmp_path / "runs").glob("done/*.json"))  # the interrupted run is not marked done
    assert not list((tmp_path / "runs").glob("results/*.json"))

    again = _sweep_cli(tmp_path, str(spec))  # HOLD_FILE unset: the runs go through
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    done = sorted(path.stem for path in (tmp_path / "runs" / "done").glob("*.json"))
    assert done == ["supervised_scratch-scratch-lf1-seed0"]
    assert len(list((tmp_path / "runs" / "results").glob("*.json"))) == 1


# ----------------------------------------------------------------------------------------------- label budgets
def test_budgets_and_fractions_each_get_their_runs_keys_and_flags(tmp_path):
    spec = SweepSpec.load(REPO / "experiments/finetune_grid_default.yaml",
                          [f"runs_dir={tmp_path}", "seeds=[0]", "label_fractions=[0.1]", "label_budgets=[20,40]"])
    runs = {run.key: run.args for run in Sweep(spec).plan(lambda scheme, seed: "unused")}
    assert sorted(runs) == sorted(f"{name}-{tag}-seed0" for tag in ("lf0.1", "n20", "n40") for name in (
        "pretrained-linear", "pretrained-finetune", "random_init-linear", "supervised_scratch-scratch"))

    def flags(args: list[str]) -> dict[str, str]:
        return {name: args[len(args) - 1 - args[::-1].index(name) + 1]  # the last occurrence wins, as in the CLI
                for name in ("--data.labelled_patients", "--data.label_fraction")}

    assert flags(runs["random_init-linear-n40-seed0"]) == {"--data.labelled_patients": "40",
                                                           "--data.label_fraction": "1.0"}
    assert flags(runs["random_init-linear-lf0.1-seed0"]) == {"--data.labelled_patients": "null",
                                                             "--data.label_fraction": "0.1"}
    assert Sweep(spec).check() == []  # every run's arguments parse, budgets included


def test_evaluations_of_one_mode_need_names_and_each_reads_its_own_config(tmp_path):
    """Two evaluations of one mode (e.g. on two datasets) would share their run keys, the second skipped as done."""
    heart = "experiments/physionet2016/finetune.yaml"
    spec = SweepSpec.load(REPO / "experiments/finetune_grid_default.yaml",
                          [f"runs_dir={tmp_path}", "seeds=[0]", "label_fractions=[1.0]", "baselines=[]",
                           "evaluations=[{mode: linear}, {mode: linear, args: {model.lr: 0.1}}]"])
    (problem,) = Sweep(spec).check()
    assert "pretrained-linear-lf1-seed0: two runs of the spec share this key; give evaluations of one mode" in problem
    named = SweepSpec.load(REPO / "experiments/finetune_grid_default.yaml",
                           [f"runs_dir={tmp_path}", "seeds=[0]", "label_fractions=[1.0]", "baselines=[]",
                            f"evaluations=[{{mode: linear, name: a}}, {{mode: linear, name: b, config: {heart}}}]"])
    runs = {run.key: run.args for run in Sweep(named).plan(lambda scheme, seed: "unused")}
    assert sorted(runs) == ["pretrained-linear-a-lf1-seed0", "pretrained-linear-b-lf1-seed0"]
    assert runs["pretrained-linear-a-lf1-seed0"][:2] == ["--config", named.finetune_config]
    assert runs["pretrained-linear-b-lf1-seed0"][:2] == ["--config", heart]


@pytest.mark.parametrize("override, problem", [
    ("label_fractions=[]", "needs label_fractions, label_budgets or both"),
    ("label_budgets=[0]", "label_budgets be positive integers; got [0]"),
    ("compare=[[random_init]]", "compare entries are [A, B] pairs"),
    ("compare=[[random_init,time_mask:linaer]]", "'time_mask:linaer' is not SCHEME or SCHEME:MODE"),
])
def test_bad_label_settings_and_comparisons_name_the_spec(override, problem):
    spec = REPO / "experiments/finetune_grid_default.yaml"
    with pytest.raises(ValueError, match=f"{spec}: .*{re.escape(problem)}"):
        SweepSpec.load(spec, [override])


def test_the_specs_comparisons_are_written_beside_the_report(tmp_path, capsys):
    from test_compare import write_runs

    spec = SweepSpec.load(REPO / "experiments/finetune_grid_default.yaml",
                          [f"runs_dir={tmp_path}", "label_budgets=[20,40]", "compare=[[random_init,better]]"])
    write_runs(tmp_path / "results", signal=1.0)
    Sweep(spec).report()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## physionet2016 · normal_vs_abnormal (scored per recording) · by number of labelled training patients" \
        in report and "| n=20 | n=40 |" in report
    assert (tmp_path / "report" / "physionet2016-normal_vs_abnormal-auroc-budgets.png").is_file()
    paired = (tmp_path / "report" / "compare.md").read_text()
    assert "## b = better vs a = random_init · physionet2016" in paired and "| yes | 3 of 3 |" in paired
    assert paired in capsys.readouterr().out


FAST_EVALUATION = ("common_args.data.num_workers=0", "common_args.model.bootstrap_samples=50",
                   "common_args.model.embedding_plot=none")
SCRATCH = {**BASELINES[1], "args": {"model.checkpoint": None, "trainer.max_epochs": 2}}


def _budget_sweep(folder: Path, cache: Path, baselines: list[dict], seeds: list[int]) -> tuple[Path, dict[str, dict]]:
    """`lungheart-cl sweep` over label budgets 4 and 8 on the embedded data; checks its keys, results and report."""
    spec = _tiny_spec(folder, cache, label_fractions=[], label_budgets=[4, 8], seeds=seeds, evaluations=[],
                      baselines=baselines)
    done = _sweep_cli(folder, str(spec), *FAST_EVALUATION)
    out, err = done.communicate(timeout=900)
    assert done.returncode == 0, err
    runs = folder / "runs"
    names = [f"{b['scheme']}-{b['mode']}-n{budget}-seed{seed}" for b in baselines for budget in (4, 8) for seed in seeds]
    assert sorted(path.stem for path in (runs / "done").glob("*.json")) == sorted(names)
    results = {path.stem: json.loads(path.read_text()) for path in (runs / "results").glob("*.json")}
    assert sorted(results) == sorted(f"icbhi-icbhi_4class-{name}" for name in names)
    for name, result in results.items():
        budget = int(name.split("-n")[1].split("-")[0])
        assert result["label_fraction"] is None and result["data"]["label_budget"] == budget
        assert result["data"]["labelled_patients"] == budget <= result["data"]["labelled_recordings"]
    report = (runs / "report" / "report.md").read_text()
    assert "by number of labelled training patients" in report and "| n=4 | n=8 |" in report
    assert (runs / "report" / "icbhi-icbhi_4class-auroc-budgets.png").is_file()
    return runs, results


def test_a_comparison_that_cannot_be_made_ends_the_finished_sweep_with_one_line(tmp_path, monkeypatch, capsys):
    from test_compare import write_runs

    from lungheart_cl.sweep import run_sweep

    overrides = [f"runs_dir={tmp_path}", "seeds=[0]", "label_fractions=[]", "label_budgets=[20]",
                 "evaluations=[]", "baselines=[]", "compare=[[random_init,tme_mask]]"]
    write_runs(tmp_path / "results", signal=1.0)
    assert run_sweep(REPO / "experiments/finetune_grid_default.yaml", overrides) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "sweep: every run is done and the report written, but a comparison failed: no results of tme_mask; the "
        "results hold better:linear, random_init:linear"]
    assert (tmp_path / "report" / "report.md").is_file()


def test_a_budget_sweep_through_the_cli_names_its_runs_by_budget_and_reports_them(tmp_path, cache_dir):
    _budget_sweep(tmp_path, cache_dir, BASELINES[:1], seeds=[0])


@pytest.mark.slow
def test_a_budget_sweep_then_compare_through_the_cli(tmp_path, cache_dir):
    """Two methods over budgets and label seeds, then `lungheart-cl compare` pairs them."""
    runs, results = _budget_sweep(tmp_path, cache_dir, [BASELINES[0], SCRATCH], seeds=[0, 1])
    compare = subprocess.run([sys.executable, "-m", "lungheart_cl", "compare", str(runs / "results"), "--a",
                              "random_init", "--b", "supervised_scratch", "--samples", "100", "--out",
                              str(runs / "report")], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled"))
    if not all("test_predictions" in result for result in results.values()):
        assert compare.returncode == 2 and "no test_predictions" in compare.stderr
        pytest.skip("these results files carry no test_predictions yet (classify.py writes them on another branch)")
    assert compare.returncode == 0, compare.stderr
    table = (runs / "report" / "compare.md").read_text()
    assert "| n=4 | 4 | 2 (0, 1) |" in table and "| n=8 | 8 | 2 (0, 1) |" in table


def test_a_validation_only_sweep_never_reads_the_test_split_and_reports_and_pairs_on_validation(tmp_path, cache_dir):
    """`test: false`: every run scores its selected checkpoint on the validation patients (a run that reads its
    test split fails here), writes ``-val.json`` results, and the report and comparison are on validation."""
    logistic = {"scheme": "random_init", "mode": "logistic", "args": {"model.checkpoint": None}}
    spec = _tiny_spec(tmp_path, cache_dir, callback="FailTest", label_fractions=[], label_budgets=[8], seeds=[0],
                      evaluations=[], baselines=[BASELINES[0], logistic], test=False,
                      compare=[["random_init:linear", "random_init:logistic"]])
    done = _sweep_cli(tmp_path, str(spec), *FAST_EVALUATION)
    out, err = done.communicate(timeout=900)
    assert done.returncode == 0, err
    runs = tmp_path / "runs"
    results = {path.name: json.loads(path.read_text()) for path in (runs / "results").glob("*.json")}
    assert sorted(results) == sorted(f"icbhi-icbhi_4class-random_init-{mode}-n8-seed{seed}-val.json"
                                     for mode in ("linear", "logistic") for seed in (0,))
    for result in results.values():
        assert result["split"] == "val" and "test_predictions" not in result
        # the selected checkpoint is what was scored: its validation AUROC is the one selection saw
        assert result["metrics"]["auroc"]["value"] == pytest.approx(result["best_val_auroc"], abs=1e-6)
        assert result["val_predictions"]["ids"] and result["n_patients"] == len(set(result["val_predictions"]["patients"]))
    assert "validation (test split unread)" in (runs / "report" / "report.md").read_text()
    paired = (runs / "report" / "compare.md").read_text()
    assert "**val** patients" in paired and "random_init:logistic" in paired
