"""Audio encoders (spectrogram -> embedding) and the projection head.

Every encoder subclasses `Encoder`, which records its class path and constructor arguments, so a
checkpoint or exported encoder can rebuild exactly the same network and a mismatch is caught.
Defining a subclass registers it; a checkpoint's class path is looked up there, never imported.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import Tensor, nn


from lungheart_cl.errors import UserError

# class path -> Encoder subclass, filled as subclasses are defined (ours on import, a user's when the
# configuration that names it is parsed)
_DEFINED: dict[str, type["Encoder"]] = {}


class UnknownEncoderError(UserError, ImportError):
    """A saved encoder's class path names no Encoder defined in this process."""


class Encoder(nn.Module):
    """Base class: maps (B, 1, n_mels, frames) to (B, embedding_dim)."""

    embedding_dim: int

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        _DEFINED[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def __init__(self, **init_args: Any):
        super().__init__()
        self.init_args = dict(init_args)

    @property
    def config(self) -> dict:
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(self.init_args)}


def build_encoder(config: dict) -> Encoder:
    """Rebuild an encoder from its `config` (class_path + init_args) saved in a checkpoint.

    Only an `Encoder` subclass already defined is built: importing the module a file names would run
    that module's code, and a checkpoint must never execute code when loaded.
    """
    class_path = str(config["class_path"])
    cls = _DEFINED.get(class_path)
    if cls is None:
        raise UnknownEncoderError(
            f"encoder {class_path!r} is not a defined lungheart_cl Encoder; if it is your own, name it in the "
            f"configuration (model.encoder.class_path) or import its module before loading the checkpoint")
    return cls(**config.get("init_args", {}))


class ResNet18Encoder(Encoder):
    """The study's encoder: torchvision ResNet-18 with a one-channel stem, no pretrained weights, 512-d."""

    def __init__(self, zero_init_residual: bool = True):
        super().__init__(zero_init_residual=zero_init_residual)
        net = torchvision.models.resnet18(weights=None, zero_init_residual=zero_init_residual)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()
        self.net = net
        self.embedding_dim = 512

    def forward(self, spec: Tensor) -> Tensor:
        return self.net(spec)


class SmallCNN(Encoder):
    """A fast CNN for CPU runs: conv-BN-ReLU-pool blocks, then mean+max pooling over time and frequency."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.0):
        super().__init__(channels=tuple(channels), dropout=dropout)
        layers: list[nn.Module] = []
        previous = 1
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.embedding_dim = 2 * previous

    def forward(self, spec: Tensor) -> Tensor:
        maps = self.features(spec)
        pooled = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)
        return self.dropout(pooled)


class Projector(nn.Module):
    """SimCLR projection head (the study: 512 -> 512 -> 256); the loss sees its output, probes do not."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)
