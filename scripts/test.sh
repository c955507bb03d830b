#!/usr/bin/env bash
# The README's test command: create/reuse .venv, fetch the real MovieLens data the tests use, run the suite.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/data -x`, or `-m multiprocess` for the
# multi-process tests alone). Tests run on PYTEST_WORKERS xdist workers (default 2, one per core;
# most of the suite's time is single-threaded XLA compilation, so two workers nearly halve it).
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$REPO_ROOT"
python -m rec_t5x.data.fetch ml100k ml1m
set +e
python -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[rec_t5x] pytest collected no tests: treating that as a failure" >&2
  exit 1
fi
exit "$rc"
