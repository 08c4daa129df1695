"""MetadataNTXent: every pairing scheme against a loop-over-rows reference, edge cases, known values, 2 ranks."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lungheart_cl.losses import ContrastiveOutput, MetadataNTXent, count_rows_with_positive, metadata_masks

METADATA_CARDINALITY = {"patient": 4, "recording": 6, "location": 3, "device": 2, "age_group": 3, "sex": 2}

# name -> (positive_keys, negative_keys)
SCHEMES = {
    "simclr": ([], []),
    "supcon_age_group": (["age_group"], []),
    "same_patient": (["patient"], []),
    "negatives_same_location": ([], ["location"]),
    "negatives_same_age_group": ([], ["age_group"]),
    "negatives_same_sex": ([], ["sex"]),
    "negatives_same_age_group_and_sex": ([], ["age_group", "sex"]),
    "supcon_age_group_negatives_same_sex": (["age_group"], ["sex"]),
}
SEEDS = range(6)


def random_batch(seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Batches of 5 to 15 samples; in even seeds sample 0 is alone in its stratum of every key."""
    z, keys = make_batch(seed, num_pairs=3 + 2 * seed)
    if seed % 2 == 0:
        for name, cardinality in METADATA_CARDINALITY.items():
            keys[name][keys["sample"] == 0] = cardinality  # a value no other sample has
    return z, keys


def make_batch(
    seed: int, num_pairs: int = 8, num_singletons: int = 2, dim: int = 6, first_sample: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Views of ``num_pairs`` two-view samples (anchors, then partners) and views without partner.

    Metadata is drawn per sample with small cardinalities, so same-stratum groups of one sample
    (rows without negatives) and groups of several samples (rows with several positives) both occur.
    """
    gen = torch.Generator().manual_seed(seed)
    num_samples = num_pairs + num_singletons
    sample_meta = {k: torch.randint(0, n, (num_samples,), generator=gen) for k, n in METADATA_CARDINALITY.items()}
    sample_meta["sample"] = torch.arange(first_sample, first_sample + num_samples)
    view_to_sample = torch.cat([torch.arange(num_samples), torch.arange(num_pairs)])
    keys = {k: v[view_to_sample] for k, v in sample_meta.items()}
    z = torch.randn(len(view_to_sample), dim, generator=gen, dtype=torch.float64)
    return z, keys


def reference(z: torch.Tensor, keys: dict[str, torch.Tensor], temperature: float,
              positive_keys: list[str], negative_keys: list[str]) -> dict[str, float | torch.Tensor]:
    """The definition, one row and one column at a time, in float64."""
    n = len(z)
    key = {k: v.tolist() for k, v in keys.items()}
    unit = [z[i] / torch.sqrt((z[i] * z[i]).sum()) for i in range(n)]
    total, num_valid, num_negatives, no_negative_rows, multi_positive_rows = 0.0, 0, 0, 0, 0
    for i in range(n):
        positives, negatives = [], []
        for j in range(n):
            if j == i:
                continue
            if key["sample"][i] == key["sample"][j] or (
                positive_keys and all(key[k][i] == key[k][j] for k in positive_keys)
            ):
                positives.append(j)
            elif all(key[k][i] == key[k][j] for k in negative_keys):
                negatives.append(j)
        if not positives:
            continue
        s = {j: (unit[i] * unit[j]).sum() / temperature for j in positives + negatives}
        log_denominator = torch.log(sum(torch.exp(s[j]) for j in positives + negatives))
        total = total - sum(s[p] - log_denominator for p in positives) / len(positives)
        num_valid += 1
        num_negatives += len(negatives)
        no_negative_rows += not negatives
        multi_positive_rows += len(positives) > 1
    return {
        "loss": total / max(num_valid, 1),
        "valid_fraction": num_valid / n,
        "negatives_per_row": num_negatives / max(num_valid, 1),
        "no_negative_rows": no_negative_rows,
        "multi_positive_rows": multi_positive_rows,
        "no_positive_rows": n - num_valid,
    }


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_scheme_equals_the_loop_reference(scheme: str, seed: int) -> None:
    positive_keys, negative_keys = SCHEMES[scheme]
    z, keys = random_batch(seed)
    temperature = 0.1 + 0.1 * seed
    z_ref = z.clone().requires_grad_(True)
    expected = reference(z_ref, keys, temperature, positive_keys, negative_keys)
    expected["loss"].backward()

    z.requires_grad_(True)
    out = MetadataNTXent(temperature, positive_keys, negative_keys)(z, keys)
    out.loss.backward()

    assert out.loss.item() == pytest.approx(expected["loss"].item(), abs=1e-5)
    torch.testing.assert_close(z.grad, z_ref.grad, atol=1e-5, rtol=0)
    assert out.valid_fraction.item() == pytest.approx(expected["valid_fraction"])
    assert out.negatives_per_row.item() == pytest.approx(expected["negatives_per_row"])


def test_random_batches_cover_every_edge_case() -> None:
    """The random batches above really contain the rows the edge-case semantics are about."""
    for scheme, (positive_keys, negative_keys) in SCHEMES.items():
        stats = [reference(*random_batch(seed), 1.0, positive_keys, negative_keys) for seed in SEEDS]
        assert all(s["no_positive_rows"] > 0 for s in stats) or positive_keys, scheme
        if positive_keys:
            assert any(s["multi_positive_rows"] > 0 for s in stats), scheme
        if negative_keys:
            assert any(s["no_negative_rows"] > 0 for s in stats), scheme


@pytest.mark.parametrize("scheme", SCHEMES)
def test_float32_embeddings_match_the_reference(scheme: str) -> None:
    positive_keys, negative_keys = SCHEMES[scheme]
    z, keys = make_batch(7, num_pairs=16, num_singletons=3, dim=32)
    expected = reference(z, keys, 0.07, positive_keys, negative_keys)["loss"].item()
    assert MetadataNTXent(0.07, positive_keys, negative_keys)(z.float(), keys).loss.item() == pytest.approx(
        expected, abs=1e-5
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_permuting_the_batch_does_not_change_the_loss(scheme: str) -> None:
    loss_fn = MetadataNTXent(0.2, *SCHEMES[scheme])
    z, keys = make_batch(3, num_pairs=12, num_singletons=3)
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))
    permuted = loss_fn(z[perm], {k: v[perm] for k, v in keys.items()})
    assert permuted.loss.item() == pytest.approx(loss_fn(z, keys).loss.item(), abs=1e-10)


def test_known_values_two_samples_four_views() -> None:
    """Views (1,0),(0,1) and their identical partners: cosines 1 with the partner, 0 otherwise."""
    z = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [0.0, 1.0]])  # norms differ: cosine normalises
    keys = {"sample": torch.tensor([0, 1, 0, 1]), "age_group": torch.tensor([5, 5, 5, 5]),
            "sex": torch.tensor([0, 1, 0, 1])}
    e = math.e
    # SimCLR at T=0.5: each row has logits 2 (partner), 0, 0.
    assert MetadataNTXent(0.5)(z, keys).loss.item() == pytest.approx(math.log(e**2 + 2) - 2, abs=1e-6)
    # SupCon on age group: all 3 others are positives, -mean(2, 0, 0) + log(e^2 + 2).
    supcon = MetadataNTXent(0.5, positive_keys=["age_group"])(z, keys)
    assert supcon.loss.item() == pytest.approx(math.log(e**2 + 2) - 2 / 3, abs=1e-6)
    assert supcon.negatives_per_row.item() == 0
    # Negatives of the same sex: none exist, so a single positive gives exactly 0.
    same_sex = MetadataNTXent(0.5, negative_keys=["sex"])(z, keys)
    assert same_sex.loss.item() == 0
    assert same_sex.positive_similarity.item() == pytest.approx(1.0)
    assert same_sex.valid_fraction.item() == 1.0


def test_statistics_of_aligned_orthogonal_views() -> None:
    z = torch.eye(4).repeat(2, 1)
    out = MetadataNTXent(0.1)(z, {"sample": torch.arange(4).repeat(2)})
    assert isinstance(out, ContrastiveOutput)
    assert out.positive_similarity.item() == pytest.approx(1.0)
    assert out.negative_similarity.item() == pytest.approx(0.0)
    assert out.negatives_per_row.item() == 6
    assert out.valid_fraction.item() == 1.0
    assert set(out.metrics("pretrain/")) == {"pretrain/loss", "pretrain/positive_similarity",
                                            "pretrain/negative_similarity", "pretrain/negatives_per_row",
                                            "pretrain/valid_fraction"}
    assert not any(v.requires_grad for k, v in out.metrics().items() if k != "loss")


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.1, 0.05])
def test_temperature_on_aligned_views_follows_the_closed_form(temperature: float) -> None:
    """Identical views of 8 orthogonal samples: l = log(1 + (V - 2) exp(-1/T)), far below random views."""
    z = torch.eye(8, dtype=torch.float64).repeat(2, 1)  # float64: the loss is ~1e-8 at T=0.05
    keys = {"sample": torch.arange(8).repeat(2)}
    loss_fn = MetadataNTXent(temperature)
    aligned = loss_fn(z, keys).loss.item()
    assert aligned == pytest.approx(math.log1p(14 * math.exp(-1 / temperature)), rel=1e-5)
    random_views = loss_fn(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)).double(), keys).loss.item()
    assert aligned < random_views


def test_lower_temperature_sharpens_aligned_views() -> None:
    z = torch.eye(8).repeat(2, 1)
    keys = {"sample": torch.arange(8).repeat(2)}
    losses = [MetadataNTXent(t)(z, keys).loss.item() for t in (1.0, 0.5, 0.1, 0.05)]
    assert losses == sorted(losses, reverse=True)


def test_row_without_negative_is_finite_and_backpropagates() -> None:
    # One sample alone in its stratum (sex 1) among others of sex 0; restricted to same-sex negatives.
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    keys = {"sample": torch.tensor([0, 1, 2, 0, 1, 2]), "sex": torch.tensor([1, 0, 0, 1, 0, 0])}
    out = MetadataNTXent(0.1, negative_keys=["sex"])(z, keys)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()
    assert torch.all(z.grad[[0, 3]] == 0)  # its only term is s_ip - s_ip: no gradient signal
    assert out.valid_fraction.item() == 1.0
    assert out.negatives_per_row.item() == pytest.approx(4 * 2 / 6)  # 4 rows with 2 negatives each


def test_several_positives_without_negative_are_finite_and_positive() -> None:
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    keys = {"sample": torch.tensor([0, 1, 0, 1]), "age_group": torch.zeros(4, dtype=torch.long)}
    out = MetadataNTXent(0.1, positive_keys=["age_group"], negative_keys=["age_group"])(z, keys)
    out.loss.backward()
    assert out.loss.item() > 0 and torch.isfinite(z.grad).all()


def test_batch_without_valid_row_gives_zero_with_a_graph() -> None:
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = MetadataNTXent(0.1, negative_keys=["sex"])(z, {"sample": torch.arange(5), "sex": torch.zeros(5).long()})
    assert out.loss.item() == 0 and out.loss.requires_grad
    out.loss.backward()
    assert torch.all(z.grad == 0)
    assert out.valid_fraction.item() == 0 and out.negatives_per_row.item() == 0
    assert out.positive_similarity.item() == 0 and out.negative_similarity.item() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_under_autocast_computes_in_float32(dtype: torch.dtype) -> None:
    z, keys = make_batch(2, num_pairs=16, dim=16)
    z_half = z.to(dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = MetadataNTXent(0.01, negative_keys=["age_group"])(z_half, keys)  # exp(1/0.01) overflows fp16
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(z_half.grad.float()).all()
    expected = MetadataNTXent(0.01, negative_keys=["age_group"])(z_half.detach().float(), keys).loss
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_masks_exclude_self_and_respect_row_offset() -> None:
    keys = {"sample": torch.tensor([0, 1, 0, 1]), "sex": torch.tensor([0, 0, 0, 1])}
    rows = {k: v[2:] for k, v in keys.items()}  # the second "rank" owns views 2 and 3
    positive, negative = metadata_masks(rows, keys, row_offset=2, negative_keys=["sex"])
    assert positive.tolist() == [[True, False, False, False], [False, True, False, False]]
    assert negative.tolist() == [[False, True, False, False], [False, False, False, False]]
    assert count_rows_with_positive(keys).item() == 4


def test_missing_or_malformed_keys_are_clear_errors() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="age_group"):
        MetadataNTXent(negative_keys=["age_group", "sex"])(z, {"sample": torch.arange(4), "sex": torch.zeros(4)})
    with pytest.raises(ValueError, match="sample"):
        MetadataNTXent()(z, {"patient": torch.arange(4)})
    with pytest.raises(ValueError, match="shape"):
        MetadataNTXent()(z, {"sample": torch.arange(3)})
    with pytest.raises(ValueError, match="integer"):
        MetadataNTXent()(z, {"sample": torch.arange(4).float()})
    with pytest.raises(ValueError, match="gather"):
        MetadataNTXent()(z, {"sample": torch.arange(4)}, world_size=2)
    with pytest.raises(ValueError, match="world_size"):  # e.g. Lightning's all_gather on one device
        MetadataNTXent()(z, {"sample": torch.arange(4)}, gather=lambda t: t, world_size=2)
    with pytest.raises(ValueError, match="temperature"):
        MetadataNTXent(temperature=0.0)


def run_ranks(loss_fn: MetadataNTXent, z: torch.Tensor, keys: dict[str, torch.Tensor],
              world_size: int) -> list[ContrastiveOutput]:
    """Simulated ranks: one thread per rank, each with its slice; `gather` concatenates every rank's input."""
    views = len(z) // world_size
    slots: list[torch.Tensor | None] = [None] * world_size
    barrier = threading.Barrier(world_size)

    def rank_forward(rank: int) -> ContrastiveOutput:
        def gather(t: torch.Tensor) -> torch.Tensor:
            slots[rank] = t
            barrier.wait()
            out = torch.cat(slots)
            barrier.wait()  # nobody overwrites a slot before everyone has read it
            return out

        part = slice(rank * views, (rank + 1) * views)
        return loss_fn(z[part], {k: v[part] for k, v in keys.items()}, gather, rank, world_size)

    with ThreadPoolExecutor(world_size) as pool:
        return list(pool.map(rank_forward, range(world_size)))


def two_rank_batch(rank1_pairs: int, rank1_singletons: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """8 views per rank: rank 0 has 4 pairs, rank 1 a different number of valid rows."""
    z0, k0 = make_batch(10, num_pairs=4, num_singletons=0)
    z1, k1 = make_batch(11, num_pairs=rank1_pairs, num_singletons=rank1_singletons, first_sample=100)
    return torch.cat([z0, z1]), {k: torch.cat([k0[k], k1[k]]) for k in k0}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("rank1", [(4, 0), (2, 4), (0, 8)], ids=["equal", "fewer_valid", "singletons_only"])
def test_mean_over_two_simulated_ranks_equals_the_global_loss(scheme: str, rank1: tuple[int, int]) -> None:
    loss_fn = MetadataNTXent(0.1, *SCHEMES[scheme])
    z, keys = two_rank_batch(*rank1)
    z_global = z.clone().requires_grad_(True)
    expected = loss_fn(z_global, keys)
    expected.loss.backward()

    z.requires_grad_(True)
    outputs = run_ranks(loss_fn, z, keys, world_size=2)
    mean_loss = sum(o.loss for o in outputs) / 2
    mean_loss.backward()  # gradient of sum_r loss_r / W through rows and gathered columns
    assert mean_loss.item() == pytest.approx(expected.loss.item(), abs=1e-10)
    torch.testing.assert_close(z.grad, z_global.grad, atol=1e-10, rtol=0)
    assert all(o.valid_fraction.item() == pytest.approx(expected.valid_fraction.item()) for o in outputs)
