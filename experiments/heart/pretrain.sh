#!/bin/bash
# Issue 11: pretrain heart-sound recipes, SmallCNN, 12 epochs, seed 0, split seed 0, 4-s windows every 4 s,
# log-mel 25-800 Hz without channel_norm (so the gain / filter views are not subtracted again).
#   CORPUS=physionet2016  the PhysioNet 2016 training patients alone (default)
#   CORPUS=circor2022     the CirCor 2022 training patients alone (the metadata schemes need its age / sex / sites)
#   CORPUS=pool           both, 1:1 by weight, negatives from the anchor's own source (experiments/pools/heart_pool.yaml)
# The validation and test patients of each source stay out of every pool. Each run exports encoder-init.pt
# (the same network before training), encoder-best.pt (best validation kNN AUROC) and encoder-last.pt under
# runs/heart/pretrain/CORPUS-RECIPE/version_N/checkpoints/.
# Usage, from the repository root:  CORPUS=circor2022 experiments/heart/pretrain.sh heart_crops [RECIPE ...]
# (ROOT=folder holding physionet2016/ and circor2022/ to override ../shared/data; PY= the interpreter;
#  PRINT=1 prints each run's resolved config instead of running it: tests/test_experiments.py compares it)
set -euo pipefail
CORPUS=${CORPUS:-physionet2016}
ROOT=${ROOT:-../shared/data}
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-12}
case "$CORPUS" in
  physionet2016|circor2022) corpus=(--config "experiments/$CORPUS/pretrain.yaml" --data.root "$ROOT/$CORPUS") ;;
  pool) corpus=(--config experiments/pools/heart_pool.yaml --data.sources
                "[{\"dataset\": \"physionet2016\", \"root\": \"$ROOT/physionet2016\", \"weight\": 1.0, \"normalization\": \"none\"},
                  {\"dataset\": \"circor2022\", \"root\": \"$ROOT/circor2022\", \"weight\": 1.0}]"
                --model.f_min 25.0 --model.f_max 800.0) ;;  # the heart recipes' band: the pool config, given last, would set 20 Hz
  *) echo "CORPUS must be physionet2016, circor2022 or pool, not '$CORPUS'" >&2; exit 2 ;;
esac
[ $# -gt 0 ] || set -- heart_crops time_mask heart_wave
save=runs/heart/pretrain
for recipe in "$@"; do
  loggers="[{\"class_path\": \"lungheart_cl.tracking.RunFolderCSVLogger\", \"init_args\": {\"save_dir\": \"$save\", \"name\": \"$CORPUS-$recipe\"}}]"
  scheme=(--config "experiments/schemes/$recipe.yaml")
  # the corpus config last for the pool (its loss keys and strata win), first for a single source
  if [ "$CORPUS" = pool ]; then configs=("${scheme[@]}" "${corpus[@]}"); else configs=("${corpus[@]}" "${scheme[@]}"); fi
  "$PY" -m lungheart_cl pretrain "${configs[@]}" ${PRINT:+--print_config} \
    --model.encoder lungheart_cl.encoders.SmallCNN --model.channel_norm false --data.num_workers 2 \
    --trainer.max_epochs "$EPOCHS" --seed_everything 0 --data.seed 0 --data.hop_seconds 4.0 \
    --trainer.default_root_dir "$save" --trainer.logger "$loggers"
done
