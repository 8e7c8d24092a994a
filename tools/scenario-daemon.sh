#!/usr/bin/env bash
# The imaged under test of the scenario suite on the local stack: one agent
# configured by $STACK_DIR/scenario/imaged.conf (tools/scenario-conf.sh).
#
#   tools/scenario-daemon.sh start    start it (if not running) and wait
#                                     until it answers over RPC
#   tools/scenario-daemon.sh stop     SIGTERM, as systemd would (calls in
#                                     flight finish), SIGKILL after 90 s
#   tools/scenario-daemon.sh status
#   tools/scenario-daemon.sh purge    stop it and remove its state (cache)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${IMAGED_STACK_DIR:-/var/lib/imaged-stack}
DIR=$STACK_DIR/scenario
CONF_FILE=$DIR/imaged.conf
PID_FILE=$DIR/imaged.pid
LOG_FILE=$DIR/imaged.log
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}

say() { printf '[scenario-daemon] %s\n' "$*" >&2; }

running() {
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null |
        grep -qF -- "imaged --config-file $CONF_FILE"
}

host() { sed -n 's/^host *= *//p' "$CONF_FILE" | head -n1; }

answers() {
    timeout 20 "$ROOT/.venv/bin/imaged-client" --config-file "$CONF_FILE" \
        --host "$(host)" capabilities >/dev/null 2>&1
}

start() {
    [ -f "$CONF_FILE" ] || "$ROOT/tools/scenario-conf.sh" >/dev/null
    if running && [ "$CONF_FILE" -nt "$PID_FILE" ]; then
        say "$CONF_FILE changed: restarting"
        stop
    fi
    if running; then
        say "already running, pid $(cat "$PID_FILE")"
    else
        mkdir -p "$DIR"
        # Its own session: stop and kill reach the worker it forks too.
        # Cores on (as the systemd unit's LimitCORE), written in $DIR where
        # kernel.core_pattern is a plain name.
        (ulimit -c unlimited 2>/dev/null || true
         cd "$DIR" && exec setsid "$ROOT/.venv/bin/imaged" --config-file "$CONF_FILE" \
            </dev/null >>"$DIR/imaged.stdout" 2>&1) &
        echo $! >"$PID_FILE"
        say "started imaged as $(host), pid $!, log $LOG_FILE"
    fi
    local end=$((SECONDS + 120))
    until answers; do
        if ! running; then
            say "imaged exited; last log lines:"
            tail -n 20 "$LOG_FILE" >&2 || true
            exit 1
        fi
        if [ $SECONDS -ge $end ]; then
            say "imaged did not answer within 120 s"
            tail -n 20 "$LOG_FILE" >&2 || true
            exit 1
        fi
        sleep 1
    done
    say "imaged $(host) answers"
}

stop() {
    running || { rm -f "$PID_FILE"; return 0; }
    local pid end
    pid=$(cat "$PID_FILE")
    kill -TERM "$pid"
    end=$((SECONDS + 90))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    # The worker too (same session and process group as the parent).
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    say "stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status)
        if running; then say "running, pid $(cat "$PID_FILE")"; else say "not running"; exit 1; fi ;;
    purge) stop; rm -rf "$DIR/state"; say "state removed" ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
