#!/usr/bin/env bash
# One-command check of the GPU paths on one GPU (≤ 4 minutes, no network): the 24-head CIFAR-100-scale grid
# against one head with the features resident on the device (benchmarks/bench_gpu_grid.py; goal ≤ 2×).
# Results go to $OUT (if set) or benchmarks/results/. A later issue extends this script.
#   bash scripts/gpu_check.sh               # on a GPU machine (sets up .venv if missing)
#   bash scripts/gpu_check.sh --device cpu  # dry run of the same code path on CPU (small sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/pip install -q -e .
fi
.venv/bin/python -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
if [ "${1:-}" = "--device" ] && [ "${2:-}" = "cpu" ]; then
  .venv/bin/python benchmarks/bench_gpu_grid.py --device cpu --quick
else
  .venv/bin/python benchmarks/bench_gpu_grid.py "$@"
fi
