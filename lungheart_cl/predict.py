"""`lungheart-cl predict`: class probabilities for new recordings from a fine-tuned classifier checkpoint.

Audio is prepared by the training code path itself (`load_audio`, per-recording normalisation,
`plan_segments`, `cut_segment`, float16 storage), with the `cache_config` the checkpoint records, so
a recording is seen exactly as the training data was. A file with annotations beside it, as the
training dataset defines them (`DatasetSpec.annotations`; ICBHI: a same-stem ``.txt`` of cycles),
gives one segment per annotated event; any other file gives fixed windows. Each file
yields one row per segment plus a row ``segment = "all"`` averaging its segments (the way
recording-level tasks are scored). A file that cannot be read or holds nothing to score (shorter
than one window, a too-short cycle, silence: `lungheart_cl.data.quality`) is refused: one row
with status ``refused``, its reason and no probabilities. A clipped file is scored with status
``flagged`` and the reason on every row. The checkpoint is rebuilt by `classifier_checkpoint`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import numpy as np
import torch

from lungheart_cl.classifier_checkpoint import ClassifierNet, LoadedClassifier, load_classifier
from lungheart_cl.data.audio import load_audio, probe_audio
from lungheart_cl.data.cache import CacheConfig, SegmentSpec, decode_segments, plan_segments
from lungheart_cl.data.quality import check_length, check_levels
from lungheart_cl.data.records import UNKNOWN, DataError, Recording
from lungheart_cl.data.spec import AnnotationFinder

ALL_SEGMENTS = "all"
OK, FLAGGED, REFUSED = "ok", "flagged", "refused"  # a row's status


@dataclass
class PreparedFile:
    """One file's audio cut as the training cache cuts it, and the warnings it is scored with."""

    segments: list[SegmentSpec]
    audio: np.ndarray  # (segments, samples) float32
    valid: np.ndarray  # (segments, 2): each segment's [start, end) of real (unpadded) audio
    warnings: tuple[str, ...] = ()


@dataclass
class FilePrediction:
    """Probabilities of one file's segments (rows follow `segments`)."""

    path: Path
    segments: list[SegmentSpec]
    probs: np.ndarray  # (segments, classes)
    warnings: tuple[str, ...] = ()


# ----------------------------------------------------------------------- audio
def recording_for(path: Path, annotations: AnnotationFinder | None = None) -> Recording:
    """The file as a `Recording`: header facts, plus the events `annotations` finds beside it."""
    info = probe_audio(path)
    events = annotations(path, info.num_frames / info.sample_rate) if annotations is not None else ()
    return Recording(UNKNOWN, path.stem, UNKNOWN, path, info.sample_rate, info.num_frames, info.num_channels,
                     events=events)


def prepare_segments(path: Path, config: CacheConfig, annotations: AnnotationFinder | None = None) -> PreparedFile:
    """The file checked (`lungheart_cl.data.quality`: a DataError refuses it) and cut exactly as the training cache is."""
    recording = recording_for(path, annotations)
    check_length(recording, config)
    warnings = check_levels(recording, load_audio(path, recording.sample_rate))  # levels at the file's own rate
    specs = plan_segments(recording, config)
    segments, valid = decode_segments(recording, specs, config)  # exactly the training cache's preparation
    return PreparedFile(specs, segments.astype(np.float32), np.asarray(valid, dtype=np.int64).reshape(-1, 2), warnings)


# ------------------------------------------------------------------- inference
def resolve_device(name: str) -> torch.device:
    """cpu | cuda | auto (cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


@torch.no_grad()
def predict_segments(net: ClassifierNet, segments: np.ndarray, valid: np.ndarray, batch_size: int,
                     device: torch.device) -> np.ndarray:
    """(segments, classes) probabilities, `batch_size` segments at a time."""
    net.eval()  # batch norm on running statistics, dropout off
    parts = [net(torch.from_numpy(segments[i: i + batch_size]).to(device),
                 torch.from_numpy(valid[i: i + batch_size]).to(device)).cpu()
             for i in range(0, len(segments), batch_size)]
    return torch.cat(parts).numpy().astype(np.float64)  # file averages in double precision


def predict_files(model: LoadedClassifier, paths: list[Path], batch_size: int = 64,
                  device: torch.device = torch.device("cpu"),
                  on_error: Callable[[DataError], None] | None = None,
                  on_warning: Callable[[Path, str], None] | None = None) -> tuple[list[FilePrediction], list[DataError]]:
    """Predict every file; a refused one becomes a DataError (passed to `on_error` as it happens) and the
    rest go on; a flagged one's warnings go to `on_warning` as they arise."""
    model.net.to(device)
    predictions, errors = [], []
    for path in map(Path, paths):
        try:
            prepared = prepare_segments(path, model.cache_config, model.annotations)
        except DataError as error:
            if error.path != path:  # e.g. its annotation: the refused file is the one asked for
                error = DataError(path, str(error))
            errors.append(error)
            if on_error is not None:
                on_error(error)
            continue
        for warning in prepared.warnings if on_warning is not None else ():
            on_warning(path, warning)
        probs = predict_segments(model.net, prepared.audio, prepared.valid, batch_size, device)
        predictions.append(FilePrediction(path, prepared.segments, probs, prepared.warnings))
    return predictions, errors


# ---------------------------------------------------------------------- output
def prediction_rows(prediction: FilePrediction, classes: tuple[str, ...]) -> list[dict]:
    """One row per segment, then the file's row: segment "all", probabilities averaged over its segments.
    Every row of a flagged file carries status "flagged" and the warnings."""
    status, reason = (FLAGGED, "; ".join(prediction.warnings)) if prediction.warnings else (OK, "")

    def row(segment, start_s: float, end_s: float, probs: np.ndarray) -> dict:
        return {"file": str(prediction.path), "segment": segment, "start_s": round(start_s, 6),
                "end_s": round(end_s, 6), **{f"p_{name}": float(p) for name, p in zip(classes, probs)},
                "status": status, "reason": reason}

    rows = [row(i, spec.start_s, spec.end_s, probs)
            for i, (spec, probs) in enumerate(zip(prediction.segments, prediction.probs))]
    rows.append(row(ALL_SEGMENTS, min(s.start_s for s in prediction.segments),
                    max(s.end_s for s in prediction.segments), prediction.probs.mean(0)))
    return rows


def refused_row(error: DataError, classes: tuple[str, ...]) -> dict:
    """A refused file's one row: the reason, no probabilities (None: empty in CSV, null in JSON)."""
    return {"file": str(error.path), "segment": ALL_SEGMENTS, "start_s": None, "end_s": None,
            **{f"p_{name}": None for name in classes}, "status": REFUSED, "reason": error.message}


def write_csv(rows: list[dict], classes: tuple[str, ...], stream: TextIO) -> None:
    writer = csv.DictWriter(stream, ["file", "segment", "start_s", "end_s", *(f"p_{c}" for c in classes),
                                     "status", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def write_json(rows: list[dict], model: LoadedClassifier, errors: list[DataError], stream: TextIO) -> None:
    json.dump({"checkpoint": str(model.path), "task": model.task, "classes": list(model.classes),
               "rows": rows, "errors": [{"file": str(e.path), "error": e.message} for e in errors]},
              stream, indent=2)
    stream.write("\n")


# ------------------------------------------------------------------------- CLI
def add_predict_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `predict` subcommand's arguments."""
    parser = subparsers.add_parser("predict", help="class probabilities for wav files from a finetune checkpoint")
    parser.add_argument("--checkpoint", required=True, type=Path, help="the .ckpt written by `lungheart-cl finetune`")
    parser.add_argument("--format", choices=["csv", "json"], default="csv", help="output format (default: csv)")
    parser.add_argument("--output", type=Path, default=None, help="file to write (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=64, help="segments per forward pass (default: 64)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                        help="auto = cuda when available (default)")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE.wav",
                        help="recordings (wav, flac, mp3, ogg); annotations beside one, as the training dataset "
                             "defines them (ICBHI: a same-stem .txt of cycles), give one segment per event")
    return parser


def run_predict(args: argparse.Namespace) -> int:
    """0: every file predicted (flagged ones included); 1: some files refused (each named with its reason on
    stderr and in the output); 2: unusable checkpoint/device."""
    if args.batch_size < 1:
        print(f"predict: --batch-size must be positive, not {args.batch_size}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        model = load_classifier(args.checkpoint)
    except ValueError as error:  # CheckpointError included
        print(f"predict: {error}", file=sys.stderr)
        return 2
    predictions, errors = predict_files(model, args.files, args.batch_size, device,
                                        on_error=lambda e: print(f"predict: refused {e}", file=sys.stderr),
                                        on_warning=lambda path, w: print(f"predict: flagged {path}: {w}", file=sys.stderr))
    rows = [row for prediction in predictions for row in prediction_rows(prediction, model.classes)]
    rows += [refused_row(error, model.classes) for error in errors]
    order = {str(path): i for i, path in reversed(list(enumerate(args.files)))}
    rows.sort(key=lambda row: order[row["file"]])  # the files' order as given (stable: segments stay in order)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", newline="") if args.output is not None else nullcontext(sys.stdout) as stream:
        if args.format == "json":
            write_json(rows, model, errors, stream)
        else:
            write_csv(rows, model.classes, stream)
    if errors:
        print(f"predict: {len(errors)} of {len(args.files)} file(s) refused", file=sys.stderr)
        return 1
    return 0
