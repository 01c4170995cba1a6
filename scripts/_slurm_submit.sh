# Shared body of the Slurm launchers (sourced, not run). The caller sets:
#   USAGE (its usage line), DEFAULT_GPUS, OUTPUT_ROOT, LOCAL_COMMAND (the local alternative, run with --cfg CFG ...)
# and passes its own arguments: JOB_NAME CFG [KEY VALUE ...].
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ $# -lt 2 ]]; then
  echo "usage: $USAGE" >&2
  exit 2
fi
JOB_NAME="$1"; CFG="$2"; shift 2
if [[ ! "$JOB_NAME" =~ ^[A-Za-z0-9._-]+$ ]]; then
  echo "error: JOB_NAME '$JOB_NAME' may only hold letters, digits, '.', '_' and '-'" >&2
  exit 2
fi
# The job runs from the repository root: keep a repository-relative CFG, make any other one absolute.
if [[ -f "$REPO_ROOT/$CFG" ]]; then
  :
elif [[ -f "$CFG" ]]; then
  CFG="$(cd "$(dirname "$CFG")" && pwd)/$(basename "$CFG")"
else
  echo "error: config file not found: $CFG" >&2
  exit 2
fi
if ! command -v sbatch >/dev/null 2>&1; then
  echo "error: sbatch not found: Slurm is not available on this machine." >&2
  echo "Run locally instead: $LOCAL_COMMAND --cfg $CFG${*:+ $*}" >&2
  exit 1
fi

NODES="${NODES:-1}"; GPUS_PER_NODE="${GPUS_PER_NODE:-$DEFAULT_GPUS}"; CPUS_PER_TASK="${CPUS_PER_TASK:-10}"
TIME="${TIME:-72:00:00}"; MEM_PER_GPU="${MEM_PER_GPU:-48G}"
RUN_DIR="$OUTPUT_ROOT/$JOB_NAME"
case "$RUN_DIR" in /*) ABS_RUN_DIR="$RUN_DIR" ;; *) ABS_RUN_DIR="$REPO_ROOT/$RUN_DIR" ;; esac
mkdir -p "$ABS_RUN_DIR"
JOB_FILE="$ABS_RUN_DIR/slurm_job.sh"
{
  echo "#!/usr/bin/env bash"
  echo "#SBATCH --job-name=$JOB_NAME"
  echo "#SBATCH --nodes=$NODES"
  echo "#SBATCH --ntasks-per-node=$GPUS_PER_NODE"
  echo "#SBATCH --gpus-per-node=$GPUS_PER_NODE"
  echo "#SBATCH --cpus-per-task=$CPUS_PER_TASK"
  echo "#SBATCH --mem-per-gpu=$MEM_PER_GPU"
  echo "#SBATCH --time=$TIME"
  echo "#SBATCH --output=$ABS_RUN_DIR/slurm-%j.out"
  if [[ -n "${PARTITION:-}" ]]; then echo "#SBATCH --partition=$PARTITION"; fi
  echo "set -euo pipefail"
  printf 'cd %q\n' "$REPO_ROOT"
  printf 'srun python scripts/lta/run_lta.py --cfg %q NUM_SHARDS %q NUM_GPUS %q OUTPUT_DIR %q' \
    "$CFG" "$NODES" "$GPUS_PER_NODE" "$RUN_DIR"
  for argument in "$@"; do printf ' %q' "$argument"; done
  printf '\n'
} > "$JOB_FILE"
# shellcheck disable=SC2086  # SBATCH_EXTRA is a list of arguments
sbatch ${SBATCH_EXTRA:-} "$JOB_FILE"
echo "submitted $JOB_FILE (logs in $RUN_DIR)"
