"""A fine-tuned classifier checkpoint rebuilt for inference: front end, encoder and the head its
``head_config`` describes (`heads.build_head`, as `Classifier` built it), with what `predict` needs to
prepare new audio as the training data was prepared. Loaded as tensors and plain data only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from torch import Tensor, nn

from lungheart_cl.checkpointing import EXPORT_FORMAT, CheckpointError, read_checkpoint, substate
from lungheart_cl.data.cache import CacheConfig
from lungheart_cl.data.sources import get_spec
from lungheart_cl.data.spec import AnnotationFinder
from lungheart_cl.encoders import Encoder, build_encoder
from lungheart_cl.errors import ConfigError
from lungheart_cl.frontend import LogMelFrontend
from lungheart_cl.heads import HeadConfig, build_head


class ClassifierNet(nn.Module):
    """The inference path of `Classifier`: waveform batch -> front end -> encoder -> head -> probabilities."""

    def __init__(self, frontend: LogMelFrontend, encoder: Encoder, head: nn.Sequential):
        super().__init__()
        self.frontend, self.encoder, self.head = frontend, encoder, head

    def forward(self, wave: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.head(self.encoder(self.frontend(wave, valid))).float().softmax(-1)


@dataclass
class LoadedClassifier:
    """A classifier checkpoint rebuilt for inference, with what it needs to prepare new audio."""

    path: Path
    net: ClassifierNet
    task: str | None
    classes: tuple[str, ...]
    cache_config: CacheConfig
    annotations: AnnotationFinder | None = None  # the training dataset's: events annotated beside a file


def load_head(meta: Mapping, state: Mapping[str, Tensor], embedding_dim: int, num_classes: int) -> nn.Sequential:
    """`Classifier`'s head as its checkpoint describes it (``head_config``, `heads.build_head`), with its weights.

    `state` holds the head's own keys (``0.mean``, ``2.weight``, ...). The stored shape must fit the
    encoder's features and the checkpoint's classes, and the weights must fit the shape exactly.
    """
    config = HeadConfig.from_dict(meta["head_config"])
    if (config.embedding_dim, config.num_classes) != (embedding_dim, num_classes):
        raise ValueError(f"head_config maps {config.embedding_dim} features to {config.num_classes} classes, but the "
                         f"encoder gives {embedding_dim} features and the checkpoint names {num_classes} classes")
    head = build_head(config)
    try:
        head.load_state_dict(dict(state))
    except RuntimeError as error:  # shape or key mismatch
        raise ValueError(f"head weights do not fit the stored head {config}: {' '.join(str(error).split())}") from error
    return head


def _read_classifier_payload(path: Path) -> dict:
    """The checkpoint dict, or a CheckpointError saying what the file is instead."""
    payload = read_checkpoint(path)
    if payload.get("format") == EXPORT_FORMAT:
        raise CheckpointError(f"{path}: an exported pretrained encoder, not a classifier; predict needs the .ckpt "
                              f"written by `lungheart-cl finetune`")
    if "lungheart_cl" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a lungheart-cl classifier checkpoint (keys: {sorted(payload)[:8]})")
    kind = payload["lungheart_cl"].get("kind")
    if kind != "classifier":
        raise CheckpointError(f"{path}: a {kind} checkpoint, not a classifier; predict needs the .ckpt written by "
                              f"`lungheart-cl finetune`")
    missing = [k for k in ("encoder_config", "frontend_config", "head_config", "classes", "cache_config")
               if payload["lungheart_cl"].get(k) is None]
    if missing:
        raise CheckpointError(f"{path}: classifier checkpoint lacks {', '.join(missing)} (written by an older version "
                              f"or without a data module); re-run `lungheart-cl finetune` to get a usable one")
    return payload


def _cache_config(path: Path, meta: dict) -> CacheConfig:
    try:
        config = CacheConfig(**meta["cache_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: unusable cache_config {meta['cache_config']} ({error})") from error
    if config.sample_rate != meta["frontend_config"]["sample_rate"]:
        raise CheckpointError(f"{path}: cache_config sample rate {config.sample_rate} Hz differs from the front "
                              f"end's {meta['frontend_config']['sample_rate']} Hz")
    return config


def _annotations(path: Path, dataset: str | None) -> AnnotationFinder | None:
    """How the dataset the classifier was trained on annotates a file (None: it does not)."""
    if dataset is None:
        return None
    try:
        return get_spec(dataset).annotations
    except ConfigError as error:  # e.g. a user's dataset module that is not importable here
        raise CheckpointError(f"{path}: trained on dataset {dataset!r}, which is needed to read annotations "
                              f"beside the files ({error})") from error


def load_classifier(path: Path | str) -> LoadedClassifier:
    """Rebuild front end, encoder and head of a `lungheart-cl finetune` checkpoint (on the CPU)."""
    path = Path(path)
    payload = _read_classifier_payload(path)
    meta, state = payload["lungheart_cl"], payload["state_dict"]
    classes = tuple(meta["classes"])
    config = _cache_config(path, meta)
    annotations = _annotations(path, meta.get("dataset"))
    try:
        encoder = build_encoder(meta["encoder_config"])
        encoder.load_state_dict(substate(state, "encoder."))
        frontend = LogMelFrontend(**meta["frontend_config"])
        frontend.load_state_dict(substate(state, "frontend."))
        head = load_head(meta, substate(state, "head."), encoder.embedding_dim, len(classes))
    except (RuntimeError, ValueError, TypeError, ImportError, AttributeError) as error:
        raise CheckpointError(f"{path}: weights do not fit the network the checkpoint describes ({error})") from error
    return LoadedClassifier(path, ClassifierNet(frontend, encoder, head), meta.get("task"), classes, config,
                            annotations)
