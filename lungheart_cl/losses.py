"""Metadata-aware NT-Xent: one contrastive loss for every pairing scheme.

Every scheme is a pair of boolean masks over (rows = this rank's views, columns = all views of the
global batch), built from integer keys attached to each view:

* positives P[i, j] (j != i): same ``sample`` (the two views of one sample, whichever pair policy
  produced the partner view), or, when ``positive_keys`` is set, all those keys equal (SupCon on a
  metadata key, e.g. ``["age_group"]``, or same-patient positives with ``["patient"]``);
* negatives Q[i, j] (j != i, not positive): every other view, or, when ``negative_keys`` is set, only
  views that share all those keys (``["age_group", "sex"]`` = negatives of the same age and sex).

The row loss is the SupCon "outside" form, which is the usual NT-Xent when each row has one positive:

    l_i = -1/|P_i| * sum_{p in P_i} [ s_ip - log sum_{j in P_i ∪ Q_i} exp(s_ij) ],  s = cos / temperature

and the loss is the sum of l_i over valid rows (rows with at least one positive) divided by the
number of valid rows in the *global* batch. Edge cases, by design never NaN:

* a row without positive is left out of the sum and of the count (see ``valid_fraction``);
* a row with positives but no negative keeps its finite value: 0 with a single positive (no
  gradient), ``logsumexp(s_P) - mean(s_P)`` with several;
* a global batch without a valid row gives a loss of 0 that is still attached to the graph, so
  ``backward()`` (and DDP's gradient all-reduce) runs as usual.

Distributed training: pass ``gather`` (local (V, ...) tensor -> (world_size * V, ...) concatenation
over ranks, differentiable). Each rank computes only its own V rows against the world_size * V
gathered columns and returns ``world_size * (sum of its rows' l_i) / (global valid rows)``. DDP
averages gradients over ranks and the gather's backward sums the column gradients of all ranks, so
the parameter gradients equal those of the single-process loss on the concatenated global batch,
and the mean over ranks of the returned losses equals that global loss (what ``sync_dist`` logs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

Gather = Callable[[Tensor], Tensor]

SAMPLE_KEY = "sample"


@dataclass
class ContrastiveOutput:
    """The loss and detached statistics for logging.

    The similarities and ``negatives_per_row`` are over this rank's valid rows (0 where there is no
    such pair or row); ``valid_fraction`` is over the global batch, so it is the same on every rank.
    """

    loss: Tensor
    positive_similarity: Tensor  # mean cosine similarity of positive pairs
    negative_similarity: Tensor  # mean cosine similarity of pairs in the denominator as negatives
    negatives_per_row: Tensor  # mean number of negatives per valid row
    valid_fraction: Tensor  # fraction of views with at least one positive

    def metrics(self, prefix: str = "") -> dict[str, Tensor]:
        """Every field as ``{prefix + name: 0-dim tensor}``, ready for ``LightningModule.log_dict``."""
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}


def _all_equal(keys_rows: Mapping[str, Tensor], keys_cols: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    """(R, C) mask: row and column agree on every key in ``names``."""
    equal = torch.ones(len(keys_rows[SAMPLE_KEY]), len(keys_cols[SAMPLE_KEY]), dtype=torch.bool,
                       device=keys_rows[SAMPLE_KEY].device)
    for name in names:
        equal &= keys_rows[name][:, None] == keys_cols[name][None, :]
    return equal


def metadata_masks(
    keys_rows: Mapping[str, Tensor],
    keys_cols: Mapping[str, Tensor],
    row_offset: int = 0,
    positive_keys: Sequence[str] = (),
    negative_keys: Sequence[str] = (),
) -> tuple[Tensor, Tensor]:
    """Positive and negative masks, each (R, C) boolean, for rows against columns.

    ``keys_rows`` / ``keys_cols`` map key names to (R,) / (C,) integer tensors and must contain
    ``"sample"``. Row i is column ``row_offset + i`` (this rank's slice of the gathered batch), and
    is neither its own positive nor its own negative.
    """
    rows = torch.arange(len(keys_rows[SAMPLE_KEY]), device=keys_rows[SAMPLE_KEY].device)
    cols = torch.arange(len(keys_cols[SAMPLE_KEY]), device=keys_rows[SAMPLE_KEY].device)
    other = rows[:, None] + row_offset != cols[None, :]
    positive = _all_equal(keys_rows, keys_cols, [SAMPLE_KEY])
    if positive_keys:
        positive |= _all_equal(keys_rows, keys_cols, positive_keys)
    positive &= other
    negative = other & ~positive
    if negative_keys:
        negative &= _all_equal(keys_rows, keys_cols, negative_keys)
    return positive, negative


def nt_xent_rows(logits: Tensor, positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor]:
    """SupCon-outside row losses.

    ``logits`` (R, C) are similarities / temperature; returns ``(losses, valid)`` with ``valid`` the
    (R,) mask of rows with at least one positive and ``losses`` (R,) their values, 0 elsewhere.
    Rows are never copied out (that dominated the cost at large batches).
    """
    valid = positive.any(dim=1)
    # Rows without a positive may use any column, so every logsumexp sees a finite entry (no NaN
    # gradients); torch.where then zeroes them.
    allowed = positive | negative | ~valid.unsqueeze(1)
    log_denominator = logits.masked_fill(~allowed, float("-inf")).logsumexp(dim=1)
    mean_positive = (logits * positive).sum(dim=1) / positive.sum(dim=1).clamp_min(1)
    return torch.where(valid, log_denominator - mean_positive, torch.zeros_like(mean_positive)), valid


def count_rows_with_positive(keys: Mapping[str, Tensor], positive_keys: Sequence[str] = ()) -> Tensor:
    """Number of views that share ``sample`` or all ``positive_keys`` with another view.

    Equals ``metadata_masks(keys, keys, 0, positive_keys)[0].any(1).sum()`` in O(N) memory instead
    of the N x N mask, so every rank can count the valid rows of the whole gathered batch.
    """
    has_positive = _group_sizes(keys[SAMPLE_KEY][:, None]) > 1
    if positive_keys:
        has_positive |= _group_sizes(torch.stack([keys[k] for k in positive_keys], dim=1)) > 1
    return has_positive.sum()


def _group_sizes(codes: Tensor) -> Tensor:
    """Per row of an (N, K) integer tensor: how many rows equal it."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return counts[inverse]


class MetadataNTXent(torch.nn.Module):
    """NT-Xent whose positives and negatives come from per-view metadata keys (see module docstring).

    ``positive_keys=None`` and ``negative_keys=None`` is SimCLR; same-recording / same-patient
    positives either arrive as the partner view (then SimCLR is the right loss) or are asked for with
    ``positive_keys=["patient"]``.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        positive_keys: list[str] | None = None,
        negative_keys: list[str] | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.positive_keys = list(positive_keys or [])
        self.negative_keys = list(negative_keys or [])
        # Only the keys the masks use travel through the gather, stacked into one tensor.
        self.key_names = list(dict.fromkeys([SAMPLE_KEY, *self.positive_keys, *self.negative_keys]))

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, positive_keys={self.positive_keys}, "
                f"negative_keys={self.negative_keys}")

    def forward(
        self,
        z: Tensor,
        keys: Mapping[str, Tensor],
        gather: Gather | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> ContrastiveOutput:
        """Loss of this rank's views ``z`` (V, D), keyed by ``keys`` (name -> (V,) integer tensor).

        ``keys["sample"]`` must be shared by the views of one sample and unique across the global
        batch. Without ``gather`` the batch is the global batch (``world_size`` must be 1).
        """
        num_views = z.shape[0]
        local_keys = self._stack_keys(keys, num_views, z.device)
        if gather is None:
            if world_size != 1:
                raise ValueError(f"world_size={world_size} needs a gather function")
            z_cols, col_keys = z, local_keys
        else:
            z_cols, col_keys = gather(z), gather(local_keys)
            for name, t in (("z", z_cols), ("keys", col_keys)):
                if t.shape[0] != world_size * num_views:
                    raise ValueError(f"gather returned {name} of shape {tuple(t.shape)}, expected first "
                                     f"dimension world_size * V = {world_size * num_views}")
        rows = {name: local_keys[:, k] for k, name in enumerate(self.key_names)}
        cols = {name: col_keys[:, k] for k, name in enumerate(self.key_names)}
        positive, negative = metadata_masks(rows, cols, rank * num_views, self.positive_keys, self.negative_keys)

        # Similarities in at least float32 even under fp16/bf16 autocast: exp(1/0.07) overflows fp16.
        dtype = torch.promote_types(z.dtype, torch.float32)
        with torch.autocast(device_type=z.device.type, enabled=False):
            similarity = F.normalize(z.to(dtype), dim=1) @ F.normalize(z_cols.to(dtype), dim=1).T
            row_losses, valid = nt_xent_rows(similarity / self.temperature, positive, negative)
            num_valid = count_rows_with_positive(cols, self.positive_keys)
            # Empty sums stay on the graph, so a batch without valid rows still backpropagates zeros.
            loss = row_losses.sum() / num_valid.clamp_min(1) * world_size

        with torch.no_grad():  # statistics over valid rows; invalid rows have no positive by definition
            negative = negative & valid.unsqueeze(1)
            return ContrastiveOutput(
                loss=loss,
                positive_similarity=_masked_mean(similarity, positive),
                negative_similarity=_masked_mean(similarity, negative),
                negatives_per_row=negative.sum() / valid.sum().clamp_min(1),
                valid_fraction=num_valid / col_keys.shape[0],
            )

    def _stack_keys(self, keys: Mapping[str, Tensor], num_views: int, device: torch.device) -> Tensor:
        """The keys this loss uses as one (V, K) int64 tensor on ``device``, so one gather moves them all."""
        missing = [name for name in self.key_names if name not in keys]
        if missing:
            raise ValueError(f"MetadataNTXent needs keys {missing} (configured positive_keys="
                             f"{self.positive_keys}, negative_keys={self.negative_keys}); "
                             f"the batch has {sorted(keys)}")
        for name in self.key_names:
            key = keys[name]
            if key.shape != (num_views,) or key.is_floating_point():
                raise ValueError(f"key {name!r} must be an integer tensor of shape ({num_views},), "
                                 f"got {key.dtype} {tuple(key.shape)}")
        return torch.stack([keys[name].long() for name in self.key_names], dim=1).to(device)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; 0 where the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp_min(1)
