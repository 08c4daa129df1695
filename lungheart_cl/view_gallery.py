"""`lungheart-cl views show`: one segment and several of its augmented views, to look at before trusting them.

The views come from a pretraining config exactly as training builds them (same data module, front
end with training-split statistics, view pipeline), so what you see is what the encoder gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lungheart_cl.data.statistics import fit_frontend_statistics


def render_views(config: list[str], out: Path, num_views: int = 6, segment: int | None = None,
                 seed: int = 0, overrides: list[str] | None = None) -> Path:
    """Write a PNG: the segment's log-mel spectrogram, then `num_views` augmented versions of it."""
    from lungheart_cl.lightning_cli import make_cli

    args = [arg for path in config for arg in ("--config", str(path))]
    cli = make_cli("pretrain", [*args, *(overrides or []), "--trainer.logger", "false"])
    model, data = cli.model, cli.datamodule
    data.prepare_data()
    data.setup("fit")
    fit_frontend_statistics(model.frontend, data, max_segments=model.hparams.stats_segments)
    pool = data.pool_rows()
    row = int(pool[0] if segment is None else segment)
    batch = next(data.iterate_rows(np.asarray([row])))
    torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        wave, valid = batch["wave"].float(), batch["valid"]
        original = model.frontend(wave, valid)[0, 0]
        views = model.views.render(wave.repeat(num_views, 1), valid.repeat(num_views, 1), model.frontend)[:, 0]
    return _plot(original, views, out, _title(data, row, model))


def _title(data, row: int, model) -> str:
    m = data.manifest
    return (f"{m['recording_id'][row]} (patient {m['patient_id'][row]}, {m['location'][row]}, {m['device'][row]}), "
            f"{m['start_s'][row]:.2f}-{m['end_s'][row]:.2f} s; scheme {model.hparams.scheme}")


def _plot(original: torch.Tensor, views: torch.Tensor, out: Path, title: str) -> Path:
    panels = [("original", original), *((f"view {i + 1}", v) for i, v in enumerate(views))]
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
