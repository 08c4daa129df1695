"""2-D views of encoder features, coloured by label and metadata (age group, sex, location, device).

A representation that separates patients by device or chest location rather than by diagnosis is
easy to spot in these plots; the same points go to W&B as a Table so they can be re-coloured there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from lungheart_cl.wandb_runs import run_files_dir, start_wandb_run

Method = Literal["pca", "tsne"]
MAX_CATEGORIES = 12  # beyond this a legend stops being readable: the rarest are lumped into "other"
MISSING = {"", "unknown", "nan", "none", "-1"}
TSNE_PCA_DIMS = 50  # t-SNE on the leading principal components: faster, and removes noise dimensions
TSNE_EXACT_MAX = 200  # below this exact t-SNE is both faster than Barnes-Hut (no tree overhead) and exact


def _as_features(features) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 3:
        raise ValueError(f"features must be (n >= 3, dim), got shape {features.shape}")
    return features


def tsne_perplexity(n: int) -> float:
    """sklearn's default 30, lowered for small sets (it must stay below n; about n/3 keeps it stable)."""
    return float(min(30.0, max(1.0, (n - 1) / 3)))


def project_embeddings(features, method: Method = "pca", seed: int = 0) -> np.ndarray:
    """(n, dim) features -> (n, 2) points by PCA or t-SNE (deterministic for a given ``seed``)."""
    features = _as_features(features)
    n, dim = features.shape
    components = min(2, n, dim)
    if method == "pca":
        points = PCA(n_components=components, random_state=seed).fit_transform(features)
    elif method == "tsne":
        reduced = features
        if dim > TSNE_PCA_DIMS and n > TSNE_PCA_DIMS:
            reduced = PCA(n_components=TSNE_PCA_DIMS, random_state=seed).fit_transform(features)
        algorithm = "exact" if n <= TSNE_EXACT_MAX else "barnes_hut"
        points = TSNE(n_components=2, perplexity=tsne_perplexity(n), init="pca", method=algorithm,
                      random_state=seed).fit_transform(reduced)
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', not {method!r}")
    # one-dimensional features still give a drawable (n, 2) array
    return np.pad(points, ((0, 0), (0, 2 - points.shape[1]))).astype(np.float32)


def category_labels(labels: Sequence, max_categories: int = MAX_CATEGORIES) -> tuple[np.ndarray, list[str]]:
    """Labels as strings with the rarest lumped into 'other', and the categories in legend order
    (most frequent first, missing values last)."""
    labels = np.asarray([str(v).strip() for v in labels], dtype=object)
    labels = np.where([v.lower() in MISSING for v in labels], "unknown", labels)
    names, counts = np.unique(labels.astype(str), return_counts=True)
    ranked = [str(name) for _, name in sorted(zip(-counts, names)) if name != "unknown"]
    if len(ranked) > max_categories:
        labels = np.where(np.isin(labels, ranked[max_categories - 1:]), "other", labels)
        ranked = ranked[:max_categories - 1] + ["other"]
    return labels, ranked + (["unknown"] if "unknown" in names else [])


def _draw_panel(ax, points: np.ndarray, labels: Sequence, name: str) -> None:
    """One categorical scatter: a colour per category, unknown in light grey, legend under the axes."""
    labels, categories = category_labels(labels)
    palette = colormaps["tab10" if len(categories) <= 10 else "tab20"].colors
    size = float(np.clip(6000 / len(points), 4, 40))  # fewer points, bigger dots
    for i, category in enumerate(categories):
        chosen = labels == category
        colour = "#c8c8c8" if category == "unknown" else palette[i % len(palette)]
        ax.scatter(points[chosen, 0], points[chosen, 1], s=size, color=colour, alpha=0.75, linewidths=0,
                   label=f"{category} ({int(chosen.sum())})", rasterized=True)
    ax.set_title(f"coloured by {name}", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(3, len(categories)), fontsize=8,
              frameon=False, markerscale=max(1.0, 30 / size) ** 0.5, handletextpad=0.2, columnspacing=1.0)


def plot_embeddings(points: np.ndarray, colour_by: Mapping[str, Sequence], out_path: str | Path,
                    title: str) -> Path:
    """One PNG with a panel per colouring (e.g. label, age group, sex, location, device)."""
    points = np.asarray(points)
    if not colour_by:
        raise ValueError("colour_by needs at least one colouring")
    for name, labels in colour_by.items():
        if len(labels) != len(points):
            raise ValueError(f"colour_by[{name!r}] has {len(labels)} labels for {len(points)} points")
    columns = min(3, len(colour_by))
    rows = math.ceil(len(colour_by) / columns)
    figure = Figure(figsize=(4.6 * columns, 5.0 * rows), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, labels) in zip(axes, colour_by.items()):
        _draw_panel(ax, points, labels, name)
    for ax in axes[len(colour_by):]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=12)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)
    return out_path


def log_embeddings_to_wandb(points: np.ndarray, metadata: Mapping[str, Sequence], image: str | Path | None = None,
                            key: str = "embeddings", run=None, project: str = "lungheart-cl",
                            save_dir: str | Path | None = None) -> Path | None:
    """Log the points with their metadata as a ``wandb.Table`` (x, y, one column per metadata field)
    and ``image`` as a ``wandb.Image``, to ``run`` (e.g. a Lightning WandbLogger's ``experiment``) or to
    a new never-blocking run. Returns the run's files directory, or None when W&B is disabled."""
    import wandb

    points = np.asarray(points)
    own_run = run is None
    run = start_wandb_run(project, key.replace("/", "-"), "embeddings", save_dir) if own_run else run
    try:
        values = [np.asarray(v).tolist() for v in metadata.values()]  # numpy scalars -> JSON-friendly types
        data = [[x, y, *(column[i] for column in values)] for i, (x, y) in enumerate(points[:, :2].tolist())]
        payload: dict = {f"{key}/table": wandb.Table(columns=["x", "y", *metadata], data=data)}
        if image is not None:
            payload[f"{key}/image"] = wandb.Image(str(image), caption=Path(image).stem)
        run.log(payload)
    finally:
        if own_run:
            run.finish()
    return run_files_dir(run)
