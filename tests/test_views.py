"""Batched view generators: contracts shared by every view, and each view's own guarantees."""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import pkgutil
import re
from pathlib import Path

import pytest
import torch
import yaml

from lungheart_cl import views as V
from lungheart_cl.frontend import LogMelFrontend

B, MELS, FRAMES, SAMPLES = 8, 32, 64, 4000
CUDA = torch.cuda.is_available()
SCHEME_DIR = Path(__file__).resolve().parents[1] / "experiments" / "schemes"
SCHEMES = sorted(SCHEME_DIR.glob("*.yaml"))

# factories taking p, with settings under which a selected sample always changes
SPEC_VIEWS = {
    "FrequencyMask": lambda p: V.FrequencyMask(0.2, num_masks=2, p=p),
    "TimeMask": lambda p: V.TimeMask(0.2, num_masks=2, p=p),
    "SpectrogramMask": lambda p: V.SpectrogramMask(p=p),
    "FrequencyBandCrop": lambda p: V.FrequencyBandCrop(0.5, 0.9, p=p),
    "SpecTimeStretch": lambda p: V.SpecTimeStretch(0.8, 1.25, p=p),
    "SpecPitchShift": lambda p: V.SpecPitchShift(0.1, max_stretch=0.05, p=p),
}
WAVE_VIEWS = {
    "Gain": lambda p: V.Gain(-6, 6, p=p),
    "TimeShift": lambda p: V.TimeShift(0.3, p=p),
    "TimeShiftRollover": lambda p: V.TimeShift(0.3, rollover=True, p=p),
    "AddNoiseWhite": lambda p: V.AddNoise(5, 20, color="white", p=p),
    "AddNoisePink": lambda p: V.AddNoise(5, 20, color="pink", p=p),
    "AddNoiseUniform": lambda p: V.AddNoise(5, 20, color="uniform", p=p),
    "RandomTimeCrop": lambda p: V.RandomTimeCrop(0.4, 0.8, p=p),
    "SpeedPerturb": lambda p: V.SpeedPerturb(0.8, 1.2, p=p),
    "Mixup": lambda p: V.Mixup(0.3, p=p),
    "TimeReversal": lambda p: V.TimeReversal(p=p),
    "PolarityInversion": lambda p: V.PolarityInversion(p=p),
    "RandomPassFilter": lambda p: V.RandomPassFilter(4000, 150.0, 400.0, p=p),
}
DETERMINISTIC = {"TimeReversal", "PolarityInversion"}  # only the p draw is random: per-sample = which samples
ALL_VIEWS = {**SPEC_VIEWS, **WAVE_VIEWS}


def _spec_batch(b: int = B, dtype=torch.float32, device="cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, MELS, FRAMES, generator=g) + 3.0  # no exact zeros: masked cells stand out
    start = torch.randint(0, 16, (b,), generator=g)
    end = start + torch.randint(24, FRAMES - 15, (b,), generator=g)
    return x.to(device, dtype), torch.stack([start, end.clamp(max=FRAMES)], 1).to(device)


def _wave_batch(b: int = B, n: int = SAMPLES, dtype=torch.float32, device="cpu", seed: int = 0):
    """Zero-padded cycles: random audio in [start, end), zeros elsewhere (like the cache's zero_center)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, n // 4, (b,), generator=g)
    end = (start + torch.randint(n // 3, n // 2, (b,), generator=g)).clamp(max=n)
    t = torch.arange(n)
    inside = (t >= start[:, None]) & (t < end[:, None])
    x = torch.randn(b, n, generator=g) * inside
    return x.to(device, dtype), torch.stack([start, end], 1).to(device)


def _batch_for(view: V.View, **kw):
    return _spec_batch(**kw) if view.domain == "spec" else _wave_batch(**kw)


def _runs(mask_1d: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) runs of True in a 1-D bool tensor."""
    runs, start = [], None
    for i, m in enumerate(mask_1d.tolist() + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


# ------------------------------------------------------------------------------------------
# contracts shared by every view
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_VIEWS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_shape_dtype_and_valid_preserved(name, dtype):
    view = ALL_VIEWS[name](1.0)
    x, valid = _batch_for(view, dtype=dtype)
    torch.manual_seed(0)
    y, v = view(x, valid)
    assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y.float()).all()
    assert v.shape == valid.shape and v.dtype == valid.dtype
    axis = x.shape[-1]
    assert (v[:, 0] >= 0).all() and (v[:, 1] <= axis).all() and (v[:, 0] <= v[:, 1]).all()


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_p0_is_identity(name):
    view = ALL_VIEWS[name](0.0)
    x, valid = _batch_for(view)
    y, v = view(x, valid)
    assert torch.equal(y, x) and torch.equal(v, valid)


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_p1_changes_every_sample(name):
    view = ALL_VIEWS[name](1.0)
    x, valid = _batch_for(view)
    torch.manual_seed(1)
    y, _ = view(x, valid)
    assert (y != x).flatten(1).any(1).all(), "a selected sample came out unchanged"


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_p_half_selects_some_samples_and_leaves_the_rest(name):
    view = ALL_VIEWS[name](0.5)
    x, valid = _batch_for(view, b=64)
    torch.manual_seed(2)
    y, v = view(x, valid)
    changed = (y != x).flatten(1).any(1)
    assert 10 < int(changed.sum()) < 54
    assert torch.equal(y[~changed], x[~changed])
    if name != "Mixup":  # an unchanged sample also keeps its valid range
        assert torch.equal(v[~changed], valid[~changed])


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_per_sample_randomness(name):
    view = ALL_VIEWS[name](0.5 if name in DETERMINISTIC else 1.0)
    x, valid = _batch_for(view, b=1)
    if name == "Mixup":  # needs distinct partners; identical anchors get different partner/weight
        x2, valid2 = _batch_for(view)
        x = torch.cat([x.expand(4, -1), x2[1:5]])
        valid = torch.cat([valid.expand(4, -1), valid2[1:5]])
    else:
        x, valid = x.expand(8, *x.shape[1:]).contiguous(), valid.expand(8, 2).contiguous()
    torch.manual_seed(3)
    y, _ = view(x, valid)
    if name in DETERMINISTIC:  # identical inputs: some augmented, some not
        assert len({tuple(r.tolist()) for r in y.flatten(1)}) == 2
        return
    rows = y[:4].flatten(1)
    distinct = {tuple(r.tolist()) for r in rows}
    assert len(distinct) >= 3, "identical inputs got (mostly) identical augmentations"


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_same_seed_same_output(name):
    view = ALL_VIEWS[name](0.7)
    x, valid = _batch_for(view)
    torch.manual_seed(123)
    y1, v1 = view(x, valid)
    torch.manual_seed(123)
    y2, v2 = view(x, valid)
    torch.manual_seed(124)
    y3, _ = view(x, valid)
    assert torch.equal(y1, y2) and torch.equal(v1, v2)
    assert not torch.equal(y1, y3)


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_lightning_seed_everything_repeats(name):
    lightning = pytest.importorskip("lightning")
    view = ALL_VIEWS[name](1.0)
    x, valid = _batch_for(view)
    lightning.seed_everything(7, verbose=False)
    y1, _ = view(x, valid)
    lightning.seed_everything(7, verbose=False)
    y2, _ = view(x, valid)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_autocast_bfloat16(name):
    view = ALL_VIEWS[name](1.0)
    x, valid = _batch_for(view, dtype=torch.bfloat16)
    torch.manual_seed(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, v = view(x, valid)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape and torch.isfinite(y.float()).all()
    assert v.dtype == valid.dtype


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_valid_none_means_whole_axis(name):
    view = ALL_VIEWS[name](1.0)
    x, _ = _batch_for(view)
    torch.manual_seed(5)
    y, v = view(x, None)
    assert y.shape == x.shape
    if name == "RandomTimeCrop":  # a crop must say what it kept
        assert v.shape == (B, 2)
    else:
        assert v is None


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
@pytest.mark.parametrize("name", ALL_VIEWS)
def test_runs_on_cuda_with_device_rng(name):
    view = ALL_VIEWS[name](1.0)
    x, valid = _batch_for(view, device="cuda", dtype=torch.float16)
    torch.manual_seed(6)
    y1, v1 = view(x, valid)
    torch.manual_seed(6)
    y2, v2 = view(x, valid)
    assert y1.device.type == "cuda" and y1.dtype == torch.float16
    assert torch.equal(y1, y2) and torch.equal(v1, v2)


def test_no_host_syncs_in_source():
    syncing = {"item", "nonzero", "tolist", "cpu", "numpy", "synchronize"}
    modules = [importlib.import_module(f"{V.__name__}.{info.name}") for info in pkgutil.iter_modules(V.__path__)]
    assert len(modules) >= 7, "every module of the package is read"
    for module in modules:
        tree = ast.parse(inspect.getsource(module))
        calls = {node.func.attr for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
        assert not calls & syncing, f"{module.__name__} calls {calls & syncing}"


def test_constructor_arguments_are_validated():
    bad = [lambda: V.Gain(p=1.5), lambda: V.Gain(6, -6), lambda: V.FrequencyMask(0), lambda: V.TimeMask(0.2, 0),
           lambda: V.FrequencyBandCrop(0.9, 0.5), lambda: V.Mixup(0.5), lambda: V.AddNoise(color="brown"),
           lambda: V.SpeedPerturb(0.0, 1.0), lambda: V.TimeShift(1.5), lambda: V.RandomTimeCrop(0.5, 1.2),
           lambda: V.RandomPassFilter(2000, 300, 200), lambda: V.RandomPassFilter(2000, 200, 1001),
           lambda: V.RandomPassFilter(0), lambda: V.RandomPassFilter(2000, order=0),
           lambda: V.RandomPassFilter(2000, low_pass_probability=1.5), lambda: V.PolarityInversion(p=-0.1)]
    for make in bad:
        with pytest.raises(ValueError):
            make()


# ------------------------------------------------------------------------------------------
# spectrogram views
# ------------------------------------------------------------------------------------------

def test_time_mask_inside_valid_and_within_width():
    x, valid = _spec_batch(b=64)
    torch.manual_seed(10)
    y, _ = V.TimeMask(0.25, num_masks=1)(x, valid)
    masked = (y == 0).all(-2).squeeze(1)  # (B, T): whole frame blanked
    assert torch.equal((y == 0).squeeze(1), masked[:, None, :].expand(-1, MELS, -1)), "only whole frames masked"
    for i in range(x.shape[0]):
        runs = _runs(masked[i])
        assert len(runs) == 1
        (s, e), (lo, hi) = runs[0], valid[i].tolist()
        assert lo <= s and e <= hi
        assert 1 <= e - s <= max(1, round(0.25 * (hi - lo)))


def test_time_mask_in_frames_and_several_masks():
    x, valid = _spec_batch(b=64)
    torch.manual_seed(11)
    y, _ = V.TimeMask(5, num_masks=3, mask_value=-1.5)(x, valid)
    masked = (y == -1.5).all(-2).squeeze(1)
    for i in range(x.shape[0]):
        lo, hi = valid[i].tolist()
        idx = masked[i].nonzero().flatten()
        assert idx.numel() >= 1 and idx.min() >= lo and idx.max() < hi
        assert idx.numel() <= 15 and len(_runs(masked[i])) <= 3


def test_time_mask_empty_valid_range_is_left_alone():
    x, valid = _spec_batch(b=2)
    valid[0] = torch.tensor([10, 10])
    torch.manual_seed(12)
    y, _ = V.TimeMask(0.2, num_masks=2)(x, valid)
    assert torch.equal(y[0], x[0]) and not torch.equal(y[1], x[1])


def test_frequency_mask_rows_and_width():
    x, valid = _spec_batch(b=64)
    torch.manual_seed(13)
    y, _ = V.FrequencyMask(0.2, num_masks=1)(x, valid)
    rows = (y == 0).all(-1).squeeze(1)  # (B, F)
    assert torch.equal((y == 0).squeeze(1), rows[:, :, None].expand(-1, -1, FRAMES)), "only whole rows masked"
    widths = set()
    for i in range(x.shape[0]):
        runs = _runs(rows[i])
        assert len(runs) == 1
        widths.add(runs[0][1] - runs[0][0])
    assert min(widths) >= 1 and max(widths) <= round(0.2 * MELS) and len(widths) > 1


def test_frequency_mask_in_bins():
    x, valid = _spec_batch(b=32)
    torch.manual_seed(14)
    y, _ = V.FrequencyMask(3, num_masks=1)(x, valid)
    rows = (y == 0).all(-1).squeeze(1)
    assert (rows.sum(1) >= 1).all() and (rows.sum(1) <= 3).all()


def test_spectrogram_mask_is_rows_plus_frames_inside_valid():
    x, valid = _spec_batch(b=32)
    torch.manual_seed(15)
    y, _ = V.SpectrogramMask(0.2, 0.2, 2, 2)(x, valid)
    zero = (y == 0).squeeze(1)
    rows, frames = zero.all(-1), zero.all(-2)
    assert torch.equal(zero, rows[:, :, None] | frames[:, None, :])
    assert rows.any(1).all() and frames.any(1).all()
    t = torch.arange(FRAMES)
    outside = (t < valid[:, :1]) | (t >= valid[:, 1:])
    assert not (frames & outside).any()
    assert (rows.sum(1) <= 2 * round(0.2 * MELS)).all()


@pytest.mark.parametrize("bounds", [(0.5, 0.9), (0.3, 0.6), (0.5, 0.5)])
def test_frequency_band_crop_keeps_one_block(bounds):
    lo_f, hi_f = bounds
    x, valid = _spec_batch(b=64)
    torch.manual_seed(16)
    y, v = V.FrequencyBandCrop(lo_f, hi_f)(x, valid)
    kept = (y != 0).all(-1).squeeze(1)  # rows that survive untouched
    blank = (y == 0).all(-1).squeeze(1)
    assert torch.equal(kept, ~blank), "a row is either kept whole or blanked whole"
    sizes = []
    for i in range(x.shape[0]):
        runs = _runs(kept[i])
        assert len(runs) == 1, "exactly one contiguous block"
        s, e = runs[0]
        assert lo_f - 1e-6 <= (e - s) / MELS <= hi_f + 1e-6
        assert torch.equal(y[i, :, s:e], x[i, :, s:e])
        sizes.append(e - s)
    assert torch.equal(v, valid)
    if lo_f == hi_f:
        assert set(sizes) == {MELS // 2}


def test_spec_time_stretch_rate_one_is_identity_and_rate_changes_valid():
    x, valid = _spec_batch()
    y, v = V.SpecTimeStretch(1.0, 1.0)(x, valid)
    assert torch.equal(y, x) and torch.equal(v, valid)
    torch.manual_seed(17)
    y, v = V.SpecTimeStretch(2.0, 2.0)(x, valid)
    old, new = valid[:, 1] - valid[:, 0], v[:, 1] - v[:, 0]
    assert ((new - old / 2).abs() <= 1).all()
    assert ((v[:, 0] >= valid[:, 0]) & (v[:, 1] <= valid[:, 1])).all()  # shrinks about the centre


def test_spec_pitch_shift_moves_rows_within_bound():
    ramp = torch.arange(MELS, dtype=torch.float32)[:, None].expand(MELS, FRAMES) + 100.0
    x = ramp.expand(16, 1, MELS, FRAMES).contiguous()
    torch.manual_seed(18)
    y, _ = V.SpecPitchShift(4, mask_value=0.0)(x, None)
    for i in range(16):
        live = y[i, 0, :, 0] != 0
        delta = (x[i, 0, live, 0] - y[i, 0, live, 0])  # output row r reads input row r - s: delta = s
        assert delta.std() < 1e-3 and delta.abs().max() <= 4 + 1e-4
        assert (~live).sum() <= math.ceil(abs(delta.mean().item()))  # only the vacated rows are filled


# ------------------------------------------------------------------------------------------
# waveform views
# ------------------------------------------------------------------------------------------

def test_gain_within_bounds():
    x, valid = _wave_batch(b=64)
    torch.manual_seed(20)
    y, v = V.Gain(-4, 9)(x, valid)
    ratio = y.abs().sum(1) / x.abs().sum(1)
    db = 20 * torch.log10(ratio)
    assert (db >= -4 - 1e-3).all() and (db <= 9 + 1e-3).all() and db.std() > 1
    assert torch.allclose(y, x * ratio[:, None], atol=1e-5) and torch.equal(v, valid)


@pytest.mark.parametrize("color", ["white", "pink", "uniform"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_add_noise_hits_target_snr(color, snr):
    x, valid = _wave_batch(b=6, n=40000)
    torch.manual_seed(21)
    y, _ = V.AddNoise(snr, snr, color=color)(x, valid)
    noise = y - x
    t = torch.arange(x.shape[1])
    inside = (t >= valid[:, :1]) & (t < valid[:, 1:])
    measured = 10 * torch.log10((x.square() * inside).sum(1) / (noise.square() * inside).sum(1))
    assert (measured - snr).abs().max() < 0.5
    assert (noise[~inside] == 0).all(), "padding stays silent with only_valid=True"


def test_gain_db_range_is_the_linear_half_to_double():
    x, valid = _wave_batch(b=256)
    octave_db = 20 * math.log10(2.0)  # the docstring's equivalence: -6.02..6.02 dB = x0.5..x2
    torch.manual_seed(19)
    y, _ = V.Gain(-octave_db, octave_db)(x, valid)
    factor = y.abs().sum(1) / x.abs().sum(1)
    assert factor.min() >= 0.5 - 1e-4 and factor.max() <= 2.0 + 1e-4
    assert factor.min() < 0.55 and factor.max() > 1.8  # the range is used


def test_add_noise_uniform_is_bounded_and_gaussian_is_not():
    x, valid = _wave_batch(b=8, n=40000)
    peak_over_std = {}
    for color in ("uniform", "white"):
        torch.manual_seed(29)
        y, _ = V.AddNoise(10, 10, color=color)(x, valid)
        noise = [(y - x)[i, lo:hi] for i, (lo, hi) in enumerate(valid.tolist())]  # each sample has its own scale
        peak_over_std[color] = torch.tensor([float(n.abs().max() / n.std()) for n in noise])
    assert (peak_over_std["uniform"] <= math.sqrt(3) * 1.01).all()  # U(-a, a) has std a / sqrt(3)
    assert (peak_over_std["white"] > 3.0).all()  # Gaussian tails over > 10^4 samples


def test_add_noise_snr_range_and_whole_window():
    x, valid = _wave_batch(b=32, n=20000)
    torch.manual_seed(22)
    y, _ = V.AddNoise(5, 15, only_valid=False)(x, valid)
    noise = y - x
    t = torch.arange(x.shape[1])
    inside = (t >= valid[:, :1]) & (t < valid[:, 1:])
    power = (x.square() * inside).sum(1) / inside.sum(1)
    measured = 10 * torch.log10(power / noise.square().mean(1))
    assert (measured > 5 - 0.5).all() and (measured < 15 + 0.5).all() and measured.std() > 1
    assert (noise[~inside] != 0).all()


def test_add_noise_pink_has_more_low_frequency_power():
    x = torch.zeros(4, 16000)
    x[:, 0] = 1.0  # any non-silent signal; the noise dominates
    torch.manual_seed(23)
    y, _ = V.AddNoise(-40, -40, color="pink")(x, None)
    spec = torch.fft.rfft(y, dim=-1).abs().square().mean(0)
    n = spec.shape[0]
    assert spec[1: n // 20].mean() > 10 * spec[n // 2:].mean()


def test_random_time_crop_zero_outside_and_inside_old():
    x, valid = _wave_batch(b=64)
    torch.manual_seed(24)
    y, v = V.RandomTimeCrop(0.3, 0.7)(x, valid)
    t = torch.arange(x.shape[1])
    kept = (t >= v[:, :1]) & (t < v[:, 1:])
    assert (y[~kept] == 0).all()
    assert torch.equal(y[kept], x[kept])
    assert ((v[:, 0] >= valid[:, 0]) & (v[:, 1] <= valid[:, 1])).all()
    frac = (v[:, 1] - v[:, 0]).float() / (valid[:, 1] - valid[:, 0]).float()
    assert (frac >= 0.3 - 1e-2).all() and (frac <= 0.7 + 1e-2).all()


def test_time_shift_zero_fill_moves_audio_and_valid():
    x, valid = _wave_batch(b=32)
    torch.manual_seed(25)
    y, v = V.TimeShift(0.5)(x, valid)
    n = x.shape[1]
    for i in range(x.shape[0]):
        shift = int(v[i, 1] - valid[i, 1]) if v[i, 1] < n else int(v[i, 0] - valid[i, 0])
        assert shift != 0 and abs(shift) <= 0.5 * int(valid[i, 1] - valid[i, 0])
        expect = torch.zeros(n)
        if shift >= 0:
            expect[shift:] = x[i, : n - shift]
        else:
            expect[: n + shift] = x[i, -shift:]
        assert torch.equal(y[i], expect)


def test_time_shift_rollover_rotates_inside_valid():
    x, valid = _wave_batch(b=16)
    torch.manual_seed(26)
    y, v = V.TimeShift(0.5, rollover=True)(x, valid)
    assert torch.equal(v, valid)
    for i in range(x.shape[0]):
        lo, hi = valid[i].tolist()
        a, b = x[i, lo:hi], y[i, lo:hi]
        assert torch.equal(torch.sort(a).values, torch.sort(b).values)
        assert any(torch.equal(torch.roll(a, k), b) for k in range(1, hi - lo))
        assert (y[i, :lo] == 0).all() and (y[i, hi:] == 0).all()


def test_speed_perturb_rate_one_is_identity():
    x, valid = _wave_batch()
    torch.manual_seed(27)
    y, v = V.SpeedPerturb(1.0, 1.0)(x, valid)
    assert torch.equal(y, x) and torch.equal(v, valid)


def test_speed_perturb_scales_frequency_and_length():
    n, rate = 8000, 1.25
    t = torch.arange(n, dtype=torch.float32)
    x = torch.sin(2 * math.pi * 200 / 4000 * t)[None].repeat(2, 1)  # 200 Hz at 4 kHz
    valid = torch.tensor([[0, n], [2000, 6000]])
    x[1, :2000] = 0
    x[1, 6000:] = 0
    y, v = V.SpeedPerturb(rate, rate)(x, valid)
    spectrum = torch.fft.rfft(y[0, 1000:7000]).abs()
    peak_hz = spectrum.argmax().item() * 4000 / 6000
    assert abs(peak_hz - 250) < 2
    assert abs((v[1, 1] - v[1, 0]).item() - 4000 / rate) <= 2
    assert v[0, 0] > 0 and v[0, 1] < n  # the shortened cycle no longer fills the window


def test_mixup_keeps_original_dominant():
    x, valid = _wave_batch(b=16)
    torch.manual_seed(28)
    y, v = V.Mixup(0.3)(x, valid)
    for i in range(x.shape[0]):
        r = y[i] - x[i]
        best = None
        for j in range(x.shape[0]):
            if j == i:
                continue
            d = x[j] - x[i]
            lam = float((r @ d) / (d @ d))
            err = float((r - lam * d).norm())
            if best is None or err < best[0]:
                best = (err, lam, j)
        err, lam, j = best
        assert err < 1e-3 and 0 < lam <= 0.3, "y = (1 - lam) x + lam x_j with a small lam"
        assert (y[i] - x[i]).norm() < (y[i] - x[j]).norm()
        assert v[i, 0] == min(valid[i, 0], valid[j, 0]) and v[i, 1] == max(valid[i, 1], valid[j, 1])


def test_mixup_single_sample_batch_is_unchanged():
    x, valid = _wave_batch(b=1)
    y, v = V.Mixup(0.3)(x, valid)
    assert torch.equal(y, x) and torch.equal(v, valid)


def test_time_reversal_reverses_the_valid_range_only_and_twice_is_identity():
    x, valid = _wave_batch(b=16)
    view = V.TimeReversal()
    y, v = view(x, valid)
    assert torch.equal(v, valid)
    for i in range(x.shape[0]):
        lo, hi = valid[i].tolist()
        assert torch.equal(y[i, lo:hi], torch.flip(x[i, lo:hi], [0]))
        assert torch.equal(y[i, :lo], x[i, :lo]) and torch.equal(y[i, hi:], x[i, hi:])
    assert torch.equal(view(y, v)[0], x)
    whole, none = view(x, None)
    assert none is None and torch.equal(whole, torch.flip(x, [1]))


def test_time_reversal_keeps_non_zero_padding_in_place():
    x, valid = _wave_batch(b=4)
    padded = x + 5.0 * ~((torch.arange(x.shape[1]) >= valid[:, :1]) & (torch.arange(x.shape[1]) < valid[:, 1:]))
    y, _ = V.TimeReversal()(padded, valid)
    outside = y == 5.0
    assert torch.equal(outside, padded == 5.0)


def test_polarity_inversion_negates_and_the_log_mel_front_end_cannot_see_it():
    from lungheart_cl.frontend import LogMelFrontend

    x, valid = _wave_batch()
    y, v = V.PolarityInversion()(x, valid)
    assert torch.equal(y, -x) and torch.equal(v, valid)
    frontend = LogMelFrontend(sample_rate=4000)
    assert torch.allclose(frontend(y, v), frontend(x, valid), atol=1e-5)  # why the heart schemes leave it out


def _tone_gain_db(view: V.RandomPassFilter, hz: float, dtype=torch.float32, n: int = 8000) -> float:
    """Steady-state gain in dB of a tone through the view, fitted away from the clip's edges."""
    t = torch.arange(n, dtype=torch.float64) / view.sample_rate
    tone = torch.sin(2 * math.pi * hz * t)
    y, _ = view(tone[None].to(dtype), torch.tensor([[0, n]]))
    middle = slice(n // 4, 3 * n // 4)
    basis = torch.stack([torch.sin(2 * math.pi * hz * t), torch.cos(2 * math.pi * hz * t)], 1)[middle]
    coef = torch.linalg.lstsq(basis, y[0, middle].double()[:, None]).solution
    return 20 * math.log10(float(coef.norm()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("low_pass", [True, False])
def test_pass_filter_attenuates_the_stop_band_and_passes_the_pass_band(low_pass, dtype):
    order, cutoff = 4, 200.0
    view = V.RandomPassFilter(2000, cutoff, cutoff, low_pass_probability=float(low_pass), order=order)
    octave_db = -10 * math.log10(1 + 4 ** order)  # Butterworth magnitude one octave into the stop band: -24.1 dB
    stop, passing = (2 * cutoff, cutoff / 2) if low_pass else (cutoff / 2, 2 * cutoff)
    tol = 0.3 if dtype == torch.float32 else 1.0  # half precision quantises the input and output
    assert abs(_tone_gain_db(view, stop, dtype) - octave_db) < tol
    assert abs(_tone_gain_db(view, passing, dtype) - (-10 * math.log10(1 + 4 ** -order))) < tol
    assert abs(_tone_gain_db(view, cutoff, dtype) + 10 * math.log10(2)) < tol  # -3 dB at the cut-off


def test_pass_filter_draws_type_and_cut_off_per_sample():
    n, rate, lo_hz, hi_hz = 16000, 2000, 150.0, 350.0
    x = torch.randn(1, n, generator=torch.Generator().manual_seed(0)).expand(64, n).contiguous()
    torch.manual_seed(40)
    y, _ = V.RandomPassFilter(rate, lo_hz, hi_hz)(x, None)
    gain = torch.fft.rfft(y, dim=-1).abs().square() / torch.fft.rfft(x, dim=-1).abs().square()
    hz = torch.fft.rfftfreq(n, 1 / rate)
    band = 80  # 10 Hz bands: one noise draw's bin-to-bin scatter averages out
    smooth = gain[:, : gain.shape[1] // band * band].reshape(64, -1, band).mean(-1)
    centres = hz[: gain.shape[1] // band * band].reshape(-1, band).mean(-1)
    low_pass = smooth[:, centres < 100].mean(1) > smooth[:, centres > 450].mean(1)
    assert 16 < int(low_pass.sum()) < 48
    crossing = torch.where(low_pass[:, None], smooth < 0.5, smooth > 0.5).float().argmax(1)  # first band past -3 dB
    cutoffs = centres[crossing]
    assert (cutoffs > lo_hz - 10).all() and (cutoffs < hi_hz + 10).all() and cutoffs.std() > 30


def test_pass_filter_leaves_padding_alone():
    x, valid = _wave_batch(b=8)
    padded = x + 5.0 * ~((torch.arange(x.shape[1]) >= valid[:, :1]) & (torch.arange(x.shape[1]) < valid[:, 1:]))
    torch.manual_seed(41)
    y, v = V.RandomPassFilter(4000)(padded, valid)
    assert torch.equal(y == 5.0, padded == 5.0) and torch.equal(v, valid)


def test_render_refuses_a_filter_configured_for_another_sample_rate():
    from lungheart_cl.frontend import LogMelFrontend

    pipe = V.ViewPipeline(wave=[V.RandomPassFilter(2000)])
    x, valid = _wave_batch()
    assert pipe.render(x, valid, LogMelFrontend(sample_rate=2000)).shape[0] == B
    with pytest.raises(ValueError, match="RandomPassFilter has sample_rate 2000 but the audio is 4000 Hz"):
        pipe.render(x, valid, LogMelFrontend(sample_rate=4000))


# ------------------------------------------------------------------------------------------
# pipeline, schemes, configuration
# ------------------------------------------------------------------------------------------

def test_pipeline_applies_in_order_and_checks_domains():
    pipe = V.ViewPipeline(wave=[V.RandomTimeCrop(0.5, 0.5), V.Gain(0, 0)], spec=[V.TimeMask(0.2)])
    x, valid = _wave_batch()
    torch.manual_seed(30)
    y, v = pipe.apply_wave(x, valid)
    torch.manual_seed(30)
    y2, v2 = V.RandomTimeCrop(0.5, 0.5)(x, valid)
    assert torch.equal(y, y2) and torch.equal(v, v2)
    s, sv = _spec_batch()
    torch.manual_seed(31)
    out, ov = pipe.apply_spec(s, sv)
    assert out.shape == s.shape and torch.equal(ov, sv)
    with pytest.raises(ValueError):
        V.ViewPipeline(wave=[V.TimeMask(0.2)])
    with pytest.raises(ValueError):
        V.ViewPipeline(spec=[V.Gain()])
    empty = V.ViewPipeline()
    assert empty.apply_wave(x, valid)[0] is x and empty.apply_spec(s, sv)[0] is s


def _scheme_views(path: Path) -> V.ViewPipeline:
    """The pipeline a scheme YAML configures, built by jsonargparse as the CLI builds it."""
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--views", type=V.ViewPipeline)
    config = {"views": yaml.safe_load(path.read_text())["model"]["views"]}
    return _instantiate(parser, parser.parse_object(config)).views


def _check_span_rule(view: V.View, x: torch.Tensor, valid: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> None:
    """The valid-span rule of `lungheart_cl.views.base` for one call on zero-padded input."""
    name, n = type(view).__name__, x.shape[-1]
    assert y.shape == x.shape and y.dtype == x.dtype, name
    assert v.shape == valid.shape and v.dtype == valid.dtype, name
    assert ((0 <= v[:, 0]) & (v[:, 0] <= v[:, 1]) & (v[:, 1] <= n)).all(), f"{name}: span off the axis"
    untouched = (y == x).flatten(1).all(1)
    assert torch.equal(v[untouched], valid[untouched]), f"{name}: a sample left alone changed its span"
    if view.domain == "wave":  # the audio lies inside the span the view returns
        t = torch.arange(n)
        outside = (t < v[:, :1]) | (t >= v[:, 1:])
        assert not (y != 0)[outside].any(), f"{name}: audio outside the returned span"


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda p: p.stem)
def test_every_scheme_builds_views_that_honour_the_valid_span_rule(scheme):
    pipe = _scheme_views(scheme)
    assert len(pipe.wave) + len(pipe.spec) > 0
    rates = {getattr(view, "sample_rate", None) for view in pipe.wave} - {None}
    sample_rate = rates.pop() if rates else 4000
    x, valid = _wave_batch(b=32, n=2 * sample_rate)
    torch.manual_seed(31)
    x0, valid0 = x, valid
    for view in pipe.wave:
        y, v = view(x, valid)
        _check_span_rule(view, x, valid, y, v)
        assert view(x, None)[1] is None or isinstance(view, V.RandomTimeCrop), "valid=None comes back None"
        x, valid = y, v
    frontend = LogMelFrontend(sample_rate=sample_rate)
    spec = frontend(x, valid)
    frames = frontend.valid_frames(valid, spec.shape[-1])
    spec0 = spec
    for view in pipe.spec:
        y, v = view(spec, frames)
        _check_span_rule(view, spec, frames, y, v)
        spec, frames = y, v
    assert not (torch.equal(x, x0) and torch.equal(valid, valid0) and torch.equal(spec, spec0)), "no view did anything"


def test_split_scheme_keeps_exactly_half_the_rows():
    s, sv = _spec_batch()
    torch.manual_seed(32)
    y, _ = _scheme_views(SCHEME_DIR / "split.yaml").apply_spec(s, sv)
    assert ((y != 0).all(-1).squeeze(1).sum(1) == MELS // 2).all()


def test_default_views_are_the_spectrogram_mask_scheme():
    _same_behaviour(V.spectrogram_mask(), _scheme_views(SCHEME_DIR / "spectrogram_mask.yaml"))


def _instantiate(parser, cfg):
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(cfg)


YAML = """
views:
  class_path: lungheart_cl.views.ViewPipeline
  init_args:
    wave:
      - class_path: lungheart_cl.views.RandomTimeCrop
        init_args: {min_fraction: 0.6, max_fraction: 1.0, p: 0.5}
      - class_path: lungheart_cl.views.Gain
        init_args: {min_db: -6.0, max_db: 6.0, p: 0.5}
      - class_path: lungheart_cl.views.AddNoise
        init_args: {min_snr_db: 15.0, max_snr_db: 35.0, color: pink}
    spec:
      - class_path: lungheart_cl.views.TimeMask
        init_args: {max_width: 10, num_masks: 2}
      - class_path: lungheart_cl.views.FrequencyMask
        init_args: {max_width: 0.2, num_masks: 2}
"""


def _expected_pipeline():
    return V.ViewPipeline(
        wave=[V.RandomTimeCrop(0.6, 1.0, p=0.5), V.Gain(-6.0, 6.0, p=0.5), V.AddNoise(15.0, 35.0, color="pink")],
        spec=[V.TimeMask(10, num_masks=2), V.FrequencyMask(0.2, num_masks=2)])


def _same_behaviour(a: V.ViewPipeline, b: V.ViewPipeline):
    assert repr(a) == repr(b)
    x, valid = _wave_batch()
    s, sv = _spec_batch()
    outs = []
    for pipe in (a, b):
        torch.manual_seed(33)
        outs.append(pipe.apply_wave(x, valid) + pipe.apply_spec(s, sv))
    for p, q in zip(*outs):
        assert torch.equal(p, q)


def test_jsonargparse_round_trip_subclass_type():
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--views", type=V.ViewPipeline)
    built = _instantiate(parser, parser.parse_string(YAML)).views
    assert isinstance(built, V.ViewPipeline)
    assert isinstance(built.spec[0].max_width, int) and isinstance(built.spec[1].max_width, float)
    _same_behaviour(built, _expected_pipeline())
    dumped = parser.dump(parser.parse_string(YAML))  # and back again through YAML
    again = _instantiate(parser, parser.parse_string(dumped)).views
    _same_behaviour(again, built)


def test_jsonargparse_round_trip_class_arguments():
    jsonargparse = pytest.importorskip("jsonargparse")
    yaml = pytest.importorskip("yaml")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(V.ViewPipeline, "views")
    init_args = yaml.safe_load(YAML)["views"]["init_args"]
    built = _instantiate(parser, parser.parse_string(yaml.safe_dump({"views": init_args}))).views
    _same_behaviour(built, _expected_pipeline())


def test_views_show_draws_the_pair_partner_and_alternates_views(tmp_path, monkeypatch):
    """`lungheart-cl views show` on heart_crops: the partner is another window of the recording, >= the gap away."""
    from pathlib import Path

    from lungheart_cl import view_gallery
    from lungheart_cl.cli import main

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    drawn = {}
    monkeypatch.setattr(view_gallery, "_plot", lambda panels, out, title: drawn.update(panels=panels, title=title) or out)
    assert main(["views", "show", "--config", str(experiments / "pretrain_lung_default.yaml"), "--config",
                 str(experiments / "schemes" / "heart_crops.yaml"), "--out", str(tmp_path / "v.png"), "--views", "4",
                 "--", "--data.dataset", "circor2022", "--data.task", "murmur", "--data.synthetic_patients", "12",
                 "--data.cache_dir", str(tmp_path / "c"), "--model.stats_segments", "50"]) == 0
    names = [name for name, _ in drawn["panels"]]
    assert names == ["anchor", "partner", "view 1 (anchor)", "view 2 (partner)", "view 3 (anchor)", "view 4 (partner)"]
    anchor, partner = drawn["panels"][0][1], drawn["panels"][1][1]
    assert not torch.equal(anchor, partner)
    (anchor_start, _), (partner_start, _) = re.findall(r"(\d+\.\d+)-(\d+\.\d+) s", drawn["title"])
    assert "same_recording_different_time" in drawn["title"] and abs(float(partner_start) - float(anchor_start)) >= 2.0
