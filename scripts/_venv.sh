# Sourced by the README's commands: create or reuse .venv at the repo root and install rec_t5x into it.
# Re-installs only when setup.py changed since the last install (a stamp records its hash).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x "$REPO_ROOT/.venv/bin/python" ]; then
  echo "[rec_t5x] creating $REPO_ROOT/.venv with $($PYTHON --version)"
  "$PYTHON" -m venv "$REPO_ROOT/.venv"
fi
STAMP="$REPO_ROOT/.venv/.rec_t5x_installed"
WANT="$(sha256sum "$REPO_ROOT/setup.py" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[rec_t5x] installing rec_t5x and its pinned dependencies into .venv"
  "$REPO_ROOT/.venv/bin/python" -m pip install -q --upgrade pip
  "$REPO_ROOT/.venv/bin/python" -m pip install -q -e "$REPO_ROOT[test]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$REPO_ROOT/.venv/bin:$PATH"
# Quiet TensorFlow's C++ start-up banner; errors still show.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
