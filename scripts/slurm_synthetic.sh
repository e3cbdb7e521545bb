#!/usr/bin/env bash
# Example SLURM job: heads trained with DDP on 4 GPUs of one node (one task per GPU; Lightning reads the
# SLURM environment). Adjust the partition/account lines to your cluster.
#SBATCH --job-name=ssl-pipeline
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=02:00:00
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
srun .venv/bin/ssl-pipeline synthetic --config "${CONFIG:-configs/synthetic/pancakes.yaml}" \
  --heads.trainer.accelerator gpu --heads.trainer.devices 4 --heads.trainer.strategy ddp \
  --run_dir "runs/${SLURM_JOB_ID:-local}-pancakes"
