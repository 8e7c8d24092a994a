# Shared by tools/stack.sh and the service files next to this one:
# logging, finding and stopping our daemons, ports, bounded waits, writing
# generated files and building a service's venv.  Sourced, not run.
# Lists of pids are plain space-separated words here, split on purpose.
# shellcheck shell=bash disable=SC2086,SC2116,SC2015

# Debian's interpreter on purpose: it has python3-rados/rbd, and the pyenv
# python3 that may be first on PATH has not.
PY=/usr/bin/python3

T_STOP=${IMAGED_STACK_STOP_TIMEOUT:-30}

# tools/stack/probe.py: bounded readiness checks (see there).  9>&-: a
# probe must never hold stack.sh's lock (fd 9).
probe() { "$PY" "$STACK_LIB/probe.py" "$@" 9>&-; }

T0=$EPOCHREALTIME
log() { printf '[stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# Last lines of a log file, for error messages.
show_tail() {
    local f=$1 n=${2:-25}
    [ -f "$f" ] || return 0
    log "--- last $n lines of $f:"
    tail -n "$n" "$f" | sed 's/^/    /' >&2
}

re_escape() { printf '%s' "$1" | sed -e 's/[][\.*^$+?(){}|/]/\\&/g'; }

# A port knob: a number in 1..65535 outside Ceph's 6800-7300.
check_port() {  # check_port NAME VALUE
    [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 65535 ] ||
        { echo "stack.sh: $1=$2 is not a TCP port" >&2; exit 2; }
    if [ "$2" -ge 6800 ] && [ "$2" -le 7300 ]; then
        echo "stack.sh: $1=$2 is in 6800-7300, which Ceph's OSD and mgr use" >&2; exit 2
    fi
}

# Our daemons are found by their exact command line (which contains a path
# inside STACK_DIR), not by pid files alone: pid files may be stale or
# corrupt after a killed run, and a daemon whose pid file is gone must still
# be found, reused or stopped.  Prints matching pids (none: empty).
# Only processes of this machine count: one in another PID namespace or
# under another root directory (a stack in a chroot, tools/other-release.sh)
# has the same command line, but is not ours to reuse or stop.
SELF_PIDNS=$(readlink /proc/self/ns/pid 2>/dev/null || true)
pids_matching() {
    local re=$1 p st
    for p in $(pgrep -f -- "$re" || true); do
        # zombies (dead, not yet reaped) do not count
        st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null || true)
        [ -n "$st" ] && [ "$st" != Z ] || continue
        [ "$(readlink "/proc/$p/ns/pid" 2>/dev/null || true)" = "$SELF_PIDNS" ] || continue
        [ "$(readlink "/proc/$p/root" 2>/dev/null || true)" = / ] || continue
        echo "$p"
    done
    return 0
}

# Daemonizing launchers exit before their (grand)child is visible: poll.
wait_pids() {  # wait_pids REGEX TIMEOUT -> prints pids, or nothing at timeout
    local re=$1 end=$((SECONDS + $2)) pids=
    while :; do
        pids=$(pids_matching "$re")
        if [ -n "$pids" ] || [ $SECONDS -ge $end ]; then break; fi
        sleep 0.1
    done
    echo $pids
}

# kill_matching NAME REGEX [TIMEOUT]: SIGTERM the top-level processes
# matching REGEX (a uWSGI master, not its workers, so it can shut down
# cleanly), wait, then SIGKILL whatever is left.
kill_matching() {
    local name=$1 re=$2 timeout=${3:-$T_STOP} pids roots p pp end
    KILLED=0   # 1 once SIGKILL was needed: the daemon did not shut down
    pids=$(pids_matching "$re")
    [ -n "$pids" ] || return 0
    roots=()
    for p in $pids; do
        pp=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null || echo 0)
        grep -qx -- "$pp" <<<"$pids" || roots+=("$p")
    done
    log "stopping $name (pid $(echo $pids))"
    kill -TERM "${roots[@]}" 2>/dev/null || true
    end=$((SECONDS + timeout))
    while [ -n "$(pids_matching "$re")" ] && [ $SECONDS -lt $end ]; do
        sleep 0.2
    done
    pids=$(pids_matching "$re")
    if [ -n "$pids" ]; then
        log "$name did not exit within ${timeout}s, sending SIGKILL"
        KILLED=1
        kill -KILL $pids 2>/dev/null || true
        end=$((SECONDS + 15))
        while [ -n "$(pids_matching "$re")" ] && [ $SECONDS -lt $end ]; do
            sleep 0.2
        done
        [ -z "$(pids_matching "$re")" ] || die "could not kill $name ($pids)"
    fi
}

# Who listens on TCP port $1?  Prints "pid name" or nothing.
port_holder() {
    ss -ltnpH "sport = :$1" 2>/dev/null |
        sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\2 \1/p' | head -n1
}

# Fail clearly (instead of a confusing daemon crash) if a port we need is
# held by something that is not ours.  $2: regex of our process.
require_port_free() {
    local port=$1 ours=$2 holder pid
    holder=$(port_holder "$port")
    [ -n "$holder" ] || return 0
    pid=${holder%% *}
    grep -qx -- "$pid" <<<"$(pids_matching "$ours")" && return 0
    die "port $port is held by another process ($holder: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-200)); stop it first"
}

# ------------------------------------------------------------ releases --
# The releases this stack is tested on (README.rst "Tests"). Sets
# OS_RELEASE (e.g. "debian 13"). Another Debian-like release: a clear
# warning, then the same steps (package names may differ); no apt at all: an
# error, since everything here is Debian's packages.
KNOWN_RELEASES="debian 12 (bookworm), debian 13 (trixie)"
check_release() {
    local id=unknown version= name=
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        id=$(. /etc/os-release && echo "${ID:-unknown}")
        version=$(. /etc/os-release && echo "${VERSION_ID:-}")
        name=$(. /etc/os-release && echo "${PRETTY_NAME:-$ID}")
    fi
    OS_RELEASE="$id $version"
    case $OS_RELEASE in
        "debian 12"|"debian 13") return 0 ;;
    esac
    command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
        die "this machine is ${name:-of an unknown release} without apt: the stack installs Debian's packages (tested on $KNOWN_RELEASES)"
    [ -n "${RELEASE_WARNED:-}" ] && return 0
    RELEASE_WARNED=1
    log "WARNING: this machine is ${name:-of an unknown release} (/etc/os-release: ID=$id VERSION_ID=$version);"
    log "WARNING: the stack is tested on $KNOWN_RELEASES only. Carrying on with the same"
    log "WARNING: Debian package names; a failure below may come from this release."
}

# write_file PATH: stdin -> PATH, atomically, only if changed; a change sets
# FILES_CHANGED=1 (so a running daemon can be restarted onto it).
FILES_CHANGED=0
write_file() {
    local f=$1 tmp
    tmp=$(mktemp "$f.XXXXXX")
    cat >"$tmp"
    if [ -f "$f" ] && cmp -s "$tmp" "$f"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$f"
        FILES_CHANGED=1
    fi
}

# ------------------------------------------------------------ uWSGI apps --
# Glance, Keystone and Barbican run under a uWSGI master (daemonized, pid
# file) with worker processes; these find, check and clean up after one.

# uwsgi_master_pid PIDFILE REGEX: the master's pid, if the pid file names a
# live process of ours (a stale or corrupt pid file gives nothing).
uwsgi_master_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null | tr -dc 0-9) || true
    [ -n "$pid" ] && grep -qx -- "$pid" <<<"$(pids_matching "$2")" && echo "$pid"
    return 0
}

# uwsgi_kill_orphans NAME REGEX MASTER: workers whose master was killed exit
# by themselves within seconds, but may still hold the port: end them.
uwsgi_kill_orphans() {
    [ -z "$3" ] || return 0
    [ -n "$(pids_matching "$2")" ] || return 0
    log "killing orphaned $1 uWSGI workers"
    kill -KILL $(pids_matching "$2") 2>/dev/null || true
    kill_matching "$1 workers" "$2" 10
}

# uwsgi_service_ini RUN_DIR LOG: the end of a small API service's uwsgi.ini
# (Keystone, Barbican): threads, one app per worker, bounded requests, the
# pid file in RUN_DIR, everything logged to LOG but the requests.
uwsgi_service_ini() {
    cat <<EOF
enable-threads = true
single-interpreter = true
lazy-apps = true
thunder-lock = true
need-app = true
die-on-term = true
worker-reload-mercy = 10
buffer-size = 65535
harakiri = 60
add-header = Connection: close
pidfile = $1/uwsgi.pid
daemonize = $2
log-master = true
disable-logging = true
logger = file:$2
EOF
}

# uwsgi_reuse NAME REGEX MASTER ANSWERS: print MASTER if the running service
# may be kept (its generated configuration unchanged, FILES_CHANGED=0, and
# "ANSWERS 20 MASTER" succeeds); else stop it and print nothing.
uwsgi_reuse() {
    local name=$1 re=$2 master=$3 answers=$4
    [ -n "$master" ] || return 0
    if [ "$FILES_CHANGED" = 1 ]; then
        log "$name's configuration changed: restarting it"
    elif "$answers" 20 "$master"; then
        echo "$master"
        return 0
    else
        log "$name is running but not answering: restarting it"
    fi
    kill_matching "$name" "$re" >&2
}

# uwsgi_status NAME REGEX MASTER ANSWERS UP_TEXT DOWN_TEXT: one status line;
# fails unless the master runs and "ANSWERS 5" succeeds.
uwsgi_status() {
    local name=$1 re=$2 master=$3 answers=$4 pids
    if [ -n "$master" ] && "$answers" 5 2>/dev/null; then
        status_line "$name" up "pid $master (uWSGI master); $5"
        return 0
    fi
    pids=$(pids_matching "$re")
    status_line "$name" down "${pids:+pid $(echo $pids), $6}"
    return 1
}

# uwsgi_launch NAME INI LOG PIDFILE REGEX DIR: start a daemonized uWSGI and
# print the pids of its processes (bounded: the launcher itself gets 60 s).
uwsgi_launch() {
    local name=$1 ini=$2 logf=$3 pidf=$4 re=$5 dir=$6 venv pids
    venv=$(sed -n 's/^virtualenv = //p' "$ini")
    rm -f "$pidf"
    echo "--- $(date -Is) stack.sh start" >>"$logf"
    (cd "$dir" && timeout 60 "$venv/bin/uwsgi" --ini "$ini" 9>&- </dev/null) >>"$logf" 2>&1 ||
        { show_tail "$logf"; die "uwsgi ($name) failed to start"; }
    # The master daemonizes by forking twice: a process that matches REGEX
    # just after the launcher returned may be the one in between, about to
    # exit. The master is the process its pid file names.
    pids=$(wait_master "$pidf" "$re" 10)
    [ -n "$pids" ] || { show_tail "$logf"; die "uwsgi ($name) exited at once"; }
    echo $pids
}

# wait_master PIDFILE REGEX TIMEOUT: the uWSGI master's pid once its pid
# file names a live process of ours, or nothing at the timeout.
wait_master() {
    local end=$((SECONDS + $3)) pid
    while :; do
        pid=$(uwsgi_master_pid "$1" "$2")
        if [ -n "$pid" ] || [ $SECONDS -ge $end ]; then break; fi
        sleep 0.1
    done
    echo $pid
}

# ----------------------------------------------------------------- venvs --
# build_venv NAME DIR "PIP SPEC" "IMPORTS" EXE...: a venv on Debian's Python
# (with system site packages: the RBD store needs Debian's rados/rbd) with
# the PIP SPEC installed.  DIR/.stack-installed is written last and records
# the spec, so a venv that was never finished (killed pip) or built for
# another spec is rebuilt from scratch rather than trusted.
venv_stamp_text() {
    printf 'python=%s\npip=%s\n' "$($PY -c 'import sys; print(sys.version.split()[0])')" "$1"
}

build_venv() {
    local name=$1 dir=$2 spec=$3 imports=$4 exe ok=1
    shift 4
    for exe in "$@"; do [ -x "$dir/bin/$exe" ] || ok=0; done
    if [ $ok = 1 ] && [ -f "$dir/.stack-installed" ] && "$dir/bin/python" -c '' 2>/dev/null &&
        diff -q <(venv_stamp_text "$spec") <(sed -n '1,2p' "$dir/.stack-installed") >/dev/null; then
        return 0
    fi
    log "building $name venv in $dir ($spec)"
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    $PY -m venv --system-site-packages "$dir"
    "$dir/bin/pip" install --disable-pip-version-check -U $spec 9>&- \
        >"$dir-pip.log" 2>&1 ||
        { show_tail "$dir-pip.log"; die "pip install into $dir failed"; }
    "$dir/bin/python" -c "import $imports" ||
        die "$name venv is broken (cannot import $imports)"
    { venv_stamp_text "$spec"; "$dir/bin/pip" freeze --disable-pip-version-check 2>/dev/null |
        grep -iE '^(glance|glance.store|keystone|barbican|keystonemiddleware|keystoneauth1|uwsgi|pyopenssl|python-glanceclient|cryptography)==' || true
    } >"$dir/.stack-installed"
    log "$name venv ready: $(grep -iE "^$name==" "$dir/.stack-installed" || true)"
}

# sqlite_usable DB TABLE: the file passes a quick check and has TABLE.
sqlite_usable() {
    $PY - "$1" "$2" <<'PYEOF'
import sqlite3, sys
c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=10)
assert c.execute("pragma quick_check").fetchone()[0] == "ok"
c.execute("select count(*) from %s" % sys.argv[2]).fetchone()
PYEOF
}

status_line() { printf '%-11s %-5s %s\n' "$1" "$2" "$3"; }
