#!/usr/bin/env bash
# The scenario suite against the local stack, from nothing but a running
# stack (tools/stack.sh start) and the venv (tools/venv.sh):
#
#   1. writes the agent's config and a Tempest workspace whose tempest.conf
#      names the stack (tools/scenario-conf.sh),
#   2. starts the agent under test (tools/scenario-daemon.sh start),
#   3. runs the scenarios (imaged's Tempest plugin) with "tempest run" in
#      parallel and, beside them, the fault tests that disturb nothing
#      shared (exclusive = False), in parallel too; then the other fault
#      tests (tests/scenario/faults) one at a time, then the post-run check
#      of the agent's log (tests/scenario/postrun); the last three with
#      stestr, reading the same tempest.conf,
#   4. stops the agent and removes its state, even when tests fail.
#
# Usage: tools/scenario-run.sh [FILTER...]   (regexes, any of which selects)
# IMAGED_SCENARIO_WORKERS: how many "tempest run" workers (default 2);
# IMAGED_SCENARIO_FAULT_WORKERS: how many workers run the fault tests that
# disturb nothing shared beside them (default 2); the workspace's
# pre-provisioned accounts are made for all of them.
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
FAULT_WORKERS=${IMAGED_SCENARIO_FAULT_WORKERS:-2}
[[ $FAULT_WORKERS =~ ^[1-9][0-9]*$ ]] ||
    { echo "scenario-run: IMAGED_SCENARIO_FAULT_WORKERS=$FAULT_WORKERS is not a positive number" >&2; exit 2; }

# One run at a time on a stack: the workspace, the agent under test and the
# accounts' lock files are shared. 8>&-: the agent must not keep it.
mkdir -p "$STACK_DIR/scenario"
exec 8>>"$STACK_DIR/scenario/run.lock"
flock -n 8 || { echo "scenario-run: another scenario run holds $STACK_DIR/scenario/run.lock" >&2; exit 1; }

# scenario-conf.sh makes one account set more than --workers says, for a
# lock file a killed class left behind; this run removes those (below), so
# it asks for just enough sets (each is eight users more for Keystone to
# make, slow on a busy machine).
WORKSPACE=$(tools/scenario-conf.sh --workers "$((WORKERS + FAULT_WORKERS - 1))" 8>&-)
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
# The fault tests the filters select, split by what they disturb: the
# shared ones (agents, images, Glance proxies of their own) hold the fault
# lock shared, as the scenarios do, and run beside them; the exclusive ones
# (services stopped, the agent under test restarted, the whole pool
# cleaned) hold it alone, one at a time, after everything else.
LISTS=$(mktemp -d)
shared_faults=
# Leaving early, the fault tests beside the scenarios go too.
trap '[ -z "$shared_faults" ] || kill "$shared_faults" 2>/dev/null; rm -rf "$LISTS"; tools/scenario-daemon.sh purge 8>&-' EXIT
"${FAULTS[@]}" list "$@" >"$LISTS/faults" 2>/dev/null || true
.venv/bin/python -m tests.scenario.faults.split \
    "$LISTS/shared" "$LISTS/exclusive" <"$LISTS/faults"
if [ -s "$LISTS/shared" ]; then
    # Its output waits in a file, shown whole once the scenarios are done.
    (started=$SECONDS frc=0
     "${FAULTS[@]}" run --concurrency "$FAULT_WORKERS" --load-list "$LISTS/shared" 8>&- || frc=$?
     echo "faults beside the scenarios: $((SECONDS - started))s" >"$LISTS/shared.time"
     exit $frc) >"$LISTS/shared.log" 2>&1 &
    shared_faults=$!
fi
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
if [ -n "$shared_faults" ]; then
    # Every test in it has its own timeout (fixtures.Timeout).
    wait "$shared_faults" || rc=$?
    shared_faults=
    echo "scenario-run: the fault tests that ran beside the scenarios:"
    cat "$LISTS/shared.log"
    times+=("$(cat "$LISTS/shared.time" 2>/dev/null || echo "faults beside the scenarios: no time")")
fi
started=$SECONDS
if [ -s "$LISTS/exclusive" ]; then
    "${FAULTS[@]}" run --concurrency 1 --load-list "$LISTS/exclusive" 8>&- || rc=$?
    times+=("faults alone $((SECONDS - started))s")
fi
# Last, once every test has called the agent: its log holds no secret.
if [ -n "$("${POSTRUN[@]}" list "$@" 2>/dev/null)" ]; then
    "${POSTRUN[@]}" run "$@" 8>&- || rc=$?
fi
echo "scenario suite: ${times[*]:-no test selected}; exit $rc"
exit $rc
