"""Pretraining pools (`data.sources`): each source cached and split as on its own, ids namespaced, `source` a
metadata key, unknown metadata never a stratum, weighted source mix, epochs reshuffled, and the leak check,
through the data module, a real Trainer and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from lungheart_cl.data.datamodule import ClassificationDataModule, PretrainDataModule
from lungheart_cl.data.datasets import metadata_codes
from lungheart_cl.data.pairs import make_pair_policy
from lungheart_cl.data.records import is_unknown
from lungheart_cl.data.sampler import StratifiedPairSampler, batch_strata_codes, draw_counts
from lungheart_cl.data.synthetic import synthesize
from lungheart_cl.encoders import SmallCNN
from lungheart_cl.errors import ConfigError
from lungheart_cl.losses import MetadataNTXent, metadata_masks
from lungheart_cl.pretrain import ContrastivePretraining
from lungheart_cl.sweep import Sweep, SweepSpec
from lungheart_cl.views import TimeMask, ViewPipeline

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
POOLS = REPO / "experiments" / "pools"
BATCH = 16


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """Small synthetic PhysioNet 2016 (no age or sex: every value unknown) and CirCor 2022 (age group, sex)."""
    folder = tmp_path_factory.mktemp("data")
    return {"physionet2016": synthesize("physionet2016", folder / "physionet2016", patients=8),
            "circor2022": synthesize("circor2022", folder / "circor2022", patients=8)}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _sources(roots, weights=(None, None)) -> list[dict]:
    return [{"dataset": "physionet2016", "root": str(roots["physionet2016"]), "weight": weights[0],
             "normalization": "none"},
            {"dataset": "circor2022", "root": str(roots["circor2022"]), "weight": weights[1]}]


def _pool(cache_dir, sources, **kwargs) -> PretrainDataModule:
    data = PretrainDataModule(sources=sources, cache_dir=str(cache_dir), batch_size=BATCH, num_workers=0,
                              monitor_bank_size=200, **kwargs)
    data.prepare_data()
    data.setup("fit")
    return data


def _source_rows(data, name: str) -> np.ndarray:
    return data.manifest["source"] == name


def test_each_source_is_cached_and_split_as_its_own_classification_run(cache_dir, roots):
    pool = _pool(cache_dir, _sources(roots))
    names = pool.manifest["source"]
    assert set(names.tolist()) == {"physionet2016", "circor2022"} and pool.dataset == "physionet2016+circor2022"
    for name, options in (("physionet2016", {"normalization": "none"}), ("circor2022", {})):
        single = ClassificationDataModule(dataset=name, root=str(roots[name]), cache_dir=str(cache_dir),
                                          num_workers=0, sample_rate=2000, segment_seconds=4.0, **options)
        single.setup("fit")
        assert single.cache_status == "hit"  # the pool built the very cache a single-source run uses
        entry = next(s for s in pool.summary()["sources"] if s["name"] == name)
        assert entry["cache"] == str(single.cache.directory)
        mine = _source_rows(pool, name)
        ids = pool.manifest["patient_id"][mine]
        assert all(patient.startswith(f"{name}/") for patient in ids)  # namespaced
        for part in ("train", "val", "test"):
            pooled = {p.split("/", 1)[1] for p in ids[pool.split.segment_split[mine] == part]}
            assert pooled == set(single.split.patients(single.manifest, part)), (name, part)
        seen = next(s for s in pool.pretraining_pool()["sources"] if s["name"] == name)
        assert seen["pool_patients"] == single.split.patients(single.manifest, "train")  # the source's own ids
    assert set(pool.manifest["recording_id"][pool.pool_rows()].tolist()) <= set(pool.manifest["recording_id"].tolist())
    assert not (pool.labels[_source_rows(pool, "circor2022")] >= 0).any()  # only the monitor's source is labelled
    assert pool.task_name == "normal_vs_abnormal" and pool.summary()["monitor_source"] == "physionet2016"


def test_unknown_metadata_is_no_value_equal_to_another():
    manifest = {"patient_id": np.asarray(["p1", "p1", "p2", "p3", "p4"]),
                "recording_id": np.asarray(["r1", "r2", "r3", "r4", "r5"]),
                "age_group": np.asarray(["unknown", "unknown", "unknown", "adult", "adult"]),
                "sex": np.asarray(["", "", "male", "male", "male"]),
                "location": np.asarray(["unknown"] * 5), "device": np.asarray(["d"] * 5),
                "site": np.asarray(["s", "s", "unknown", "s", "s"]), "source": np.asarray(["a"] * 5)}
    codes = metadata_codes(manifest)
    age, sex = codes["age_group"], codes["sex"]
    assert age[0] == age[1] != age[2]  # one patient's unknown age is one value; another patient's is another
    assert age[3] == age[4] and age[2] not in (age[3], age[4])
    assert sex[0] == sex[1] and sex[0] not in sex[2:]  # "" is unknown too
    assert len(set(codes["location"].tolist())) == 5  # per recording
    strata = batch_strata_codes(manifest, ["age_group", "sex"])
    assert strata.tolist()[:3] == [-1, -1, -1] and strata[3] == strata[4] >= 0


class BatchRecorder(Callback):
    """Per epoch: anchor and partner rows of every training batch, and the loss's masks of each batch."""

    def __init__(self):
        self.epochs: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.masks: list[tuple[np.ndarray, np.ndarray, dict]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        anchors, partners = batch["index"].numpy(), batch["partner_index"].numpy()
        self.epochs.setdefault(trainer.current_epoch, []).append((anchors, partners))
        keys = pl_module.view_keys(batch)
        criterion = pl_module.criterion
        _, negative = metadata_masks(keys, keys, 0, criterion.positive_keys, criterion.negative_keys)
        self.masks.append((np.concatenate([anchors, partners]), negative.numpy(),
                           {k: v.numpy() for k, v in keys.items()}))


def _fit(data, loss: MetadataNTXent, epochs: int, root: Path) -> BatchRecorder:
    L.seed_everything(0)
    model = ContrastivePretraining(encoder=SmallCNN(channels=(8, 16)), views=ViewPipeline(spec=[TimeMask(0.2, 2)]),
                                   loss=loss, sample_rate=2000, num_classes=data.num_classes, projector_hidden_dim=32,
                                   projector_dim=16,
                                   stats_segments=data.stats_segments)  # the data module computes the statistics
    recorder = BatchRecorder()
    trainer = L.Trainer(max_epochs=epochs, limit_val_batches=0, default_root_dir=root, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        use_distributed_sampler=False, callbacks=[recorder])
    trainer.fit(model, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    return recorder


def test_weights_set_the_source_mix_and_epochs_reshuffle_through_the_trainer(cache_dir, roots, tmp_path):
    by_size = PretrainDataModule(sources=_sources(roots), cache_dir=str(cache_dir), batch_size=BATCH, num_workers=0)
    by_size.setup("fit")
    physionet = _source_rows(by_size, "physionet2016")[by_size.pool_rows()].mean()
    assert physionet < 0.3  # the small source: about its share of the pool's segments without weights
    data = _pool(cache_dir, _sources(roots, weights=(1.0, 1.0)), batch_strata=["source"], strata_per_batch=2)
    recorder = _fit(data, MetadataNTXent(0.1, negative_keys=["source"]), 3, tmp_path)
    names = data.manifest["source"]
    epochs = [recorder.epochs[e] for e in range(3)]
    assert len({len(batches) for batches in epochs}) == 1  # an epoch has one length
    for batches in epochs:
        anchors = np.concatenate([a for a, _ in batches])
        share = (names[anchors] == "physionet2016").mean()
        assert abs(share - 0.5) <= BATCH / len(anchors), share  # weights 1:1, up to the dropped last batch
        assert share > 1.5 * physionet
        for a, p in batches:
            assert (names[a] == names[p]).all()  # partners never cross sources
    orders = [np.concatenate([a for a, _ in batches]) for batches in epochs]
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    assert Counter(orders[0].tolist()) != Counter(orders[1].tolist())  # the subset of the large source changes too
    mixed = 0
    for rows, negative, keys in recorder.masks:  # `source` reaches the loss as a key
        same = names[rows][:, None] == names[rows][None, :]
        assert np.array_equal(keys["source"][:, None] == keys["source"][None, :], same)
        assert not (negative & ~same).any()  # negatives only from the anchor's own source
        mixed += not same.all()
    assert mixed  # batches hold both sources (two strata of `source`), so the restriction did something


def test_unknown_metadata_never_forms_a_negative_stratum_through_the_trainer(cache_dir, roots, tmp_path):
    data = _pool(cache_dir, _sources(roots), batch_strata=["age_group", "sex"])
    recorder = _fit(data, MetadataNTXent(0.1, negative_keys=["age_group", "sex"]), 1, tmp_path)
    manifest = data.manifest
    known_negatives = unknown_views = 0
    for rows, negative, _ in recorder.masks:
        unknown = is_unknown(manifest["age_group"][rows]) | is_unknown(manifest["sex"][rows])
        patient = manifest["patient_id"][rows]
        other_patient = patient[:, None] != patient[None, :]
        assert not (negative & other_patient & (unknown[:, None] | unknown[None, :])).any()
        known_negatives += int((negative & ~unknown[:, None]).sum())
        unknown_views += int(unknown.sum())
    assert unknown_views > 0  # PhysioNet's rows (no age, no sex) were in the batches
    assert known_negatives > 0  # CirCor's rows still have same-age-and-sex negatives


def test_weighted_draws_match_the_weights_over_many_epochs():
    assert draw_counts([10, 1000], [1, 1], 100).tolist() == [50, 50]
    assert draw_counts([3, 3, 3], [1, 1, 1], 10).tolist() == [4, 3, 3]
    sources = np.repeat([0, 1], [40, 400])
    manifest = {"patient_id": np.arange(len(sources)).astype(str)}
    sampler = StratifiedPairSampler(np.arange(len(sources)) + 7, make_pair_policy("same_segment", manifest), 16,
                                    sources=sources, source_weights=[3.0, 1.0], seed=1)
    counts = Counter()
    for epoch in range(40):
        sampler.set_epoch(epoch)
        assert len(list(sampler)) == len(sampler)
        counts.update(int(sources[a - 7]) for batch in sampler for a, _ in batch)
    assert abs(counts[0] / (counts[0] + counts[1]) - 0.75) < 0.01
    with pytest.raises(ValueError, match="positive weight"):
        draw_counts([10, 0], [1, 1], 10)


def test_bad_pools_are_one_clear_error(cache_dir, roots):
    def pool(sources, **kwargs):
        return PretrainDataModule(sources=sources, cache_dir=str(cache_dir), **kwargs)

    sources = _sources(roots)
    with pytest.raises(ConfigError, match=r"data.sources\[1\] \(circor2022\): unknown key\(s\) wieght"):
        pool([sources[0], {**sources[1], "wieght": 1}])
    with pytest.raises(ConfigError, match="two sources are named physionet2016; give each its own name"):
        pool([sources[0], sources[0]])
    with pytest.raises(ConfigError, match="weight set for physionet2016 only; give every source a weight"):
        pool([{**sources[0], "weight": 2.0}, sources[1]])
    with pytest.raises(ConfigError, match="set root per source in data.sources"):
        pool(sources, root=str(roots["circor2022"]))
    with pytest.raises(ConfigError, match="different sample_rate .*icbhi 4000.*; set data.sample_rate"):
        pool([sources[0], {"dataset": "icbhi"}])
    with pytest.raises(ConfigError, match="monitor_source 'icbhi' is not a source of data.sources"):
        pool(sources, monitor_source="icbhi")
    assert pool([sources[0], {"dataset": "icbhi"}], sample_rate=4000).sample_rate == 4000


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LUNGHEART_DEBUG"} | {"PYTHONPATH": str(REPO),
                                                                           "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "lungheart_cl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_heart_pool_pretrains_through_the_cli_and_the_leak_check_names_source_and_patient(roots, tmp_path):
    config = yaml.safe_load((POOLS / "heart_pool.yaml").read_text())
    for source in config["data"]["sources"]:  # the shipped pool, on the synthetic stand-ins of its sources
        source["root"] = str(roots[source["dataset"]])
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(config))
    small = ["--model.encoder", "lungheart_cl.encoders.SmallCNN", "--model.encoder.channels", "[8, 16]",
             "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--data.cache_dir", str(tmp_path / "cache")]
    cached = _run(["data", "cache", "--config", "pool.yaml", "--data.cache_dir", str(tmp_path / "cache")], tmp_path)
    assert cached.returncode == 0, cached.stderr[-3000:]
    assert "options: pool of 2 sources, sample_rate 2000" in cached.stdout
    assert all(f"source {name} ({name}, " in cached.stdout for name in ("physionet2016", "circor2022"))
    done = _run(["pretrain", "--config", str(REPO / "experiments/schemes/heart_wave.yaml"), "--config", "pool.yaml",
                 *small, "--model.projector_hidden_dim", "32", "--model.projector_dim", "16", "--model.stats_segments",
                 "100", "--data.batch_size", str(BATCH), "--trainer.max_epochs", "1", "--trainer.limit_train_batches",
                 "3"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (summary_path,) = tmp_path.glob("runs/pretrain/version_*/checkpoints/pretrain-summary.json")
    summary = json.loads(summary_path.read_text())
    assert [s["name"] for s in summary["data"]["sources"]] == ["physionet2016", "circor2022"]
    assert summary["data"]["monitor_source"] == "physionet2016" and summary["val_knn_auroc_best"] is not None
    assert summary["data"]["cache_status"] == "hit"  # built ahead by `data cache`
    encoder = summary_path.parent / "encoder-best.pt"
    provenance = torch.load(encoder, weights_only=True)["provenance"]
    seen = {s["name"]: s["pool_patients"] for s in provenance["data"]["sources"]}
    assert seen["physionet2016"] and not any("/" in p for p in seen["physionet2016"])  # the source's own ids

    def evaluate(dataset: str, *extra: str) -> subprocess.CompletedProcess:
        return _run(["finetune", "--config", str(REPO / "experiments" / dataset / "finetune.yaml"), "--data.root",
                     str(roots[dataset]), "--model.checkpoint", str(encoder), "--model.mode", "logistic", *small,
                     "--data.sample_rate", "2000", "--model.bootstrap_samples", "20", "--model.embedding_plot", "none",
                     "--data.label_fraction", "1.0", "--model.results_dir", "results", *extra], tmp_path)

    refused = evaluate("physionet2016", "--data.split_seed", "1")
    assert refused.returncode == 2, refused.stderr[-3000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert "pretrained on" in line and "source physionet2016 (dataset physionet2016) patient(s)" in line
    other = ClassificationDataModule(dataset="physionet2016", root=str(roots["physionet2016"]), split_seed=1,
                                     cache_dir=str(tmp_path / "cache"), sample_rate=2000, normalization="none")
    other.setup("fit")
    held_out = set(other.split.patients(other.manifest, "val")) | set(other.split.patients(other.manifest, "test"))
    named = line.split("(dataset physionet2016) patient(s) ", 1)[1].split(";")[0].split(" and ")[0].split(", ")
    assert named and set(named) <= held_out & set(seen["physionet2016"])  # exactly the leaked patients, by name

    scored = evaluate("circor2022")
    assert scored.returncode == 0, scored.stderr[-3000:]
    (path,) = (tmp_path / "results").glob("circor2022-murmur-*.json")  # same split: the pool held none of its
    results = json.loads(path.read_text())  # validation or test patients, so the encoder is scored
    assert results["n_scored"] > 0 and results["pretrained"]["data"]["dataset"] == "physionet2016+circor2022"


@pytest.mark.parametrize("config", ["heart_pool.yaml", "lung_pool.yaml"])
def test_the_pool_configs_build_their_pools(config):
    from lungheart_cl.lightning_cli import make_cli

    scheme = "heart_wave.yaml" if config.startswith("heart") else "time_mask.yaml"
    cli = make_cli("pretrain", ["--config", str(REPO / "experiments/schemes" / scheme), "--config",
                                str(POOLS / config), "--trainer.logger", "false"])
    assert cli.datamodule.pool is not None and cli.datamodule.has_monitor
    assert cli.model.hparams.sample_rate == cli.datamodule.sample_rate


def test_the_pool_vs_single_sweep_names_existing_configs_and_parses_every_run(monkeypatch):
    monkeypatch.chdir(REPO)  # the spec's paths are relative to the repository, as `lungheart-cl sweep` runs it
    spec = SweepSpec.load(POOLS / "heart_pool_vs_single.yaml")
    configs = [c for run in spec.pretrain for c in run.config] + [e.config for e in spec.evaluations + spec.baselines]
    assert all((REPO / config).is_file() for config in configs)
    assert {run.name for run in spec.pretrain} == {"heart_pool", "physionet2016_only", "circor2022_only"}
    sweep = Sweep(spec)
    assert sweep.check() == []
    keys = [run.key for run in sweep.plan(lambda scheme, seed: f"{scheme}.pt")]
    assert "heart_pool-logistic-circor2022-lf0.1-seed0" in keys and len(keys) == len(set(keys))
