"""LARS against a hand computation, the no-decay groups, and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from lungheart_cl.optim import LARS, make_optimizer, param_groups, warmup_cosine


def test_lars_scales_weights_by_the_trust_ratio_and_steps_biases_as_momentum_sgd():
    lr, momentum, wd, eta = 0.5, 0.9, 0.01, 0.001
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))  # norm 5
    bias = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    optimizer = LARS([{"params": [weight, bias]}], lr=lr, momentum=momentum, weight_decay=wd, eta=eta)
    grads = [(torch.tensor([[0.6, -0.8]]), torch.tensor([0.5, 0.25])),
             (torch.tensor([[-1.2, 0.4]]), torch.tensor([-1.0, 2.0]))]
    w, b = weight.detach().clone(), bias.detach().clone()
    w_buf = b_buf = None
    for gw, gb in grads:
        weight.grad, bias.grad = gw.double(), gb.double()
        optimizer.step()
        # by hand: decayed weight gradient times eta ||w|| / ||g||; the bias gets neither decay nor scaling
        g = gw.double() + wd * w
        g = g * (eta * w.norm() / g.norm())
        w_buf = g if w_buf is None else momentum * w_buf + g
        b_buf = gb.double() if b_buf is None else momentum * b_buf + gb.double()
        w, b = w - lr * w_buf, b - lr * b_buf
        torch.testing.assert_close(weight.detach(), w, rtol=0, atol=1e-15)
        torch.testing.assert_close(bias.detach(), b, rtol=0, atol=1e-15)


def test_lars_leaves_the_gradient_unscaled_for_a_zero_weight():
    weight = nn.Parameter(torch.zeros(2, 2))
    optimizer = LARS([weight], lr=0.1, weight_decay=0.0)
    weight.grad = torch.ones(2, 2)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((2, 2), -0.1))  # trust 1, not 0 (which would never move)


def test_biases_and_norm_parameters_get_no_weight_decay():
    module = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Conv1d(3, 2, 3))
    module[0].bias.requires_grad_(False)  # frozen parameters are left out
    decay, no_decay = param_groups(module, weight_decay=0.05, lr=0.2)
    assert {id(p) for p in decay["params"]} == {id(module[0].weight), id(module[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(module[1].weight), id(module[1].bias), id(module[2].bias)}
    assert (decay["weight_decay"], no_decay["weight_decay"], decay["lr"], no_decay["lr"]) == (0.05, 0.0, 0.2, 0.2)
    optimizer = make_optimizer("adamw", [decay, no_decay], lr=0.2, weight_decay=0.05)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop", [decay], lr=0.2, weight_decay=0.05)  # type: ignore[arg-type]


def _lrs(total: int, warmup: int, ratio: float, scales: tuple[float, ...], base: float = 0.1) -> list[list[float]]:
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": base * s} for s in scales]
    optimizer = torch.optim.SGD(groups, lr=base)
    scheduler = LambdaLR(optimizer, warmup_cosine(total, warmup, ratio))
    seen = []
    for _ in range(total + 3):  # three steps past the end stay at the floor
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_the_schedule_ramps_linearly_then_decays_by_cosine_to_the_floor_in_every_group():
    total, warmup, ratio, base = 110, 10, 0.01, 0.1
    seen = _lrs(total, warmup, ratio, scales=(1.0, 0.1), base=base)
    for step, (head, encoder) in enumerate(seen):
        if step < warmup:
            expected = base * (step + 1) / warmup
        else:
            progress = min((step - warmup) / (total - warmup), 1.0)
            expected = base * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        assert head == pytest.approx(expected, rel=1e-12)
        assert encoder == pytest.approx(0.1 * expected, rel=1e-12)  # the group's scale holds all along
    assert seen[warmup - 1][0] == pytest.approx(base) and seen[warmup][0] == pytest.approx(base)  # peak, no jump
    assert seen[warmup + 50][0] == pytest.approx(base * (1 + ratio) / 2)  # halfway down the cosine
    assert seen[total][1] == pytest.approx(0.1 * base * ratio) == seen[-1][1]  # the encoder's floor is its own


def test_without_warmup_the_schedule_starts_at_the_base_rate():
    seen = _lrs(total=20, warmup=0, ratio=0.0, scales=(1.0,))
    assert seen[0][0] == pytest.approx(0.1) and seen[20][0] == pytest.approx(0.0, abs=1e-15)
    assert all(a[0] > b[0] for a, b in zip(seen[:20], seen[1:21]))
