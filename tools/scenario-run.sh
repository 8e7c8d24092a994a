#!/usr/bin/env bash
# The scenario suite (tests/scenario) against the local stack, from nothing
# but a running stack (tools/stack.sh start) and the venv (tools/venv.sh):
#
#   1. writes the suite's config (tools/scenario-conf.sh),
#   2. starts the agent under test (tools/scenario-daemon.sh start),
#   3. runs the scenarios in parallel, then the fault tests one at a time,
#      then the post-run check of the agent's log (tests/scenario/postrun),
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
POSTRUN=(.venv/bin/stestr --test-path ./tests/scenario/postrun --top-dir ./)
NOT_FAULTS=(--exclude-regex '^tests\.scenario\.(faults|postrun)\.')
# "stestr list" needs a repository: in a fresh clone it fails, and every
# part below would be skipped as if the filters selected nothing.
[ -d .stestr ] || .venv/bin/stestr init >/dev/null
rc=0
times=()
started=$SECONDS
# Each part runs only if the filters select some of its tests.
if [ -n "$("${SCENARIOS[@]}" list "${NOT_FAULTS[@]}" "$@" 2>/dev/null)" ]; then
    "${SCENARIOS[@]}" run "${NOT_FAULTS[@]}" "$@" || rc=$?
    times+=("scenarios $((SECONDS - started))s")
fi
started=$SECONDS
if [ -n "$("${FAULTS[@]}" list "$@" 2>/dev/null)" ]; then
    "${FAULTS[@]}" run --concurrency 1 "$@" || rc=$?
    times+=("faults $((SECONDS - started))s")
fi
# Last, once every test has called the agent: its log holds no secret.
if [ -n "$("${POSTRUN[@]}" list "$@" 2>/dev/null)" ]; then
    "${POSTRUN[@]}" run "$@" || rc=$?
fi
echo "scenario suite: ${times[*]:-no test selected}; exit $rc"
exit $rc
