"""Section 3: anatomy of a pretraining step (data wait / front end + views / model compute), per encoder,
vs a reference-style pipeline that computes log-mels and masks per sample in the DataLoader workers.

The step loop mirrors Lightning's: ``next(iterator)`` (data wait), then the batch goes to the device
and ``make_views`` runs (Lightning's ``on_after_batch_transfer``), then ``training_step``'s work
(embed, projector, loss, probe loss), backward and the optimizer step. Samples are pairs: one
sample = anchor + partner = two views.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import librosa
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lungheart_cl.bench.common import Check, Context, Stopwatch, alternate, batches_of, cpu_times, peak_rss, table
from lungheart_cl.bench.loader import epoch_pairs
from lungheart_cl.data.statistics import fit_frontend_statistics
from lungheart_cl.encoders import ResNet18Encoder, SmallCNN
from lungheart_cl.frontend import LogMelFrontend
from lungheart_cl.losses import MetadataNTXent
from lungheart_cl.pretrain import ContrastivePretraining
from lungheart_cl.views import spectrogram_mask

DATA_WAIT_TARGET = 0.05
MASK_WIDTH, NUM_MASKS = 0.2, 2  # spectrogram_mask()'s defaults, used by the reference pipeline too


@dataclass
class StepResult:
    pipeline: str  # ours | reference
    encoder: str
    device: str
    variant: str  # fp32 | bf16 | bf16+channels_last | ...
    batch_pairs: int
    steps: int
    data_ms: float  # waiting on next(iterator)
    views_ms: float  # to device + front end + views (ours); to device + stacking the views (reference)
    compute_ms: float  # embed + projector + loss + backward + optimizer step
    step_ms: float
    data_wait_fraction: float
    samples_per_s: float  # pairs per second, end to end
    cpu_ms_per_sample: float  # CPU time of the main process and the DataLoader workers per pair (timed steps)
    cores_used: float  # that CPU time over the wall time: below the core count when other work took CPUs
    first_step_s: float  # the first warm-up step (includes torch.compile's compile time when compiling)
    peak_rss_mb: float | None = None  # main process, above its level before the loop
    cuda_peak_mb: float | None = None
    cpu_user_s: float | None = None  # CPU time of the timed steps (main process + workers) in user space
    cpu_system_s: float | None = None  # ... and in the kernel (page faults, memory mapping)


@dataclass
class StepSection:
    results: list[StepResult]  # the best round of each pipeline and encoder
    rounds: list[StepResult] = field(default_factory=list)  # every round
    speedup: dict[str, float] = field(default_factory=dict)  # ours / reference samples/s per encoder
    cpu_speedup: dict[str, float] = field(default_factory=dict)  # reference / ours CPU ms per sample

    def checks(self) -> list[Check]:
        out = []
        for r in self.results:
            if r.pipeline == "ours":
                out.append(Check(f"data wait fraction, {r.encoder} ({r.device})", r.data_wait_fraction,
                                 DATA_WAIT_TARGET, "of step time", False))
        out += [Check(f"ours/reference samples/s, {name}", ratio, 1.0, "x", True)
                for name, ratio in self.speedup.items()]
        return out


# ----------------------------------------------------------------------------------- our pipeline
def make_model(encoder: str, dm, channels_last: bool = False) -> ContrastivePretraining:
    """The default lung pretraining model (experiments/pretrain_lung_default.yaml) with fitted front-end stats."""
    torch.manual_seed(0)
    model = ContrastivePretraining(encoder=SmallCNN() if encoder == "SmallCNN" else ResNet18Encoder(),
                                   views=spectrogram_mask(MASK_WIDTH, NUM_MASKS),
                                   loss=MetadataNTXent(0.1, negative_keys=["age_group", "sex"]),
                                   sample_rate=dm.sample_rate, num_classes=dm.num_classes,
                                   channels_last=channels_last)
    fit_frontend_statistics(model.frontend, dm)  # computed once per cache, then read from disk
    return model.train()


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {k: to_device(v, device) if isinstance(v, dict) else v.to(device, non_blocking=True)
            for k, v in batch.items()}


def train_step(model: ContrastivePretraining, optimizer: torch.optim.Optimizer, batch: dict, spec: torch.Tensor,
               amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """`ContrastivePretraining.training_step` without logging, then backward and the optimizer step."""
    with torch.autocast(spec.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        features = model.embed(spec)
        z = model.projector(features)
        out = model.criterion(z, model.view_keys(batch))
        loss = out.loss + model._probe_loss(features[: len(batch["index"])].detach(), batch["label"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def run_steps(loader: DataLoader, model: ContrastivePretraining, to_spec: Callable[[dict], torch.Tensor], *,
              pipeline: str, encoder: str, variant: str = "fp32", warmup: int, steps: int, device: torch.device,
              amp_dtype: torch.dtype | None = None, measure_rss: bool = False,
              max_timed_s: float = math.inf) -> StepResult:
    """Time `warmup` + `steps` training steps, fewer once the timed ones took `max_timed_s` (a busy
    machine's budget); figures are means over the timed steps.

    `measure_rss` records the peak RSS increase of this process over the loop: meaningful in a fresh
    process only (section 5 runs one per encoder), since memory freed earlier is reused without showing.
    """
    model.to(device)
    if model.hparams.channels_last:
        model.encoder.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    parts, first_step_s = np.zeros(3), 0.0
    with peak_rss() as rss, batches_of(loader) as stream:
        for i in range(warmup + steps):
            if i == warmup:
                cpu_start = cpu_times()
            watch = Stopwatch()
            batch = next(stream)
            data_s = watch.lap()
            batch = to_device(batch, device)
            spec = to_spec(batch)
            sync()
            views_s = watch.lap()
            loss = train_step(model, optimizer, batch, spec, amp_dtype)
            sync()
            compute_s = watch.lap()
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"non-finite loss at step {i}")
            if i == 0:
                first_step_s = data_s + views_s + compute_s
            if i >= warmup:
                parts += (data_s, views_s, compute_s)
                if parts.sum() > max_timed_s:
                    break
        cpu_user_s, cpu_system_s = (end - start for end, start in zip(cpu_times(), cpu_start))
    cpu_s = cpu_user_s + cpu_system_s
    steps = i + 1 - warmup
    data_ms, views_ms, compute_ms = parts / steps * 1000
    step_ms = data_ms + views_ms + compute_ms
    batch_pairs = len(batch["index"])
    cuda_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return StepResult(pipeline, encoder, device.type, variant, batch_pairs, steps, data_ms, views_ms, compute_ms,
                      step_ms, data_ms / step_ms, batch_pairs / step_ms * 1000, cpu_s / (steps * batch_pairs) * 1000,
                      cpu_s / (steps * step_ms / 1000), first_step_s,
                      rss["mb"] if measure_rss else None, cuda_mb, cpu_user_s, cpu_system_s)


def bench_ours(dm, encoder: str, *, warmup: int, steps: int, device: torch.device, variant: str = "fp32",
               amp_dtype: torch.dtype | None = None, channels_last: bool = False, compile: bool = False,
               measure_rss: bool = False) -> StepResult:
    model = make_model(encoder, dm, channels_last)
    if compile:
        model.encoder = torch.compile(model.encoder)
    return run_steps(dm.train_dataloader(), model, model.make_views, pipeline="ours", encoder=encoder,
                     variant=variant, warmup=warmup, steps=steps, device=device, amp_dtype=amp_dtype,
                     measure_rss=measure_rss)


# ----------------------------------------------------------------------------- reference pipeline
def spec_augment(spec: np.ndarray, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment-style masks on one (n_mels, T) spectrogram, like `SpectrogramMask` (2+2 masks, <= 20%)."""
    spec = spec.copy()
    n_mels = spec.shape[0]
    freq_cap = max(1, round(n_mels * MASK_WIDTH))
    for _ in range(NUM_MASKS):
        width = int(rng.integers(1, freq_cap + 1))
        start = int(rng.integers(0, n_mels - width + 1))
        spec[start: start + width] = 0.0
    span = hi - lo
    time_cap = min(max(1, round(span * MASK_WIDTH)), span)
    for _ in range(NUM_MASKS if time_cap > 0 else 0):
        width = int(rng.integers(1, time_cap + 1))
        start = lo + int(rng.integers(0, span - width + 1))
        spec[:, start: start + width] = 0.0
    return spec


class ReferenceDataset(Dataset):
    """Per sample, in the worker: read the raw anchor and partner segments, log-mel each with librosa
    (our front end's n_fft / window / hop / mels / band and its normalisation), mask each view."""

    def __init__(self, dm, pairs: np.ndarray, frontend: LogMelFrontend):
        self.path, self.shape, self.pairs = dm.store.path, dm.store.shape, pairs
        self.valid = np.stack([dm.manifest["valid_start"], dm.manifest["valid_end"]], 1)
        self.codes, self.labels = dm.codes, dm.labels
        rate = frontend.sample_rate
        self.mel = dict(sr=rate, n_fft=frontend.n_fft, win_length=frontend.win_length,
                        hop_length=frontend.hop_length, n_mels=frontend.n_mels, fmin=frontend.config["f_min"],
                        fmax=frontend.config["f_max"] or rate / 2, power=2.0, center=True, pad_mode="reflect",
                        norm="slaney", htk=False)
        self.mean, self.std = frontend.mel_mean.cpu().numpy(), frontend.mel_std.cpu().numpy()
        self.frames = frontend.num_frames(self.shape[1])
        self.array, self.rng = None, None

    def __len__(self) -> int:
        return len(self.pairs)

    def view(self, row: int) -> torch.Tensor:
        if self.array is None:  # opened in the worker, with a per-worker random stream
            self.array = np.memmap(self.path, dtype=np.float16, mode="r", shape=self.shape)
            self.rng = np.random.default_rng(torch.initial_seed() % 2**32)
        wave = self.array[row].astype(np.float32)
        spec = (np.log(librosa.feature.melspectrogram(y=wave, **self.mel) + 1e-6) - self.mean) / self.std
        hop = self.mel["hop_length"]
        lo = min(int(self.valid[row, 0]) // hop, self.frames)
        hi = max(min(-(-int(self.valid[row, 1]) // hop), self.frames), lo)
        return torch.from_numpy(spec_augment(spec, lo, hi, self.rng)[None].astype(np.float32))

    def __getitem__(self, item: int) -> dict:
        anchor, partner = (int(v) for v in self.pairs[item])
        return {"view": self.view(anchor), "partner_view": self.view(partner), "index": anchor,
                "meta": {k: int(v[anchor]) for k, v in self.codes.items()},
                "partner_meta": {k: int(v[partner]) for k, v in self.codes.items()},
                "label": int(self.labels[anchor])}


def bench_reference(dm, encoder: str, *, warmup: int, steps: int, workers: int,
                    measure_rss: bool = False) -> StepResult:
    model = make_model(encoder, dm)
    dataset = ReferenceDataset(dm, epoch_pairs(dm), model.frontend)
    loader = DataLoader(dataset, batch_size=dm.batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True)
    return run_steps(loader, model, lambda b: torch.cat([b["view"], b["partner_view"]]), pipeline="reference",
                     encoder=encoder, warmup=warmup, steps=steps, device=torch.device("cpu"),
                     measure_rss=measure_rss)


def print_steps(title: str, results: list[StepResult]) -> None:
    table(title, ["pipeline", "encoder", "variant", "steps", "data ms", "views ms", "compute ms", "step ms",
                  "data wait", "samples/s", "CPU ms/sample", "cores used"],
          [[r.pipeline, r.encoder, r.variant, r.steps, r.data_ms, r.views_ms, r.compute_ms, r.step_ms,
            f"{r.data_wait_fraction:.1%}", r.samples_per_s, r.cpu_ms_per_sample, r.cores_used] for r in results])


def run(ctx: Context) -> StepSection:
    sizes = ctx.sizes
    dm = ctx.datamodule(sizes.step_batch)
    section = StepSection([])
    for encoder in ctx.sizes.encoders:
        rounds = alternate(
            ctx,
            ours=partial(bench_ours, dm, encoder, warmup=sizes.step_warmup, steps=sizes.step_steps[encoder],
                         device=torch.device("cpu")),
            reference=partial(bench_reference, dm, encoder, warmup=sizes.step_warmup,
                              steps=sizes.reference_steps[encoder], workers=sizes.workers))
        best = {name: max(results, key=lambda r: r.samples_per_s) for name, results in rounds.items()}
        section.results += [best["ours"], best["reference"]]
        section.rounds += rounds["ours"] + rounds["reference"]
        section.speedup[encoder] = best["ours"].samples_per_s / best["reference"].samples_per_s
        cpu = {name: min(r.cpu_ms_per_sample for r in results) for name, results in rounds.items()}
        section.cpu_speedup[encoder] = cpu["reference"] / cpu["ours"]
    print_steps(f"[3] pretraining step on CPU ({torch.get_num_threads()} threads): batch {sizes.step_batch} pairs "
                f"({2 * sizes.step_batch} views), {sizes.workers} workers, {sizes.step_warmup} warm-up steps; "
                f"samples = pairs; best of up to {sizes.rounds} alternating rounds", section.results)
    print("  reference = log-mel (librosa) + SpecAugment masks per sample in the DataLoader workers, default collate")
    for encoder, ratio in section.speedup.items():
        samples = {p: ", ".join(f"{r.samples_per_s:.1f}" for r in section.rounds if r.encoder == encoder
                                and r.pipeline == p) for p in ("ours", "reference")}
        print(f"  {encoder}: ratio ours/reference samples/s {ratio:.2f}x (rounds: ours {samples['ours']}; "
              f"reference {samples['reference']}); CPU time per sample, reference/ours: "
              f"{section.cpu_speedup[encoder]:.2f}x")
    return section
