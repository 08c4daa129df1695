"""The dataset registry: discovery, a user's own dataset module by import path, source options, data
without labels (pretraining without its monitor), and cache keys that hash the same in any process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lungheart_cl.data import sources
from lungheart_cl.data.datamodule import ClassificationDataModule, PretrainDataModule
from lungheart_cl.data.sources import Source, dataset_names, get_spec
from lungheart_cl.data.spec import DatasetSpec
from lungheart_cl.data.synthetic import synthesize
from lungheart_cl.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
# A user's dataset outside the package: PhysioNet 2016's layout read without its labels, under its own name.
USER_MODULE = '''
    import dataclasses

    from lungheart_cl.data.sources.physionet2016 import read_physionet2016
    from lungheart_cl.data.spec import DatasetSpec


    def read(root, *, skip_bad=False, note=None):
        """PhysioNet 2016 recordings as an unlabelled dataset of their own."""
        dataset = read_physionet2016(root, skip_bad=skip_bad)
        recordings = [dataclasses.replace(r, dataset="quiet_heart", extra={}) for r in dataset.recordings]
        notes = [*dataset.notes, *([note] if note else [])]
        return dataclasses.replace(dataset, name="quiet_heart", recordings=recordings, notes=notes)


    SPEC = DatasetSpec(name="quiet_heart", description="unlabelled heart sounds", read=read, sample_rate=2000)
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory) -> Path:
    """A folder on sys.path holding the package ``my_sources`` with the module ``quiet_heart``."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "my_sources").mkdir()
    (folder / "my_sources" / "__init__.py").write_text("")
    (folder / "my_sources" / "quiet_heart.py").write_text(textwrap.dedent(USER_MODULE))
    (folder / "my_sources" / "nothing.py").write_text("VALUE = 1\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def heart_root(tmp_path_factory) -> Path:
    return synthesize("physionet2016", tmp_path_factory.mktemp("data") / "heart", patients=10)


def test_every_module_with_a_spec_is_discovered_under_its_own_name():
    assert {"icbhi", "physionet2016", "circor2022"} <= set(dataset_names())
    assert not {"wfdb_header", "catalogue"} & set(dataset_names())  # helper modules without SPEC
    for name in dataset_names():
        spec = get_spec(name)
        assert isinstance(spec, DatasetSpec) and spec.name == name
        assert spec.sample_rate > 0 and spec.segment_seconds > 0
        # a default task is one of the tasks, or one its sources build from their own files (source_tasks)
        assert spec.default_task is None or spec.source_tasks is not None or spec.task(None) is not None
        assert len({column.name for column in spec.columns}) == len(spec.columns)


def test_the_catalogue_lives_with_the_registry_not_with_the_downloader():
    """Every dataset's download entry is read without loading the fetcher (it once lived in data.download)."""
    script = ("import sys\n"
              "from lungheart_cl.data.sources.catalogue import dataset_source, downloadable\n"
              "assert [dataset_source(name).name for name in downloadable()] == list(downloadable())\n"
              "print(sorted(m for m in sys.modules if m.startswith('lungheart_cl.data.download')))\n")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_module_of_the_package_is_named_after_its_spec(monkeypatch):
    """Adding a dataset is one module; its SPEC must carry the module's name (so the name finds it)."""
    sources._package_specs.cache_clear()
    import lungheart_cl.data.sources.physionet2016 as module

    monkeypatch.setattr(module, "SPEC", DatasetSpec(name="renamed", description="", read=module.read_physionet2016,
                                                    sample_rate=2000))
    try:
        with pytest.raises(TypeError, match="physionet2016.SPEC must be a DatasetSpec named 'physionet2016'"):
            dataset_names()
    finally:
        monkeypatch.undo()
        sources._package_specs.cache_clear()


def test_unknown_names_and_modules_without_a_spec_are_one_clear_error(user_module):
    with pytest.raises(ConfigError, match="unknown dataset 'icbh': choose one of .*icbhi"):
        get_spec("icbh")
    with pytest.raises(ConfigError, match="'my_sources.missing': cannot import it"):
        get_spec("my_sources.missing")
    with pytest.raises(ConfigError, match="'my_sources.nothing': the module defines no SPEC"):
        get_spec("my_sources.nothing")


def test_a_users_module_is_a_dataset_with_its_own_options(user_module, heart_root, tmp_path):
    source = Source("my_sources.quiet_heart", heart_root, {"note": "read by a user's module"})
    dataset = source.read()
    assert dataset.name == "quiet_heart" and "read by a user's module" in dataset.notes
    assert source.task() is None  # no labels
    with pytest.raises(ConfigError, match="takes no source option.*label_column.*its options: note"):
        Source("my_sources.quiet_heart", heart_root, {"label_column": "x"})
    with pytest.raises(ConfigError, match="dataset icbhi takes no source option.*its options: none"):
        PretrainDataModule(dataset="icbhi", source_options={"note": "x"}, cache_dir=str(tmp_path))


def test_data_without_labels_pretrains_but_is_refused_for_classification(user_module, heart_root, tmp_path):
    data = PretrainDataModule(dataset="my_sources.quiet_heart", root=str(heart_root), cache_dir=str(tmp_path),
                              num_workers=0)
    assert (data.task, data.num_classes, data.has_monitor) == (None, 0, False)
    data.setup("fit")
    assert (data.labels == -1).all() and len(data.pool_rows()) and data.val_dataloader() == []
    assert data.summary()["task"] is None
    with pytest.raises(ConfigError, match="has no labels, so there is nothing to classify"):
        ClassificationDataModule(dataset="my_sources.quiet_heart", root=str(heart_root), cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="has no embedded synthetic default; set data.root"):
        PretrainDataModule(dataset="my_sources.quiet_heart", cache_dir=str(tmp_path))


def test_pretraining_without_labels_runs_without_the_monitor_and_keeps_the_last_encoder(user_module, heart_root,
                                                                                         tmp_path):
    environ = {k: v for k, v in os.environ.items() if k not in ("LUNGHEART_DEBUG",)}
    environ |= {"PYTHONPATH": os.pathsep.join([str(REPO), str(user_module)]), "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-m", "lungheart_cl", "pretrain", "--model.encoder", "lungheart_cl.encoders.SmallCNN",
         "--model.encoder.channels", "[8, 16]", "--model.projector_hidden_dim", "32", "--model.projector_dim", "16",
         "--model.stats_segments", "50", "--data.dataset", "my_sources.quiet_heart", "--data.root", str(heart_root),
         "--data.cache_dir", str(tmp_path / "cache"), "--data.num_workers", "0", "--data.batch_size", "8",
         "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.accelerator", "cpu"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "no labels: pretraining without the kNN / linear-probe monitor; the last encoder is kept" in output
    assert "could not find the monitored key" not in output
    checkpoints = next(tmp_path.glob("runs/pretrain/version_*/checkpoints"))
    summary = json.loads((checkpoints / "pretrain-summary.json").read_text())
    assert summary["best_checkpoint"] is None and summary["val_knn_auroc_best"] is None
    assert summary["encoder_best"] == summary["encoder_last"]
    assert tmp_path / summary["encoder_last"] == checkpoints / "encoder-last.pt"
    assert summary["epochs"] == 2 and summary["data"]["task"] is None
    assert "validation kNN AUROC: none (no labels, so no monitor: the last encoder is kept)" in done.stdout
    assert not list(checkpoints.glob("best-*.ckpt")) and (checkpoints / "last.ckpt").is_file()


KEY_SCRIPT = """
import sys
from lungheart_cl.data.cache import cache_key, CacheConfig
from lungheart_cl.data.sources import Source
source = Source(sys.argv[1], sys.argv[2])
print(cache_key(source.read(), CacheConfig(4000, 4.0), source.spec.columns))
"""


@pytest.mark.parametrize("dataset", ["icbhi", "circor2022"])
def test_a_cache_key_is_the_same_in_every_process(dataset, tmp_path):
    """The key hashes the records as sorted JSON, so neither hash seeds nor dict order move it."""
    root = synthesize(dataset, tmp_path / dataset, patients=4)
    keys = set()
    for seed in ("0", "1", "random"):
        done = subprocess.run([sys.executable, "-c", KEY_SCRIPT, dataset, str(root)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}, timeout=300)
        assert done.returncode == 0, done.stderr
        keys.add(done.stdout.strip())
    assert len(keys) == 1 and len(keys.pop()) == 64
