"""2-D projections of features, the per-metadata scatter figure and its W&B logging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from lungheart_cl import embeddings


def _features(n: int = 120, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Two well separated classes, with metadata that is unrelated to them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    features = rng.normal(size=(n, dim)) + 4.0 * labels[:, None]
    metadata = {"label": np.where(labels == 1, "disease", "healthy"),
                "age group": rng.choice(["child", "adult", "elderly", ""], n),
                "sex": rng.choice(["female", "male"], n),
                "location": rng.choice(["Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr"], n),
                "device": rng.choice(["AKGC417L", "Meditron", "LittC2SE", "Litt3200"], n)}
    return features, metadata


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_shape_and_determinism(method: str):
    features, _ = _features(n=60)
    points = embeddings.project_embeddings(features, method, seed=3)
    assert points.shape == (len(features), 2) and np.isfinite(points).all()
    np.testing.assert_allclose(points, embeddings.project_embeddings(features, method, seed=3), atol=1e-5)


def test_projection_separates_classes_and_small_inputs():
    features, metadata = _features()
    points = embeddings.project_embeddings(features, "pca")
    healthy = metadata["label"] == "healthy"
    gap = abs(points[healthy, 0].mean() - points[~healthy, 0].mean())
    assert gap > 3 * points[healthy, 0].std()
    assert embeddings.project_embeddings(features[:5], "tsne").shape == (5, 2)  # perplexity adapted to n
    assert embeddings.tsne_perplexity(5) < 5 and embeddings.tsne_perplexity(10_000) == 30
    assert embeddings.project_embeddings(features[:, :1], "pca").shape == (len(features), 2)
    with pytest.raises(ValueError):
        embeddings.project_embeddings(features, "umap")


def test_category_labels_lumps_rare_and_missing():
    labels, categories = embeddings.category_labels(["a"] * 5 + ["b"] * 3 + ["c", "d", "", "unknown"],
                                                    max_categories=3)
    assert categories == ["a", "b", "other", "unknown"]
    assert list(labels[-4:]) == ["other", "other", "unknown", "unknown"]


def test_plot_embeddings_writes_png(tmp_path: Path):
    features, metadata = _features()
    points = embeddings.project_embeddings(features, "pca")
    path = embeddings.plot_embeddings(points, metadata, tmp_path / "emb" / "test-pca.png", "test features (PCA)")
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 800 and image.shape[1] > 1500
    assert image[..., :3].std() > 0.05
    with pytest.raises(ValueError):
        embeddings.plot_embeddings(points, {"label": metadata["label"][:3]}, tmp_path / "bad.png", "bad")


def test_log_embeddings_to_wandb_offline(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    features, metadata = _features(n=30)
    points = embeddings.project_embeddings(features, "pca")
    image = embeddings.plot_embeddings(points, metadata, tmp_path / "emb.png", "test")
    files = embeddings.log_embeddings_to_wandb(points, metadata, image, key="test/embeddings", save_dir=tmp_path)
    assert files is not None and (files / "media" / "table").is_dir() and (files / "media" / "images").is_dir()
