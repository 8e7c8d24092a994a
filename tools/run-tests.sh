#!/usr/bin/env bash
# The whole test suite, from nothing: installs the Debian packages and the
# environments, starts the local stack (Ceph, RabbitMQ, Glance), then runs the
# unit tests, the functional tests on the real stack and a quick benchmark.
# Run as root on Debian 12. Extra arguments are passed to both stestr runs
# as a test filter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}

tools/stack.sh install
tools/venv.sh

passed=0 failed=0
run_stestr() {
    local name=$1; shift
    local log
    log=$(mktemp)
    set +e
    .venv/bin/stestr --test-path "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    set -e
    local p f
    p=$(grep -Eo ' - Passed: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
    f=$(grep -Eo ' - Failed: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
    rm -f "$log"
    echo "$name: $p passed, $f failed"
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi
    return 0
}

run_stestr unit ./tests/unit run "$@"
tools/stack.sh start
run_stestr functional ./tests/functional run --concurrency 2 "$@"

echo
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
