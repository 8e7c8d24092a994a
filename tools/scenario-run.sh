#!/usr/bin/env bash
# The scenario suite (tests/scenario) against the local stack, from nothing
# but a running stack (tools/stack.sh start) and the venv (tools/venv.sh):
#
#   1. writes the suite's config (tools/scenario-conf.sh),
#   2. starts the agent under test (tools/scenario-daemon.sh start),
#   3. runs the scenarios in parallel, then the fault tests one at a time,
#   4. stops the agent and removes its state, even when tests fail.
#
# Usage: tools/scenario-run.sh [STESTR-FILTER...]
# Against another deployment, skip this script: set IMAGED_SCENARIO_CONFIG
# and run the two stestr commands below yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}
unset IMAGED_SCENARIO_CONFIG  # the local stack's, written below

tools/scenario-conf.sh >/dev/null
tools/scenario-daemon.sh start
trap 'tools/scenario-daemon.sh purge' EXIT

SCENARIOS=(.venv/bin/stestr --test-path ./tests/scenario)
FAULTS=(.venv/bin/stestr --test-path ./tests/scenario/faults --top-dir ./)
ALL_FAULTS='^tests\.scenario\.faults\.'

# Runs only if the filters select some of its tests.
run_part() {  # run_part NAME STESTR... -- RUN-ARGS...
    local name=$1 cmd=() started=$SECONDS
    shift
    while [ "$1" != -- ]; do cmd+=("$1"); shift; done
    shift
    if [ -z "$("${cmd[@]}" list "$@" 2>/dev/null)" ]; then
        echo "$name: no test selected"
        return 0
    fi
    "${cmd[@]}" run "$@" || rc=$?
    times+=("$name $((SECONDS - started))s")
}

rc=0
times=()
run_part scenarios "${SCENARIOS[@]}" -- --exclude-regex "$ALL_FAULTS" "$@"
run_part faults "${FAULTS[@]}" -- --concurrency 1 "$@"
echo "scenario suite: ${times[*]}; exit $rc"
exit $rc
