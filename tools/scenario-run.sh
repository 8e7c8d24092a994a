#!/usr/bin/env bash
# The scenario suite against the local stack, from nothing but a running
# stack (tools/stack.sh start) and the venv (tools/venv.sh):
#
#   1. writes the agent's config and a Tempest workspace whose tempest.conf
#      names the stack (tools/scenario-conf.sh),
#   2. starts the agent under test (tools/scenario-daemon.sh start),
#   3. runs the scenarios (imaged's Tempest plugin) with "tempest run" in
#      parallel, then the fault tests (tests/scenario/faults) one at a time,
#      then the post-run check of the agent's log (tests/scenario/postrun);
#      the last two with stestr, reading the same tempest.conf,
#   4. stops the agent and removes its state, even when tests fail.
#
# Usage: tools/scenario-run.sh [FILTER...]   (regexes, any of which selects)
# IMAGED_SCENARIO_WORKERS: how many "tempest run" workers (default 2); the
# workspace's pre-provisioned accounts are made for that many.
# Against another deployment, skip this script: write tempest.conf
# (README.rst) and run "tempest run --regex imaged" in its workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}

STACK_DIR=${IMAGED_STACK_DIR:-/var/lib/imaged-stack}
WORKERS=${IMAGED_SCENARIO_WORKERS:-2}
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] ||
    { echo "scenario-run: IMAGED_SCENARIO_WORKERS=$WORKERS is not a positive number" >&2; exit 2; }

# One run at a time on a stack: the workspace, the agent under test and the
# accounts' lock files are shared. 8>&-: the agent must not keep it.
mkdir -p "$STACK_DIR/scenario"
exec 8>>"$STACK_DIR/scenario/run.lock"
flock -n 8 || { echo "scenario-run: another scenario run holds $STACK_DIR/scenario/run.lock" >&2; exit 1; }

WORKSPACE=$(tools/scenario-conf.sh --workers "$WORKERS" 8>&-)
# Tempest marks an account taken with a file named after its hash, removed
# by the class's tearDownClass: a run that was killed leaves them, and each
# would keep its account from every later run. No run holds one now.
rm -rf "$WORKSPACE/tempest_lock/test_accounts"
tools/scenario-daemon.sh start 8>&-
trap 'tools/scenario-daemon.sh purge 8>&-' EXIT
# For the stestr parts: Tempest's configuration is found through these.
export TEMPEST_CONFIG_DIR=$WORKSPACE/etc TEMPEST_CONFIG=tempest.conf
# The lock that keeps fault tests apart from every other test: this stack's
# (a machine-wide one would make runs against other stacks wait on it).
export IMAGED_SCENARIO_FAULT_LOCK=$STACK_DIR/scenario/fault.lock

SCENARIO_REGEX='^imaged\.tempest_plugin\.'
if [ $# -gt 0 ]; then
    SCENARIO_REGEX+=".*($(IFS='|'; echo "$*"))"
fi
tempest_run() {  # tempest_run ARGS...: in the workspace, as its README says
    (cd "$WORKSPACE" && "$ROOT/.venv/bin/tempest" run "$@" 8>&-)
}
FAULTS=(.venv/bin/stestr --test-path ./tests/scenario/faults --top-dir ./)
POSTRUN=(.venv/bin/stestr --test-path ./tests/scenario/postrun --top-dir ./)
# "stestr list" needs a repository: in a fresh clone it fails, and every
# part below would be skipped as if the filters selected nothing.
[ -d .stestr ] || .venv/bin/stestr init >/dev/null
rc=0
times=()
started=$SECONDS
# Each part runs only if the filters select some of its tests.
listed=$(tempest_run --list-tests --regex "$SCENARIO_REGEX" |
         grep -c '^imaged\.' || true)
if [ "$listed" -gt 0 ]; then
    tempest_run --regex "$SCENARIO_REGEX" --concurrency "$WORKERS" || rc=$?
    times+=("scenarios $((SECONDS - started))s")
elif [ $# -eq 0 ]; then
    # Unfiltered, Tempest must find the plugin's tests: none is a failure.
    echo "scenario-run: tempest lists no imaged test in $WORKSPACE" >&2
    rc=1
fi
started=$SECONDS
if [ -n "$("${FAULTS[@]}" list "$@" 2>/dev/null)" ]; then
    "${FAULTS[@]}" run --concurrency 1 "$@" 8>&- || rc=$?
    times+=("faults $((SECONDS - started))s")
fi
# Last, once every test has called the agent: its log holds no secret.
if [ -n "$("${POSTRUN[@]}" list "$@" 2>/dev/null)" ]; then
    "${POSTRUN[@]}" run "$@" 8>&- || rc=$?
fi
echo "scenario suite: ${times[*]:-no test selected}; exit $rc"
exit $rc
