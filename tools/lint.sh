#!/usr/bin/env bash
# The quick lint stage: flake8 with hacking's checks, bandit on the code
# imaged runs, mypy on the typed public interfaces. Each must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${IMAGED_LINT_BIN:-.venv/bin}
rc=0
echo "lint: flake8 (with hacking)"
"$BIN/flake8" -j 2 imaged tests tools || rc=1
echo "lint: bandit"
"$BIN/bandit" -q -c pyproject.toml -r imaged || rc=1
echo "lint: mypy"
"$BIN/mypy" || rc=1
exit $rc
