"""`lungheart-cl views show`: one segment, its pair partner and their augmented views, to look at before trusting them.

The views come from a pretraining config exactly as training builds them (same data module, pair
policy, front end with training-split statistics, view pipeline), so what you see is what the
encoder gets. When the pair policy gives the segment another partner (another window of the
recording, another site of the patient), the views alternate between the two, as the two views
of a training pair do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lungheart_cl.data.pairs import make_pair_policy
from lungheart_cl.data.statistics import fit_frontend_statistics


def render_views(config: list[str], out: Path, num_views: int = 6, segment: int | None = None,
                 seed: int = 0, overrides: list[str] | None = None) -> Path:
    """Write a PNG: the segment's log-mel spectrogram (and its partner's), then `num_views` augmented views."""
    from lungheart_cl.lightning_cli import make_cli

    args = [arg for path in config for arg in ("--config", str(path))]
    cli = make_cli("pretrain", [*args, *(overrides or []), "--trainer.logger", "false"])
    model, data = cli.model, cli.datamodule
    data.prepare_data()
    data.setup("fit")
    fit_frontend_statistics(model.frontend, data, max_segments=model.hparams.stats_segments)
    pool = data.pool_rows()
    row = int(pool[0] if segment is None else segment)
    rows = [row, _partner(data, pool, row, seed)]
    batch = next(data.iterate_rows(np.asarray(rows)))
    paired = rows[1] != row
    source = torch.arange(num_views) % 2 if paired else torch.zeros(num_views, dtype=torch.long)
    torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        wave, valid = batch["wave"].float(), batch["valid"]
        originals = model.frontend(wave, valid)[:, 0]
        views = model.views.render(wave[source], valid[source], model.frontend)[:, 0]
    names = ["anchor", "partner"] if paired else ["original"]
    panels = [(name, originals[i]) for i, name in enumerate(names)]
    panels += [(f"view {i + 1}" + (f" ({names[k]})" if paired else ""), v) for i, (k, v) in enumerate(zip(source.tolist(), views))]
    return _plot(panels, out, _title(data, rows, model))


def _partner(data, pool: np.ndarray, row: int, seed: int) -> int:
    """The row the configured pair policy gives ``row`` as second view (itself if it is not in the pool)."""
    local = np.flatnonzero(pool == row)
    if not len(local):
        return row
    pool_manifest = {key: values[pool] for key, values in data.manifest.items()}  # as train_sampler fits it
    policy = make_pair_policy(data.pair_policy_name, pool_manifest, data.pair_min_gap_s)
    return int(pool[policy.partners(local, np.random.default_rng(seed))[0]])


def _title(data, rows: list[int], model) -> str:
    m = data.manifest
    row, partner = rows
    title = (f"{m['recording_id'][row]} (patient {m['patient_id'][row]}, {m['location'][row]}, {m['device'][row]}), "
             f"{m['start_s'][row]:.2f}-{m['end_s'][row]:.2f} s")
    if partner != row:
        title += (f";\npartner ({data.pair_policy_name}) {m['recording_id'][partner]} ({m['location'][partner]}), "
                  f"{m['start_s'][partner]:.2f}-{m['end_s'][partner]:.2f} s")
    return f"{title}; scheme {model.hparams.scheme}"


def _plot(panels: list[tuple[str, torch.Tensor]], out: Path, title: str) -> Path:
    original = panels[0][1]
    columns = min(4, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    figure = Figure(figsize=(3.6 * columns, 2.8 * rows + 0.6), dpi=130, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    low, high = float(original.min()), float(original.max())  # one colour scale: masks show as changes
    for ax, (name, spec) in zip(axes, panels):
        ax.imshow(spec.numpy(), origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("frame")
        ax.set_ylabel("mel band")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    return out
