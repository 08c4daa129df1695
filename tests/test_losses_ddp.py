"""MetadataNTXent under real DDP: 2 CPU processes (gloo) give the single-process loss and gradients.

Each rank wraps the same linear model in DistributedDataParallel (as Lightning does), embeds its half
of a fixed global batch and gathers embeddings and keys with the differentiable all_gather that
Lightning's ``all_gather(sync_grads=True)`` uses. The mean of the per-rank losses and every rank's
(DDP-averaged) gradients must equal the loss and gradients of one process on the global batch.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.multiprocessing as mp

from lungheart_cl.losses import MetadataNTXent

WORLD_SIZE = 2
VIEWS_PER_RANK = 8
IN_DIM, OUT_DIM = 5, 4

# (name, positive_keys, negative_keys, rank 1's (pairs, singletons)); rank 0 always has 4 pairs.
CASES = [
    ("simclr", [], [], (4, 0)),
    ("simclr_fewer_valid_rows_on_rank1", [], [], (2, 4)),
    ("simclr_no_valid_row_on_rank1", [], [], (0, 8)),
    ("negatives_same_age_group_and_sex", [], ["age_group", "sex"], (3, 2)),
    ("supcon_age_group", ["age_group"], [], (1, 6)),
]


def rank_batch(seed: int, num_pairs: int, num_singletons: int, first_sample: int) -> tuple[torch.Tensor, dict]:
    """One rank's views: anchors, partners of the pairs; small-cardinality metadata per sample."""
    gen = torch.Generator().manual_seed(seed)
    num_samples = num_pairs + num_singletons
    view_to_sample = torch.cat([torch.arange(num_samples), torch.arange(num_pairs)])
    meta = {"age_group": torch.randint(0, 2, (num_samples,), generator=gen),
            "sex": torch.randint(0, 2, (num_samples,), generator=gen),
            "sample": torch.arange(first_sample, first_sample + num_samples)}
    x = torch.randn(len(view_to_sample), IN_DIM, generator=gen, dtype=torch.float64)
    return x, {k: v[view_to_sample] for k, v in meta.items()}


def global_batch(rank1: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    x0, k0 = rank_batch(0, 4, 0, first_sample=0)
    x1, k1 = rank_batch(1, *rank1, first_sample=100)
    assert len(x0) == len(x1) == VIEWS_PER_RANK
    return torch.cat([x0, x1]), {k: torch.cat([k0[k], k1[k]]) for k in k0}


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights in the parent and on every rank
    return torch.nn.Linear(IN_DIM, OUT_DIM).double()


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenation over ranks whose backward sums every rank's gradient into the owner's slice."""
    return torch.cat(dist_nn.all_gather(t))


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
                           timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    results = {}
    for name, positive_keys, negative_keys, rank1 in CASES:
        x, keys = global_batch(rank1)
        part = slice(rank * VIEWS_PER_RANK, (rank + 1) * VIEWS_PER_RANK)
        model = torch.nn.parallel.DistributedDataParallel(make_model())
        out = MetadataNTXent(0.1, positive_keys, negative_keys)(
            model(x[part]), {k: v[part] for k, v in keys.items()}, gather, rank, WORLD_SIZE)
        out.loss.backward()
        results[name] = {"loss": out.loss.detach(), "valid_fraction": out.valid_fraction,
                         "grads": [p.grad.clone() for p in model.parameters()]}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Run every case in one pair of processes (one spawn keeps the test at a few seconds)."""
    tmp = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(_rank_main, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD_SIZE,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):  # raises with the child's traceback if a rank fails
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("DDP ranks did not finish in 120 s (a collective is probably waiting)")
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_ddp_loss_and_gradients_equal_single_process(rank_results: list[dict], case: tuple) -> None:
    name, positive_keys, negative_keys, rank1 = case
    x, keys = global_batch(rank1)
    model = make_model()
    expected = MetadataNTXent(0.1, positive_keys, negative_keys)(model(x), keys)
    expected.loss.backward()

    per_rank = [results[name] for results in rank_results]
    mean_loss = sum(r["loss"] for r in per_rank) / WORLD_SIZE
    assert mean_loss.item() == pytest.approx(expected.loss.item(), abs=1e-6)
    for r in per_rank:
        for grad, expected_param in zip(r["grads"], model.parameters()):
            torch.testing.assert_close(grad, expected_param.grad, atol=1e-6, rtol=0)
        assert r["valid_fraction"].item() == pytest.approx(expected.valid_fraction.item())


def test_cases_have_different_valid_rows_per_rank() -> None:
    """The cases really exercise ranks with unequal (and zero) numbers of valid rows."""
    loss_fn = MetadataNTXent(0.1)
    counts = []
    for _, _, _, rank1 in CASES:
        x, keys = global_batch(rank1)
        halves = [slice(0, VIEWS_PER_RANK), slice(VIEWS_PER_RANK, None)]
        counts.append([loss_fn(x[h], {k: v[h] for k, v in keys.items()}).valid_fraction.item() for h in halves])
    assert any(c[0] != c[1] for c in counts) and any(c[1] == 0 for c in counts)
