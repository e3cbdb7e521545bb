#!/usr/bin/env bash
# Feature extraction on every GPU of this node with torchrun: one process per GPU, Lightning reads torchrun's
# environment, each rank encodes its own whole shards and rank 0 merges them into the cache entry (bit-identical
# to a one-process extraction). A killed run keeps its finished shards: run the same command again, with any
# number of processes, to complete it.
#
#   scripts/extract_torchrun.sh configs/default.yaml [more ssl-pipeline overrides]
#
# NPROC: processes on this node (default: the GPUs visible; on a machine without one, 2 CPU processes).
# More nodes: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> MASTER_PORT=29500 on every node.
# PYTHON: the interpreter with ssl_pipeline installed (default .venv/bin/python).
set -euo pipefail
config="${1:?usage: scripts/extract_torchrun.sh CONFIG [overrides...]}"
shift
python="${PYTHON:-.venv/bin/python}"
nproc="${NPROC:-$("$python" -c 'import torch; print(torch.cuda.device_count() or 2)')}"
nnodes="${NNODES:-1}"
if [ "$nnodes" -gt 1 ]; then
  rendezvous=(--nnodes "$nnodes" --node_rank "${NODE_RANK:?set NODE_RANK on every node}"
              --rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR:?set MASTER_ADDR to node 0}:${MASTER_PORT:-29500}")
else
  rendezvous=(--standalone)
fi
exec "$python" -m torch.distributed.run "${rendezvous[@]}" --nproc_per_node "$nproc" \
  -m ssl_pipeline.cli extract --config "$config" \
  --data.extract.devices "$nproc" --data.extract.num_nodes "$nnodes" --data.extract.strategy ddp "$@"
