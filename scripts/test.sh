#!/usr/bin/env bash
# The README's test command: create/reuse .venv, fetch the real MovieLens data the tests use, run the suite.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/data -x`).
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$REPO_ROOT"
python -m rec_t5x.data.fetch ml100k ml1m
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[rec_t5x] pytest collected no tests: treating that as a failure" >&2
  exit 1
fi
exit "$rc"
