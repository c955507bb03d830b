#!/usr/bin/env bash
# The README's main job: create/reuse .venv, fetch real MovieLens-100K, prepare it, show every task and
# mixture, train the tiny T5 on the rec_all mixture and checkpoint it. Idempotent: a second run reuses the
# venv, the data, the processed cache and the vocabulary; training resumes from the last checkpoint
# (and ends at once when it is already complete). Extra arguments go to `python -m rec_t5x.quickstart`.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$REPO_ROOT"
python -m rec_t5x.data.fetch ml100k
python -m rec_t5x.quickstart "$@"
