#!/usr/bin/env bash
# Train on every worker of a Cloud TPU VM slice (v4-32, v5e-64, ...) with `python -m rec_t5x.train`.
#
#   scripts/launch_tpu_pod.sh --tpu=my-v4-32 --zone=us-central2-b [--project=my-project] \
#     --model_dir=gs://my-bucket/runs/ml1m_xl \
#     --gin_file=gin/models/t5_1_1_xl.gin --gin_file=gin/runs/finetune.gin \
#     --gin.MIXTURE_OR_TASK_NAME="'rec_t5x.ml1m.rec_all'" --gin.TRAIN_STEPS=20000 \
#     --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 128}" --gin.NUM_PARTITIONS=4 \
#     [--fetch=ml1m] [--skip_install] [--dry-run]
#
# Steps (each a gcloud command on all workers, --worker=all):
#   1. pack the code, the gin/ folder and any --gin_file outside it into one tarball (locally);
#   2. copy it to every worker and unpack it into ~/rec_t5x;
#   3. install (unless --skip_install): python3.11 venv, `pip install -e .` and jax[tpu];
#   4. fetch datasets (--fetch=ml1m,ml100k) into each worker's ~/.cache/rec_t5x;
#   5. run the training: every worker reads its index and the coordinator (worker 0) from the
#      TPU VM metadata server (the keys JAX's own Cloud TPU detection reads) and passes them as
#      --coordinator_address / --process_count / --process_index.
# MODEL_DIR must be storage every worker shares (gs://...): Orbax writes one checkpoint from all
# processes. --dry-run prints every command (shell-quoted, copy-pasteable) and runs none.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JAX_VERSION="0.10.2"          # setup.py's pin; jax[tpu] adds libtpu from PyPI
COORDINATOR_PORT=8476
REMOTE_DIR='~/rec_t5x'
METADATA='http://metadata.google.internal/computeMetadata/v1/instance/attributes'

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "launch_tpu_pod.sh: $*" >&2; exit 2; }

TPU="" ZONE="" PROJECT="" MODEL_DIR="" FETCH="" SKIP_INSTALL=0 DRY_RUN=0
GIN_FILES=() TRAIN_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --tpu=*) TPU="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --project=*) PROJECT="${arg#*=}" ;;
    --model_dir=*) MODEL_DIR="${arg#*=}" ;;
    --gin_file=*) GIN_FILES+=("${arg#*=}") ;;
    --gin.*=*|--gin_bindings=*) TRAIN_ARGS+=("$arg") ;;
    --fetch=*) FETCH="${arg#*=}" ;;
    --skip_install) SKIP_INSTALL=1 ;;
    --dry-run|--dry_run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
[ -n "$TPU" ] || die "--tpu=NAME is required"
[ -n "$ZONE" ] || die "--zone=ZONE is required"
[ -n "$MODEL_DIR" ] || die "--model_dir is required (shared storage, e.g. gs://bucket/run)"
[ "${#GIN_FILES[@]}" -gt 0 ] || die "at least one --gin_file is required"
case "$MODEL_DIR" in
  gs://*) ;;
  *) echo "launch_tpu_pod.sh: warning: --model_dir=$MODEL_DIR is not gs://; every worker must see" \
       "the same directory" >&2 ;;
esac

# Prints (dry run) or runs one command; arguments are shell-quoted when printed.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@" | sed 's/ $//'; echo
  else
    "$@"
  fi
}

GCLOUD_WHERE=(--zone="$ZONE")
[ -n "$PROJECT" ] && GCLOUD_WHERE+=(--project="$PROJECT")
on_all_workers() {  # on_all_workers "remote shell command"
  run gcloud compute tpus tpu-vm ssh "$TPU" --worker=all "${GCLOUD_WHERE[@]}" --command="$1"
}

# 1. Stage the code and the gin files (files outside the repo go to gin/user/).
STAGE="/tmp/rec_t5x_launch_${TPU}"
TARBALL="/tmp/rec_t5x_src_${TPU}.tgz"
REMOTE_GIN=()
run rm -rf "$STAGE"
run mkdir -p "$STAGE/gin/user"
run cp -r "$REPO_ROOT/rec_t5x" "$REPO_ROOT/seqio_tasks" "$REPO_ROOT/gin" "$REPO_ROOT/setup.py" \
  "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/README.md" "$STAGE/"
for gin_file in "${GIN_FILES[@]}"; do
  if [ -f "$REPO_ROOT/$gin_file" ]; then
    REMOTE_GIN+=("--gin_file=$gin_file")
  elif [ -f "$gin_file" ]; then
    run cp "$gin_file" "$STAGE/gin/user/$(basename "$gin_file")"
    REMOTE_GIN+=("--gin_file=gin/user/$(basename "$gin_file")")
  else
    die "--gin_file=$gin_file: not found (relative to $REPO_ROOT or the current directory)"
  fi
done
run tar -czf "$TARBALL" --exclude=__pycache__ -C "$STAGE" .

# 2. Copy and unpack on every worker.
run gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU:~/rec_t5x_src.tgz" --worker=all \
  "${GCLOUD_WHERE[@]}"
on_all_workers "mkdir -p $REMOTE_DIR && tar -xzf ~/rec_t5x_src.tgz -C $REMOTE_DIR"

# 3. Install.
if [ "$SKIP_INSTALL" = 0 ]; then
  on_all_workers "cd $REMOTE_DIR && (command -v python3.11 >/dev/null || (sudo apt-get update -q \
&& sudo apt-get install -y -q python3.11 python3.11-venv)) && python3.11 -m venv .venv \
&& .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e . \
&& .venv/bin/pip install -q 'jax[tpu]==$JAX_VERSION'"
fi

# 4. Data.
if [ -n "$FETCH" ]; then
  on_all_workers "cd $REMOTE_DIR && .venv/bin/python -m rec_t5x.data.fetch ${FETCH//,/ }"
fi

# 5. Train. The worker index and the worker list come from the metadata server; the first worker
# of worker-network-endpoints ('host' or 'name:id:ip' entries) is process 0, the coordinator.
QUOTED_ARGS=""
for arg in "${REMOTE_GIN[@]}" "--gin.MODEL_DIR='$MODEL_DIR'" "${TRAIN_ARGS[@]}"; do
  QUOTED_ARGS+=" $(printf '%q' "$arg")"
done
on_all_workers "cd $REMOTE_DIR \
&& INDEX=\$(curl -sf -H Metadata-Flavor:Google $METADATA/agent-worker-number) \
&& ENDPOINTS=\$(curl -sf -H Metadata-Flavor:Google $METADATA/worker-network-endpoints) \
&& COORDINATOR=\$(echo \"\$ENDPOINTS\" | cut -d, -f1 | awk -F: '{print \$NF}') \
&& COUNT=\$(echo \"\$ENDPOINTS\" | tr ',' '\\n' | grep -c .) \
&& .venv/bin/python -m rec_t5x.train --coordinator_address=\$COORDINATOR:$COORDINATOR_PORT \
--process_count=\$COUNT --process_index=\$INDEX$QUOTED_ARGS"
