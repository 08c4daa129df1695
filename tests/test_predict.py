"""`lungheart-cl predict`: checkpoint loading, audio preparation identical to training, output and errors."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from lungheart_cl.checkpointing import CheckpointError, export_encoder
from lungheart_cl.classify import Classifier
from lungheart_cl.data.cache import CacheConfig, build_cache
from lungheart_cl.data.datasets import SegmentStore
from lungheart_cl.data.quality import MIN_CYCLE_SECONDS, SILENCE_DBFS
from lungheart_cl.data.records import Event, Patient, Recording, SourceDataset
from lungheart_cl.data.sources import get_spec
from lungheart_cl.encoders import SmallCNN
from lungheart_cl.predict import (add_predict_parser, load_classifier, predict_files,
                                  prediction_rows, run_predict)

RATE = 4000
CONFIG = CacheConfig(RATE, 2.0)
CLASSES = ("healthy", "disease")
COLUMNS = ["file", "segment", "start_s", "end_s", "p_healthy", "p_disease", "status", "reason"]
REPO = Path(__file__).resolve().parents[1]


def _classifier(mode: str = "scratch", head_hidden_dim: int = 0, seed: int = 0) -> Classifier:
    """A tiny classifier whose front end, batch norms and head hold non-default, data-like statistics."""
    torch.manual_seed(seed)
    model = Classifier(mode=mode, encoder=SmallCNN(channels=(4, 8)), sample_rate=RATE, num_classes=2,
                       task="healthy_vs_disease", n_mels=16, head_hidden_dim=head_hidden_dim)
    t = np.arange(CONFIG.segment_samples) / RATE
    content = np.stack([_signal(t, seed=100 + i) for i in range(24)])
    content /= content.std(1, keepdims=True)  # as recording_std leaves the audio
    waves = list(torch.from_numpy(content).split(8))
    model.frontend.fit_statistics(waves)
    with torch.no_grad():
        features = torch.cat([model.encoder.train()(model.frontend(w)) for w in waves])  # moves BN running stats
        if mode == "linear":
            model.head[0].fit(features)
        else:
            model.head.train()(features)
    return model.eval()


def _save(model: Classifier, path: Path, config: CacheConfig | None = CONFIG, dataset: str = "icbhi") -> Path:
    """A checkpoint as Lightning writes it, its `lungheart_cl` entry from the model's own `on_save_checkpoint`."""
    checkpoint = {"state_dict": model.state_dict(), "epoch": 0, "global_step": 1}
    model.task = get_spec("icbhi").task("healthy_vs_disease")  # as `Classifier.setup` takes it from the data
    description = SimpleNamespace(dataset=dataset, cache_config=config)  # the two fields a checkpoint records
    model.trainer = SimpleNamespace(datamodule=SimpleNamespace(description=description) if config is not None else None)
    try:
        model.on_save_checkpoint(checkpoint)
    finally:
        model.trainer = None
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Classifier, Path]:
    model = _classifier()
    return model, _save(model, tmp_path_factory.mktemp("ckpt") / "classifier.ckpt")


def _signal(t: np.ndarray, seed: int = 0) -> np.ndarray:
    """Band-limited content (100-1500 Hz, slowly modulated) defined in continuous time, so any rate samples it."""
    rng = np.random.default_rng(seed)
    freqs, mods, phases = rng.uniform(100, 1500, 6), rng.uniform(0.2, 3, 6), rng.uniform(0, 2 * np.pi, 6)
    x = sum(np.sin(2 * np.pi * f * t + p) * (1 + 0.8 * np.sin(2 * np.pi * m * t))
            for f, m, p in zip(freqs, mods, phases))
    return (0.4 * x / np.abs(x).max()).astype(np.float32)


def _wav(path: Path, seconds: float = 5.0, rate: int = RATE, stereo: bool = False, seed: int = 0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    x = _signal(t, seed)
    if stereo:  # channels differ, their mean is the content
        other = 0.2 * np.sin(2 * np.pi * 700 * t).astype(np.float32)
        x = np.stack([x + other, x - other], axis=1)
    sf.write(path, x, rate, subtype="FLOAT")
    return path


def _predict(checkpoint: Path, *extra: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_predict_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["predict", "--checkpoint", str(checkpoint), "--device", "cpu", *extra])
    if args.output is not None:
        return run_predict(args), Path(args.output).read_text()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_predict(args)
    return code, out.getvalue()


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _probs(rows: list[dict]) -> np.ndarray:
    return np.array([[float(r["p_healthy"]), float(r["p_disease"])] for r in rows])


@pytest.mark.parametrize("mode, hidden", [("scratch", 0), ("scratch", 12), ("linear", 0)])
def test_predict_builds_the_head_the_checkpoint_describes(tmp_path, mode, hidden):
    model = _classifier(mode, hidden)
    head = load_classifier(_save(model, tmp_path / "model.ckpt")).net.head.eval()
    assert [type(m) for m in head] == [type(m) for m in model.head]
    features = torch.randn(5, model.encoder.embedding_dim) + 3
    torch.testing.assert_close(head(features), model.head(features))


@pytest.mark.parametrize("mode, hidden", [("scratch", 12), ("linear", 0)])
def test_checkpoints_of_every_head_layout_load(tmp_path, mode, hidden):
    model = _classifier(mode, hidden)
    loaded = load_classifier(_save(model, tmp_path / "model.ckpt"))
    wave = torch.randn(3, CONFIG.segment_samples)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net.eval()(wave), model.head(model.encoder(model.frontend(wave))).softmax(-1))


def test_a_head_whose_weights_do_not_fit_its_stored_shape_is_refused(tmp_path):
    path = _save(_classifier("scratch", 12), tmp_path / "model.ckpt")
    payload = torch.load(path, weights_only=True)
    payload["lungheart_cl"]["head_config"]["hidden_dim"] = 0  # the stored shape says linear, the weights an MLP
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="model.ckpt: .*head weights do not fit the stored head"):
        load_classifier(path)
    del payload["lungheart_cl"]["head_config"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="lacks head_config"):
        load_classifier(path)


def test_windows_sum_to_one_and_the_file_row_is_their_mean(trained, tmp_path):
    wav = _wav(tmp_path / "heart.wav", seconds=5.0)
    code, text = _predict(trained[1], str(wav))
    assert code == 0
    rows = _rows(text)
    assert list(rows[0]) == COLUMNS
    assert [(r["segment"], float(r["start_s"]), float(r["end_s"])) for r in rows] == [
        ("0", 0.0, 2.0), ("1", 2.0, 4.0), ("2", 4.0, 5.0), ("all", 0.0, 5.0)]  # 1 s tail kept, as in the cache
    probs = _probs(rows)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs[-1], probs[:-1].mean(0), atol=1e-9)


def test_resampled_stereo_file_predicts_like_the_native_rate_file(trained, tmp_path):
    native = _wav(tmp_path / "native.wav", rate=RATE)
    stereo = _wav(tmp_path / "stereo.wav", rate=44100, stereo=True)
    different = _wav(tmp_path / "different.wav", rate=RATE, seed=1)
    model = load_classifier(trained[1])
    predictions, errors = predict_files(model, [native, stereo, different])
    assert not errors
    a, b, c = (p.probs for p in predictions)
    np.testing.assert_allclose(a, b, atol=5e-3)  # resampling filters differ slightly at the edges
    assert np.abs(a - c).max() > 10 * np.abs(a - b).max()  # the model does tell content apart


def test_annotation_beside_the_wav_gives_one_row_per_cycle(trained, tmp_path):
    wav = _wav(tmp_path / "101_1b1_Al_sc_Meditron.wav", seconds=6.0, rate=44100)
    wav.with_suffix(".txt").write_text("0.25\t1.5\t0\t0\n1.5\t4.0\t1\t0\n4.0\t6.004\t0\t1\n")
    code, text = _predict(trained[1], str(wav))
    assert code == 0
    rows = _rows(text)
    assert [(r["segment"], float(r["start_s"]), float(r["end_s"])) for r in rows] == [
        ("0", 0.25, 1.5), ("1", 1.5, 4.0), ("2", 4.0, 6.0), ("all", 0.25, 6.0)]  # end within 10 ms: clamped
    np.testing.assert_allclose(_probs(rows)[-1], _probs(rows)[:-1].mean(0), atol=1e-9)


@pytest.mark.parametrize("events", [(), (Event(0.3, 1.1), Event(1.1, 4.9))])
def test_predictions_equal_the_model_on_the_training_cache(trained, tmp_path, events):
    model, checkpoint = trained
    wav = _wav(tmp_path / "rec.wav", seconds=5.0, rate=22050, stereo=True)
    if events:
        wav.with_suffix(".txt").write_text("".join(f"{e.start_s} {e.end_s} 0 0\n" for e in events))
    info = sf.info(wav)
    recording = Recording("icbhi", "rec", "p", wav, info.samplerate, info.frames, info.channels, events=events)
    cache = build_cache(SourceDataset("icbhi", tmp_path, [recording], {"p": Patient("p")}), CONFIG,
                        tmp_path / "cache", workers=1, progress=False)
    wave = SegmentStore(cache.directory / "segments.f16", cache.segments.shape).read(np.arange(len(cache)))
    with torch.no_grad():
        expected = model.head(model.encoder(model.frontend(wave))).float().softmax(-1).numpy()
    (prediction,), _ = predict_files(load_classifier(checkpoint), [wav], batch_size=2)
    np.testing.assert_allclose(prediction.probs, expected, atol=1e-6)
    assert [(s.start_s, s.end_s) for s in prediction.segments] == list(
        zip(cache.manifest["start_s"].astype(float), cache.manifest["end_s"].astype(float)))


def test_annotations_beside_a_file_are_read_as_the_training_dataset_defines_them(tmp_path):
    """An ICBHI classifier cuts a file with a cycle .txt beside it per cycle; a heart-sound one (whose dataset
    annotates nothing beside its audio) cuts the same file into windows."""
    wav = _wav(tmp_path / "rec.wav", seconds=5.0)
    wav.with_suffix(".txt").write_text("0.3 1.1 0 0\n1.1 4.9 1 0\n")
    model = _classifier()
    lung = load_classifier(_save(model, tmp_path / "lung.ckpt"))
    heart = load_classifier(_save(model, tmp_path / "heart.ckpt", dataset="physionet2016"))
    (cycles,), _ = predict_files(lung, [wav])
    (windows,), _ = predict_files(heart, [wav])
    assert [(s.start_s, s.end_s) for s in cycles.segments] == [(0.3, 1.1), (1.1, 4.9)]
    assert [(s.start_s, s.end_s) for s in windows.segments] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]  # 1 s tail kept


def test_a_checkpoint_of_a_dataset_not_registered_here_is_named(tmp_path):
    path = _save(_classifier(), tmp_path / "model.ckpt", dataset="somebody.elses_source")
    with pytest.raises(CheckpointError, match="trained on dataset 'somebody.elses_source'.*cannot import"):
        load_classifier(path)


def test_batch_size_does_not_change_predictions(trained, tmp_path):
    wav = _wav(tmp_path / "a.wav", seconds=9.0)
    model = load_classifier(trained[1])
    (one,), _ = predict_files(model, [wav], batch_size=1)
    (many,), _ = predict_files(model, [wav], batch_size=64)
    np.testing.assert_allclose(one.probs, many.probs, atol=1e-6)


def _pretrain_checkpoint(path: Path) -> Path:
    model = _classifier()
    torch.save({"state_dict": model.state_dict(), "lungheart_cl": {
        "kind": "pretrain", "encoder_config": model.encoder.config, "frontend_config": model.frontend.config}}, path)
    return path


def _exported_encoder(path: Path) -> Path:
    model = _classifier()
    return export_encoder(model.encoder, model.frontend, path, {})


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not a checkpoint")
    return path


def _foreign_pickle(path: Path) -> Path:
    torch.save([1, 2], path)
    return path


def _without_cache_config(path: Path) -> Path:
    return _save(_classifier(), path, config=None)


@pytest.mark.parametrize("make, message", [
    (_pretrain_checkpoint, "a pretrain checkpoint, not a classifier"),
    (_exported_encoder, "an exported pretrained encoder, not a classifier"),
    (_garbage, "not a readable torch checkpoint"),
    (_foreign_pickle, "not a lungheart-cl checkpoint"),
    (_without_cache_config, "lacks cache_config"),
    (lambda path: path, "checkpoint not found"),
])
def test_unusable_checkpoints_name_the_file_and_the_problem(tmp_path, capsys, make, message):
    path = make(tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match=message) as error:
        load_classifier(path)
    assert str(path) in str(error.value)
    code, text = _predict(path, str(_wav(tmp_path / "a.wav")))
    assert code == 2 and text == ""
    assert str(path) in capsys.readouterr().err


def test_bad_files_are_reported_and_the_others_predicted(trained, tmp_path, capsys):
    good = _wav(tmp_path / "good.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), RATE)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(5 * RATE, np.nan, np.float32), RATE, subtype="FLOAT")
    missing = tmp_path / "missing.wav"
    late = _wav(tmp_path / "late.wav", seconds=2.0)
    late.with_suffix(".txt").write_text("0.5 3.0 0 0\n")  # cycle past the audio's end
    second = _wav(tmp_path / "second.wav", seed=2)
    code, text = _predict(trained[1], *map(str, [good, corrupt, empty, nan, missing, late, second]))
    assert code == 1
    rows = _rows(text)
    assert {r["file"] for r in rows if r["status"] == "ok"} == {str(good), str(second)}
    err = capsys.readouterr().err
    for path, problem in [(corrupt, "not a readable audio file"), (empty, "audio file has no samples"),
                          (nan, "20000 samples are NaN"), (missing, "audio file is missing"),
                          (late, f"{late.with_suffix('.txt')}: line 1")]:
        assert f"refused {path}: {problem}" in err
        (row,) = [r for r in rows if r["file"] == str(path)]  # the file asked for, even when its annotation is bad
        assert row["status"] == "refused" and row["reason"].startswith(problem) and row["p_healthy"] == ""
    assert "5 of 7 file(s)" in err


def test_json_output_parses_and_lists_errors(trained, tmp_path):
    good = _wav(tmp_path / "good.wav")
    output = tmp_path / "out" / "predictions.json"  # the folder is created
    code, text = _predict(trained[1], "--format", "json", "--output", str(output), str(good),
                          str(tmp_path / "missing.wav"))
    assert code == 1
    payload = json.loads(text)
    assert payload["classes"] == list(CLASSES) and payload["task"] == "healthy_vs_disease"
    assert [r["segment"] for r in payload["rows"]] == [0, 1, 2, "all", "all"]
    assert all(list(r) == COLUMNS for r in payload["rows"])
    assert payload["rows"][-1] == {"file": str(tmp_path / "missing.wav"), "segment": "all", "start_s": None,
                                   "end_s": None, "p_healthy": None, "p_disease": None, "status": "refused",
                                   "reason": "audio file is missing"}
    assert payload["errors"] == [{"file": str(tmp_path / "missing.wav"), "error": "audio file is missing"}]


def test_csv_output_file_matches_the_prediction_rows(trained, tmp_path):
    wav = _wav(tmp_path / "a.wav")
    output = tmp_path / "predictions.csv"
    code, text = _predict(trained[1], "--output", str(output), str(wav))
    assert code == 0
    (prediction,), _ = predict_files(load_classifier(trained[1]), [wav])
    expected = prediction_rows(prediction, CLASSES)
    assert len(_rows(text)) == len(expected)
    np.testing.assert_allclose(_probs(_rows(text)), [[r["p_healthy"], r["p_disease"]] for r in expected])


def _cli_predict(checkpoint: Path, *files: Path) -> subprocess.CompletedProcess:
    """`python -m lungheart_cl predict` as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled")
    return subprocess.run([sys.executable, "-m", "lungheart_cl", "predict", "--checkpoint", str(checkpoint),
                           "--device", "cpu", *map(str, files)], env=env, capture_output=True, text=True, timeout=300)


def test_recordings_without_scoreable_sound_are_refused_and_clipped_ones_flagged(trained, tmp_path):
    """Through the CLI: too short, silent (digital zero, a constant, a noise floor) and too-short cycles are
    refused with the reason; a clipped recording is scored and flagged; the good file is scored as before."""
    good = _wav(tmp_path / "good.wav")
    one_sample = tmp_path / "one_sample.wav"
    sf.write(one_sample, np.array([0.3], np.float32), RATE)
    short = _wav(tmp_path / "short.wav", seconds=0.9 * CONFIG.segment_seconds)
    zeros = tmp_path / "zeros.wav"
    sf.write(zeros, np.zeros(5 * RATE, np.float32), RATE)  # PCM_16 digital silence
    constant = tmp_path / "constant.wav"
    sf.write(constant, np.full(5 * RATE, 0.25, np.float32), RATE, subtype="FLOAT")  # a DC offset, no sound
    hiss = tmp_path / "hiss.wav"  # a noise floor 10 dB under the silence threshold
    floor = 10 ** ((SILENCE_DBFS - 10) / 20)
    sf.write(hiss, (floor * np.random.default_rng(0).standard_normal(5 * RATE)).astype(np.float32), RATE,
             subtype="FLOAT")
    clipped = tmp_path / "clipped.wav"
    sf.write(clipped, np.clip(20 * sf.read(good, dtype="float32")[0], -1, 1), RATE)  # mostly at the rails
    short_cycles = _wav(tmp_path / "101_1b1_Al_sc_Meditron.wav", seconds=1.5, rate=44100)
    short_cycles.with_suffix(".txt").write_text(f"0.1 1.0 0 0\n1.0 {1.0 + MIN_CYCLE_SECONDS / 2} 0 0\n")
    one_cycle = _wav(tmp_path / "102_1b1_Al_sc_Meditron.wav", seconds=1.5)  # shorter than a window: cycles padded
    one_cycle.with_suffix(".txt").write_text("0.1 1.4 0 0\n")
    files = [good, one_sample, short, zeros, constant, hiss, clipped, short_cycles, one_cycle]
    done = _cli_predict(trained[1], *files)

    assert done.returncode == 1, done.stderr
    rows = _rows(done.stdout)
    assert list(rows[0]) == COLUMNS
    by_file = {path: [r for r in rows if r["file"] == str(path)] for path in files}
    refused = {one_sample: "shorter than one", short: "shorter than one", zeros: "silent", constant: "silent",
               hiss: "silent", short_cycles: "cycle 2"}
    for path, reason in refused.items():
        (row,) = by_file[path]  # one row, no probabilities
        assert row["status"] == "refused" and reason in row["reason"] and row["p_healthy"] == row["p_disease"] == ""
        assert f"{path}: {row['reason']}" in done.stderr
    for path, status in ((good, "ok"), (clipped, "flagged"), (one_cycle, "ok")):
        assert {r["status"] for r in by_file[path]} == {status}
        np.testing.assert_allclose(_probs(by_file[path]).sum(1), 1.0, atol=1e-6)
    assert [r["segment"] for r in by_file[one_cycle]] == ["0", "all"]
    (clip_reason,) = {r["reason"] for r in by_file[clipped]}
    assert "full scale" in clip_reason and f"{clipped}: {clip_reason}" in done.stderr
    assert f"{len(refused)} of {len(files)} file(s) refused" in done.stderr


def test_a_classifier_checkpoint_naming_a_module_does_not_import_it(tmp_path, monkeypatch):
    (tmp_path / "trojan_head.py").write_text("open(__file__ + '.imported', 'w').close()\n"
                                             "from lungheart_cl.encoders import SmallCNN as Trojan\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _save(_classifier(), tmp_path / "model.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["lungheart_cl"]["encoder_config"]["class_path"] = "trojan_head.Trojan"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="trojan_head.Trojan") as refused:
        load_classifier(path)
    assert not (tmp_path / "trojan_head.py.imported").exists(), "loading the checkpoint imported the module it names"
    assert str(path) in str(refused.value)
