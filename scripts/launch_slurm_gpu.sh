#!/usr/bin/env bash
# Train on several GPU nodes of a SLURM cluster with `python -m rec_t5x.train` (JAX's distributed runtime).
#
#   scripts/launch_slurm_gpu.sh --nodes=2 --gpus_per_node=8 --partition=gpu [--account=acct] \
#     [--time=24:00:00] [--processes_per_node=1|gpus] --model_dir=/shared/runs/ml1m_xl \
#     --gin_file=gin/models/t5_1_1_xl.gin --gin_file=gin/runs/finetune.gin \
#     --gin.MIXTURE_OR_TASK_NAME="'rec_t5x.ml1m.rec_all'" --gin.TRAIN_STEPS=20000 \
#     --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 128}" --gin.NUM_PARTITIONS=8 \
#     [--venv=/shared/rec_t5x/.venv] [--install] [--dry-run]
#
# Writes an sbatch script to MODEL_DIR/rec_t5x_train.sbatch and submits it. In the job, srun starts
# one process per node (all its GPUs; default) or one per GPU (--processes_per_node=gpus, each task
# sees one GPU); the first node of the allocation is the coordinator, SLURM_PROCID is the process
# index, and they reach rec_t5x.train as --coordinator_address / --process_count / --process_index.
# The checkout, the venv and MODEL_DIR must be on a file system every node mounts. --install
# creates the venv here (login node) with jax[cuda12]. --dry-run prints the commands and the sbatch
# script and runs nothing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JAX_VERSION="0.10.2"          # setup.py's pin
COORDINATOR_PORT=8476

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "launch_slurm_gpu.sh: $*" >&2; exit 2; }

NODES="" GPUS="" PARTITION="" ACCOUNT="" TIME="24:00:00" PER_NODE=1 MODEL_DIR="" JOB="rec_t5x"
VENV="$REPO_ROOT/.venv" INSTALL=0 DRY_RUN=0
TRAIN_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --nodes=*) NODES="${arg#*=}" ;;
    --gpus_per_node=*) GPUS="${arg#*=}" ;;
    --partition=*) PARTITION="${arg#*=}" ;;
    --account=*) ACCOUNT="${arg#*=}" ;;
    --time=*) TIME="${arg#*=}" ;;
    --processes_per_node=*) PER_NODE="${arg#*=}" ;;
    --job_name=*) JOB="${arg#*=}" ;;
    --model_dir=*) MODEL_DIR="${arg#*=}" ;;
    --venv=*) VENV="${arg#*=}" ;;
    --gin_file=*|--gin.*=*|--gin_bindings=*) TRAIN_ARGS+=("$arg") ;;
    --install) INSTALL=1 ;;
    --dry-run|--dry_run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes=N (N >= 1) is required, got '$NODES'"
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || die "--gpus_per_node=G (G >= 1) is required, got '$GPUS'"
[ -n "$PARTITION" ] || die "--partition is required"
[ -n "$MODEL_DIR" ] || die "--model_dir is required (on a file system all nodes mount)"
case "$PER_NODE" in
  1) ;;
  gpus) PER_NODE="$GPUS" ;;
  *) die "--processes_per_node='$PER_NODE': expected 1 or gpus" ;;
esac
printf '%s\n' "${TRAIN_ARGS[@]}" | grep -q '^--gin_file=' || die "at least one --gin_file is required"
PROCESSES=$((NODES * PER_NODE))
SCRIPT="$MODEL_DIR/rec_t5x_train.sbatch"

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@" | sed 's/ $//'; echo
  else
    "$@"
  fi
}

if [ "$INSTALL" = 1 ]; then
  run python3.11 -m venv "$VENV"
  run "$VENV/bin/pip" install -q --upgrade pip
  run "$VENV/bin/pip" install -q -e "$REPO_ROOT"
  run "$VENV/bin/pip" install -q "jax[cuda12]==$JAX_VERSION"
fi

QUOTED_ARGS=""
for arg in "--gin.MODEL_DIR='$MODEL_DIR'" "${TRAIN_ARGS[@]}"; do
  QUOTED_ARGS+=" $(printf '%q' "$arg")"
done
GPU_BIND=""
[ "$PER_NODE" -gt 1 ] && GPU_BIND="#SBATCH --gpus-per-task=1"

sbatch_script() {
  cat <<EOF
#!/bin/bash
#SBATCH --job-name=$JOB
#SBATCH --partition=$PARTITION
${ACCOUNT:+#SBATCH --account=$ACCOUNT}
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=$PER_NODE
#SBATCH --gpus-per-node=$GPUS
$GPU_BIND
#SBATCH --time=$TIME
#SBATCH --output=$MODEL_DIR/slurm-%j.out
set -euo pipefail
# Process 0 (the coordinator) runs on the first node of the allocation. (sed reads the whole list:
# head would close the pipe early and, under pipefail, fail the job on scontrol's SIGPIPE.)
COORDINATOR=\$(scontrol show hostnames "\$SLURM_JOB_NODELIST" | sed -n 1p)
# JAX pre-allocates 75% of GPU memory by default; the train step is the only user here.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
cd $(printf '%q' "$REPO_ROOT")
TRAIN=($(printf '%q' "$VENV/bin/python") -m rec_t5x.train --coordinator_address=\$COORDINATOR:$COORDINATOR_PORT --process_count=$PROCESSES$QUOTED_ARGS)
srun --kill-on-bad-exit=1 bash -c 'exec "\$@" --process_index="\$SLURM_PROCID"' rec_t5x "\${TRAIN[@]}"
EOF
}

run mkdir -p "$MODEL_DIR"
if [ "$DRY_RUN" = 1 ]; then
  echo "# $SCRIPT:"
  sbatch_script | grep -v '^$'
  echo "# end of $SCRIPT"
else
  sbatch_script | grep -v '^$' > "$SCRIPT"
fi
run sbatch "$SCRIPT"
