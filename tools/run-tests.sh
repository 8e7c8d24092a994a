#!/usr/bin/env bash
# The whole test suite, from nothing: installs the Debian packages and the
# environments, starts the local stack (Ceph, RabbitMQ, Keystone, Glance; in
# the background, while stages 0 and 1 run), then runs
#   0. the lint stage (tools/lint.sh: flake8 with hacking, bandit, mypy),
#   1. the unit tests (fakes; well under a minute),
#   2. the functional tests (real imaged processes on the real stack),
#   3. the scenario suite (imaged's Tempest plugin with "tempest run",
#      against an agent started for it, then the fault-injection tests one
#      at a time),
#   4. the benchmark harness in its quick configuration (so it cannot rot),
#   5. a one-minute soak of three agents with an OSD restart.
# Run as root on Debian 12 or 13. Extra arguments are a stestr filter for
# 1-3. IMAGED_TEST_STAGES: some of "lint unit functional scenario bench soak"
# (default: all), e.g. for a quicker check of another release
# (tools/other-release.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}
STAGES=" ${IMAGED_TEST_STAGES:-lint unit functional scenario bench soak} "
for stage in $STAGES; do
    case $stage in
        lint|unit|functional|scenario|bench|soak) ;;
        *) echo "run-tests: unknown stage '$stage' in IMAGED_TEST_STAGES" >&2; exit 2 ;;
    esac
done
stage() { [[ $STAGES == *" $1 "* ]]; }

passed=0 failed=0
summary=()
failures=()

# The Debian packages first: tools/venv.sh and the unit tests need them.
tools/stack.sh install packages
# Then the stack (its services' venvs, then the services) starts in the
# background while imaged's venv is built and the lint and unit stages run,
# which need none of it (the unit tests use fakes); the functional stage
# waits for it. Its output is shown once it is done.
stack_pid=
if stage functional || stage scenario || stage bench || stage soak; then
    stack_log=$(mktemp)
    stack_start=$SECONDS
    tools/stack.sh start >"$stack_log" 2>&1 &
    stack_pid=$!
    # Leaving early (a failed venv), stop it rather than leave it running.
    trap '[ -z "$stack_pid" ] || kill "$stack_pid" 2>/dev/null || true' EXIT
fi
# wait_for_stack: the background start's outcome; every wait in
# tools/stack.sh has its own timeout, and this one bounds the whole.
wait_for_stack() {
    local rc=0 limit=${IMAGED_STACK_START_TIMEOUT:-1800}
    while kill -0 "$stack_pid" 2>/dev/null; do
        if [ $((SECONDS - stack_start)) -ge "$limit" ]; then
            kill "$stack_pid" 2>/dev/null || true
            echo "run-tests: tools/stack.sh start still runs after ${limit}s (IMAGED_STACK_START_TIMEOUT); its output:" >&2
            cat "$stack_log" >&2
            exit 1
        fi
        sleep 1
    done
    wait "$stack_pid" || rc=$?
    stack_pid=
    echo "run-tests: tools/stack.sh start (in the background since the lint stage):"
    cat "$stack_log"
    rm -f "$stack_log"
    if [ "$rc" -ne 0 ]; then
        echo "run-tests: tools/stack.sh start failed (exit $rc): no functional, scenario, bench or soak stage can run" >&2
        exit 1
    fi
    summary+=("stack start: in the background, ready after $((SECONDS - stack_start))s")
}
tools/venv.sh
# run_stage NAME COMMAND...: runs it, counts stestr's Passed/Failed lines.
run_stage() {
    local name=$1; shift
    local log rc p f start=$SECONDS
    log=$(mktemp)
    set +e
    "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    p=$(awk '/^ - Passed: [0-9]+$/ {s += $3} END {print s + 0}' "$log")
    f=$(awk '/^ - Failed: [0-9]+$/ {s += $3} END {print s + 0}' "$log")
    # stestr prints "{N} test.id [time] ... FAILED" for each failure.
    while read -r t; do failures+=("$name: $t"); done < <(
        sed -n 's/^{[0-9]*} \([^ ]*\) .*\.\.\. FAILED$/\1/p' "$log")
    rm -f "$log"
    p=${p:-0} f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi  # failed outside a test
    summary+=("$name: $p passed, $f failed ($((SECONDS - start))s)")
    passed=$((passed + p)); failed=$((failed + f))
}

if stage lint; then
    run_stage lint tools/lint.sh
fi
if stage unit; then
    run_stage unit .venv/bin/stestr --test-path ./tests/unit run "$@"
fi
if [ -n "$stack_pid" ]; then
    wait_for_stack
fi
if stage functional; then
    run_stage functional .venv/bin/stestr --test-path ./tests/functional run \
        --concurrency 2 "$@"
fi
if stage scenario; then
    run_stage scenario tools/scenario-run.sh "$@"
fi
if [ $# -eq 0 ] && stage bench; then
    bench_start=$SECONDS
    if .venv/bin/python -m tools.bench --quick \
            --json bench-results/quick.json --plot bench-results/quick.png; then
        summary+=("bench --quick: ran ($((SECONDS - bench_start))s)")
    else
        summary+=("bench --quick: FAILED")
        failed=$((failed + 1))
    fi
fi
if [ $# -eq 0 ] && stage soak; then
    # A short soak of a fleet (issue 14): 3 agents, an OSD restart; no lost
    # call, no worker death, every disk right, nothing leaked.
    soak_start=$SECONDS
    if .venv/bin/python -m tools.bench.soak --minutes 1 --agents 3 \
            --json bench-results/soak.json; then
        summary+=("soak: passed ($((SECONDS - soak_start))s)")
        passed=$((passed + 1))
    else
        summary+=("soak: FAILED ($((SECONDS - soak_start))s)")
        failures+=("soak: tools.bench.soak --minutes 1 --agents 3")
        failed=$((failed + 1))
    fi
fi

echo
printf '%s\n' "${summary[@]}"
if [ ${#failures[@]} -gt 0 ]; then
    echo "failed tests:"
    printf '  %s\n' "${failures[@]}"
fi
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
