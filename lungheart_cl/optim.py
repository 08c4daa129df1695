"""Optimisers and the warmup + cosine learning-rate schedule shared by pretraining and classification."""

from __future__ import annotations

import math
from typing import Iterable, Literal

import torch
from torch import nn
from torch.optim import Optimizer

OptimizerName = Literal["adam", "adamw", "lars", "sgd"]


class LARS(Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as used by SimCLR for
    large batches. Biases and norm parameters (1-D) are excluded from adaptation and weight decay."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6,
                 eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:  # weights: decay and trust ratio; biases and norms: plain momentum SGD
                    grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where((p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm,
                                        torch.ones_like(p_norm))
                    grad = grad.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def param_groups(module: nn.Module, weight_decay: float, lr: float) -> list[dict]:
    """No weight decay on biases and normalisation parameters (standard for SimCLR and fine-tuning)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr}]


def make_optimizer(name: OptimizerName, groups: list[dict], lr: float, weight_decay: float) -> Optimizer:
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose adam, adamw, lars or sgd")


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.01):
    """Multiplier for LambdaLR: linear warmup, then cosine decay to `min_ratio` of the base rate."""
    # not SequentialLR(LinearLR, CosineAnnealingLR): its eta_min is one absolute floor for every group (9x too
    # high for a 0.1-scaled encoder group) and its chained updates drift by up to 5e-15 relative from this

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
