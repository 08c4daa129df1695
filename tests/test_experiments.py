"""Every experiment YAML parses and builds; every scheme trains one epoch (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lungheart_cl.lightning_cli import make_cli, run_lightning_cli
from lungheart_cl.losses import MetadataNTXent
from lungheart_cl.sweep import SweepSpec

os.environ.setdefault("WANDB_MODE", "disabled")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCHEMES = sorted((EXPERIMENTS / "schemes").glob("*.yaml"))
HEART_SCHEMES = {path for path in SCHEMES if path.stem.startswith("heart_")}  # 2 kHz views: run on heart data
PUBLISHED_LUNG_SCHEMES = {
    "spectrogram_mask", "time_mask", "frequency_mask", "split", "spectrogram_mask+split",
    "meta_pos_same_patient_same_location", "meta_pos_same_patient_diff_location", "meta_supcon_age_group",
    "meta_pos_same_location_neg_same_location", "meta_neg_same_age_group", "meta_neg_same_sex",
    "meta_neg_same_age_group_and_sex"}


def test_every_published_scheme_has_a_yaml():
    assert PUBLISHED_LUNG_SCHEMES <= {path.stem for path in SCHEMES}


@pytest.mark.parametrize("dataset", ["icbhi", "physionet2016", "circor2022"])
@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda p: p.stem)
def test_scheme_composes_with_every_dataset_base(dataset, scheme, tmp_path):
    cli = make_cli("pretrain", ["--config", str(EXPERIMENTS / dataset / "pretrain.yaml"), "--config", str(scheme),
                                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])
    assert cli.model.hparams.scheme == scheme.stem
    assert isinstance(cli.model.criterion, MetadataNTXent)
    assert cli.datamodule.dataset == dataset


@pytest.mark.parametrize("spec", sorted(EXPERIMENTS.glob("*grid*.yaml")) + sorted(EXPERIMENTS.glob("paper_*.yaml")),
                         ids=lambda p: p.stem)
def test_sweep_specs_load_and_name_existing_configs(spec):
    loaded = SweepSpec.load(spec)
    configs = [loaded.finetune_config] if isinstance(loaded.finetune_config, str) else loaded.finetune_config
    for run in loaded.pretrain:
        configs += [run.config] if isinstance(run.config, str) else run.config
    root = EXPERIMENTS.parent
    assert all((root / config).is_file() for config in configs)
    assert loaded.label_fractions and loaded.seeds and loaded.evaluations


@pytest.mark.parametrize("spec", sorted((EXPERIMENTS / "heart").glob("*.yaml")), ids=lambda p: p.stem)
def test_heart_sweep_specs_load_and_name_existing_configs_and_encoders_of_the_pretraining_script(spec):
    loaded = SweepSpec.load(spec)
    assert (EXPERIMENTS.parent / loaded.finetune_config).is_file()
    assert loaded.label_budgets and loaded.seeds and loaded.baselines
    script = (EXPERIMENTS / "heart" / "pretrain.sh").read_text()
    for baseline in loaded.baselines:  # every encoder is one the pretraining script writes (CORPUS-RECIPE)
        checkpoint = baseline.args.get("model.checkpoint")
        if checkpoint is not None:
            corpus_recipe = Path(checkpoint).parts[3]
            corpus, recipe = corpus_recipe.split("-", 1)
            assert corpus in script and (EXPERIMENTS / "schemes" / f"{recipe}.yaml").is_file(), checkpoint
            assert Path(checkpoint).name in {"encoder-init.pt", "encoder-best.pt", "encoder-last.pt"}


def _printed_config(command: list[str], env: dict[str, str] | None = None) -> dict:
    """A pretraining command's resolved config (`--print_config`), without where it logs and saves."""
    out = subprocess.run(command, cwd=EXPERIMENTS.parent, env={**os.environ, **(env or {})}, capture_output=True,
                         text=True, check=True).stdout
    config = yaml.safe_load(out)
    for key in ("logger", "default_root_dir"):
        config["trainer"].pop(key)
    return config


def test_heart_default_is_the_recipe_the_pretraining_script_ran():
    """experiments/heart_default.yaml = what experiments/heart/pretrain.sh runs for heart_crops on PhysioNet 2016."""
    script = _printed_config(["bash", "experiments/heart/pretrain.sh", "heart_crops"],
                             env={"PRINT": "1", "PY": sys.executable, "ROOT": "../shared/data"})
    default = _printed_config([sys.executable, "-m", "lungheart_cl", "pretrain",
                               "--config", "experiments/heart_default.yaml", "--print_config"])
    assert default == script


def test_heart_schemes_are_named_heart_and_use_the_heart_recipe():
    assert {"heart_wave", "heart_crops", "heart_crops+meta_neg_same_age_group_and_sex"} <= {p.stem for p in HEART_SCHEMES}
    for scheme in HEART_SCHEMES:
        cli = make_cli("pretrain", ["--config", str(EXPERIMENTS / "circor2022" / "pretrain.yaml"), "--config",
                                    str(scheme), "--trainer.logger", "false"])
        assert cli.model.criterion.temperature == 0.1, scheme.stem
        assert cli.model.frontend.config["f_max"] <= 800, scheme.stem  # band-limited input
        names = [type(view).__name__ for view in cli.model.views.wave]
        assert "RandomPassFilter" in names and "TimeReversal" in names, scheme.stem
        assert not {"SpeedPerturb", "PolarityInversion"} & set(names), scheme.stem
        cli.model.views.check_sample_rate(cli.datamodule.sample_rate)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda p: p.stem)
def test_every_scheme_pretrains_one_epoch_on_synthetic_data(scheme, tmp_path, monkeypatch):
    """Lung schemes on the synthetic ICBHI default; heart schemes on synthetic CirCor (2 kHz, age group, sex, sites)."""
    monkeypatch.chdir(tmp_path)
    heart = []
    if scheme in HEART_SCHEMES:  # a few steps: the overlapping windows of the crop schemes make long epochs
        heart = ["--data.dataset", "circor2022", "--data.task", "murmur", "--trainer.limit_train_batches", "6"]
    cli = run_lightning_cli("pretrain", [
        "--config", str(EXPERIMENTS / "pretrain_lung_default.yaml"), "--config", str(scheme), *heart,
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--data.synthetic_patients", "24",
        "--data.batch_size", "16", "--data.num_workers", "0", "--model.stats_segments", "200",
        "--data.cache_dir", str(tmp_path / "cache")])
    summary = json.loads(next(tmp_path.glob("runs/**/pretrain-summary.json")).read_text())
    assert 0 <= summary["val_knn_auroc_best"] <= 1
    assert cli.trainer.current_epoch == 1
