#!/bin/bash
# Issue 11: pretrain each recipe on the PhysioNet 2016 training patients (split seed 0; the validation
# and test recordings stay out of the pool), SmallCNN, 12 epochs, seed 0, 4-s windows every 4 s.
# Each run exports encoder-init.pt (same network before training), encoder-best.pt (best validation
# kNN AUROC) and encoder-last.pt under runs/heart/pretrain/physionet2016-RECIPE/version_0/checkpoints/.
# Usage, from the repository root:  experiments/heart/pretrain_physionet2016.sh [RECIPE ...]
# (default: heart_crops time_mask heart_wave; ROOT=path/to/physionet2016 to override the data root)
set -euo pipefail
ROOT=${ROOT:-../shared/data/physionet2016}
PY=${PY:-.venv/bin/python}
for name in "${@:-heart_crops time_mask heart_wave}"; do
  for recipe in $name; do
    save=runs/heart/pretrain
    loggers="[{\"class_path\": \"lungheart_cl.tracking.RunFolderCSVLogger\", \"init_args\": {\"save_dir\": \"$save\", \"name\": \"physionet2016-$recipe\"}}]"
    "$PY" -m lungheart_cl pretrain --config experiments/physionet2016/pretrain.yaml --config "experiments/schemes/$recipe.yaml" \
      --model.encoder lungheart_cl.encoders.SmallCNN --data.num_workers 2 --data.root "$ROOT" \
      --trainer.max_epochs 12 --seed_everything 0 --data.seed 0 --data.hop_seconds 4.0 \
      --trainer.default_root_dir "$save" --trainer.logger "$loggers"
  done
done
