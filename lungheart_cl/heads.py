"""The classifier's head: one builder, used by `Classifier` and by `predict`, from the shape stored in the checkpoint.

A head is [normalisation, Dropout, Linear] or [normalisation, Dropout, Linear, ReLU, Linear]. The
normalisation standardises the features, so one learning rate suits any encoder's feature scale:
fixed statistics of the labelled set for a frozen encoder (`Standardize`), batch statistics while it
trains (an affine-free BatchNorm1d).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn


class Standardize(nn.Module):
    """(x - mean) / std with statistics fitted once (`fit`), stored as buffers."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, features: Tensor) -> None:
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class HeadConfig:
    """A head's shape: ``frozen`` = `Standardize` (the encoder never trains), else BatchNorm1d;
    ``hidden_dim`` 0 = one Linear, > 0 = Linear-ReLU-Linear."""

    embedding_dim: int
    num_classes: int
    hidden_dim: int = 0
    dropout: float = 0.0
    frozen: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HeadConfig:
        return cls(**values)


def build_head(config: HeadConfig) -> nn.Sequential:
    """The head `config` describes, freshly initialised."""
    dim = config.embedding_dim
    norm: nn.Module = Standardize(dim) if config.frozen else nn.BatchNorm1d(dim, affine=False)
    layers: list[nn.Module] = [norm, nn.Dropout(config.dropout)]
    if config.hidden_dim:
        layers += [nn.Linear(dim, config.hidden_dim), nn.ReLU(inplace=True),
                   nn.Linear(config.hidden_dim, config.num_classes)]
    else:
        layers.append(nn.Linear(dim, config.num_classes))
    return nn.Sequential(*layers)
