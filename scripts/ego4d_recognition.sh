#!/usr/bin/env bash
# Stage-I action recognition (AR) on a Slurm cluster.
#
#   bash scripts/ego4d_recognition.sh JOB_NAME CFG [KEY VALUE ...]
#   e.g. bash scripts/ego4d_recognition.sh ar_r101 configs/recognition/baseline/MULTISLOWFAST_8x8_R101.yaml
#
# Writes <OUTPUT_ROOT>/<JOB_NAME>/slurm_job.sh and submits it with sbatch; the job runs
#   srun python scripts/lta/run_lta.py --cfg CFG NUM_SHARDS <nodes> NUM_GPUS <gpus> OUTPUT_DIR <OUTPUT_ROOT>/<JOB_NAME> [KEY VALUE ...]
# (one task per GPU; Lightning reads ranks from Slurm). Settings from the environment (defaults in brackets):
#   NODES [1], GPUS_PER_NODE [8], CPUS_PER_TASK [10], PARTITION [none], TIME [72:00:00], MEM_PER_GPU [48G],
#   OUTPUT_ROOT [logs/ego4d_recognition], SBATCH_EXTRA [extra sbatch arguments, e.g. "--account=abc"].
# Without Slurm (no sbatch on PATH) it stops with a message naming the local alternative.
set -euo pipefail
USAGE="bash scripts/ego4d_recognition.sh JOB_NAME CFG [KEY VALUE ...]"
DEFAULT_GPUS=8
OUTPUT_ROOT="${OUTPUT_ROOT:-logs/ego4d_recognition}"
LOCAL_COMMAND="bash scripts/ego4d_recognition_local.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_slurm_submit.sh"
