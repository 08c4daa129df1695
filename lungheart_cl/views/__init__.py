"""Batched, on-device view generators for contrastive pretraining on lung and heart sounds.

The original study (Soni et al. 2022, "Contrastive learning of heart and lung sounds for
label-efficient diagnosis") built its two SimCLR views per sample on the CPU in DataLoader
workers. Here every view runs on the whole batch on the accelerator, with per-sample randomness
and no Python loop over the batch. What every view promises (shapes, dtypes, the valid-span rule,
randomness) is stated once in `lungheart_cl.views.base`.

* `masks` -- spectrogram masks (SpecAugment, the study's "split");
* `spec_warps` -- tempo and pitch changes on the spectrogram;
* `wave` -- waveform gain, shift, crop, speed change and mixup; `noise` -- noise at an SNR;
* `heart` -- the Listen2YourHeart views of the heart schemes (reversal, inversion, pass filter);
* `pipeline` -- `ViewPipeline`: waveform views, the front end, spectrogram views.

The schemes are the YAMLs in ``experiments/schemes/``. For the study's, its public code
(stanfordmlgroup/selfsupervised-lungandheartsounds, utils/augment.py, utils/spec_augment.py,
models/data.py) did, per sample on the CPU:

* "spec": SpecAugment, one time warp (W=60), one frequency mask of U[0, 27) mel rows and one time
  mask of U[0, 100) frames, filled with 0, anywhere on the axis;
* "split": keep rows [s, s + n_mels // 2) with s ~ U{0..n_mels // 2}, exactly half the rows (the
  array is cropped; `FrequencyBandCrop` fills the rest with mask_value, so shapes stay fixed);
* "spec+split": spec, then split;
* "raw": audiomentations Gain(p=.5, +-12 dB), PitchShift(p=.5), Shift(rollover=False, p=.5, +-50%),
  TimeStretch(p=.5), AddGaussianNoise(p=1, amplitude 0.001..0.015).

The YAMLs follow this project's reading of the paper (2 masks per axis, up to ~20% of the axis,
time masks kept in the valid frames); the code's 27 rows is ~21% of a 128-row mel spectrogram, but
its mel size was not confirmed from the files read.

Every class is importable from here, so configs name ``lungheart_cl.views.<Name>``::

    views:
      class_path: lungheart_cl.views.ViewPipeline
      init_args:
        wave:
          - class_path: lungheart_cl.views.Gain
            init_args: {min_db: -6.0, max_db: 6.0, p: 0.5}
        spec:
          - class_path: lungheart_cl.views.SpectrogramMask
            init_args: {freq_max_width: 0.2, time_max_width: 0.2}
"""

from lungheart_cl.views.base import View
from lungheart_cl.views.heart import PolarityInversion, RandomPassFilter, TimeReversal
from lungheart_cl.views.masks import FrequencyBandCrop, FrequencyMask, SpectrogramMask, TimeMask
from lungheart_cl.views.noise import AddNoise
from lungheart_cl.views.pipeline import ViewPipeline, spectrogram_mask
from lungheart_cl.views.spec_warps import SpecPitchShift, SpecTimeStretch
from lungheart_cl.views.wave import Gain, Mixup, RandomTimeCrop, SpeedPerturb, TimeShift

__all__ = [
    "View", "FrequencyMask", "TimeMask", "SpectrogramMask", "FrequencyBandCrop", "SpecTimeStretch",
    "SpecPitchShift", "Gain", "TimeShift", "AddNoise", "RandomTimeCrop", "SpeedPerturb", "Mixup", "TimeReversal",
    "PolarityInversion", "RandomPassFilter", "ViewPipeline", "spectrogram_mask",
]
