"""Section 4: cost of `MetadataNTXent` (negatives of the same age group and sex) vs a plain SimCLR NT-Xent."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lungheart_cl.bench.common import Context, Stopwatch, table
from lungheart_cl.losses import MetadataNTXent

EMBEDDING_DIM = 128
TEMPERATURE = 0.1


@dataclass
class LossRow:
    pairs: int  # global batch size N; the loss sees 2N views
    views: int
    metadata_ms: float
    simclr_ms: float
    ratio: float  # metadata / simclr


@dataclass
class LossResult:
    rows: list[LossRow]

    def checks(self) -> list:
        return []


def simclr_nt_xent(z: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Plain SimCLR: cross-entropy over the 2N x 2N cosine similarities, diagonal masked; rows i and i+N pair."""
    n = z.shape[0] // 2
    z = F.normalize(z, dim=1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def best_ms(min_seconds: float, **calls) -> dict[str, float]:
    """Fastest ms per call of each function: one warm-up call each, then the functions take turns
    (so a slow spell hits all of them) until `min_seconds` have passed, at least once each."""
    best = {name: math.inf for name in calls}
    for fn in calls.values():
        fn()
    watch, elapsed = Stopwatch(), 0.0
    while elapsed < min_seconds or math.inf in best.values():
        for name, fn in calls.items():
            lap = Stopwatch()
            fn()
            best[name] = min(best[name], lap.lap() * 1000)
        elapsed += watch.lap()
    return best


def run(ctx: Context) -> LossResult:
    generator = torch.Generator().manual_seed(0)
    metadata_loss = MetadataNTXent(TEMPERATURE, negative_keys=["age_group", "sex"])
    rows = []
    for pairs in ctx.sizes.loss_pairs:
        z = torch.randn(2 * pairs, EMBEDDING_DIM, generator=generator, requires_grad=True)
        sample = torch.arange(pairs).repeat(2)
        keys = {"sample": sample, "age_group": torch.randint(0, 2, (pairs,), generator=generator).repeat(2),
                "sex": torch.randint(0, 2, (pairs,), generator=generator).repeat(2)}

        def metadata_call():
            metadata_loss(z, keys).loss.backward()

        def simclr_call():
            simclr_nt_xent(z).backward()

        best = best_ms(ctx.sizes.loss_min_seconds, metadata=metadata_call, simclr=simclr_call)
        rows.append(LossRow(pairs, 2 * pairs, best["metadata"], best["simclr"], best["metadata"] / best["simclr"]))
        z.grad = None
    table(f"[4] contrastive loss forward + backward on CPU ({torch.get_num_threads()} threads), random "
          f"{EMBEDDING_DIM}-d embeddings; global batch = N pairs = 2N views; fastest of alternating calls",
          ["pairs N", "views 2N", "MetadataNTXent ms", "SimCLR NT-Xent ms", "ratio"],
          [[r.pairs, r.views, r.metadata_ms, r.simclr_ms, r.ratio] for r in rows])
    print("  MetadataNTXent: negative_keys=[age_group, sex] (2 age groups x 2 sexes, random); "
          "SimCLR: cross-entropy over the 2N x 2N similarities, diagonal masked")
    return LossResult(rows)
