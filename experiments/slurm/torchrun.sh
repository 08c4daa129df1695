#!/bin/bash
# Multi-node pretraining with torchrun (run this on every node; Lightning picks up the torchelastic
# environment, so each process is one rank). Example: 2 nodes x 4 GPUs.
#   NODE_RANK=0 MASTER=host0 ./experiments/slurm/torchrun.sh experiments/icbhi/pretrain.yaml experiments/schemes/time_mask.yaml
set -euo pipefail
BASE=$1; SCHEME=$2
NNODES=${NNODES:-2}; GPUS=${GPUS:-4}
.venv/bin/torchrun --nnodes "$NNODES" --nproc-per-node "$GPUS" --node-rank "${NODE_RANK:?}" \
  --rdzv-backend c10d --rdzv-endpoint "${MASTER:?}:29500" \
  -m lungheart_cl pretrain --config "$BASE" --config "$SCHEME" \
  --trainer.accelerator gpu --trainer.strategy ddp --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS" \
  --trainer.precision bf16-mixed --trainer.sync_batchnorm true
