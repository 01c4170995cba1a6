#!/usr/bin/env bash
# Stage-I action recognition (AR), local run: SlowFast 8x8 R101 on the FHO-LTA data.
#
#   bash scripts/ego4d_recognition_local.sh [--cfg FILE] [--fast_dev_run] [--data_dir D] [KEY VALUE ...]
#
# Runs scripts/lta/run_lta.py with configs/recognition/baseline/MULTISLOWFAST_8x8_R101.yaml (or $CFG); every extra
# argument is forwarded: flags first, then KEY VALUE config overrides, e.g.
#   bash scripts/ego4d_recognition_local.sh SOLVER.MAX_EPOCH 5 NUM_GPUS 2
#   bash scripts/ego4d_recognition_local.sh --cfg configs/recognition/cpu/slowfast_r50_tiny.yaml   # on a CPU
# Works from any directory; paths in configs are relative to the repository root.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CFG="${CFG:-configs/recognition/baseline/MULTISLOWFAST_8x8_R101.yaml}"
PYTHON="${PYTHON:-python}"
exec "$PYTHON" "$REPO_ROOT/scripts/lta/run_lta.py" --cfg "$CFG" "$@"
