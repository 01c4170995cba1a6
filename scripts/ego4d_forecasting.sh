#!/usr/bin/env bash
# Stage-I long-term anticipation (LTA) on a Slurm cluster.
#
#   bash scripts/ego4d_forecasting.sh JOB_NAME CFG [KEY VALUE ...]
#   e.g. bash scripts/ego4d_forecasting.sh lta_trf configs/lta/baseline/slowfast_pretrain_ego4d.yaml
#
# Writes <OUTPUT_ROOT>/<JOB_NAME>/slurm_job.sh and submits it with sbatch; the job runs
#   srun python scripts/lta/run_lta.py --cfg CFG NUM_SHARDS <nodes> NUM_GPUS <gpus> OUTPUT_DIR <OUTPUT_ROOT>/<JOB_NAME> [KEY VALUE ...]
# (one task per GPU; Lightning reads ranks from Slurm). Settings from the environment (defaults in brackets):
#   NODES [1], GPUS_PER_NODE [1], CPUS_PER_TASK [10], PARTITION [none], TIME [72:00:00], MEM_PER_GPU [48G],
#   OUTPUT_ROOT [logs/ego4d_forecasting], SBATCH_EXTRA [extra sbatch arguments, e.g. "--account=abc"].
# Without Slurm (no sbatch on PATH) it stops with a message naming the local alternative.
set -euo pipefail
USAGE="bash scripts/ego4d_forecasting.sh JOB_NAME CFG [KEY VALUE ...]"
DEFAULT_GPUS=1
OUTPUT_ROOT="${OUTPUT_ROOT:-logs/ego4d_forecasting}"
LOCAL_COMMAND="python scripts/lta/run_lta.py"
source "$(dirname "${BASH_SOURCE[0]}")/_slurm_submit.sh"
