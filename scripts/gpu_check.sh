#!/usr/bin/env bash
# One-command check of the GPU paths on one GPU (≤ 4 minutes, no network; scripts/gpu_check.py):
#   1. extraction with AMP + channels_last vs CPU float32 features (cos ≥ 0.999 per row), images/s;
#   2. the 24-head CIFAR-100-scale head grid vs one head, features resident (goal ≤ 2×);
#   3. the linear probe on CUDA vs CPU; 4. a 1-GPU `ddp` run through Lightning.
# Results go to $OUT (if set) or benchmarks/results/gpu_check.json.
#   bash scripts/gpu_check.sh               # on a GPU machine (sets up .venv if missing)
#   bash scripts/gpu_check.sh --device cpu  # dry run of the same code on CPU (small sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/pip install -q -e .
fi
.venv/bin/python scripts/gpu_check.py "$@"
