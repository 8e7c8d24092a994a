#!/bin/bash
# Local service stack for imaged's tests and benchmarks:
# a one-node Ceph cluster, RabbitMQ and Glance (RBD + file stores).
#
#   tools/stack.sh install
#   tools/stack.sh start  [all|ceph|ceph-mon|ceph-mgr|ceph-osd|rabbitmq|glance ...]
#   tools/stack.sh stop   [all|ceph|ceph-mon|ceph-mgr|ceph-osd|rabbitmq|glance ...]
#   tools/stack.sh status
#   tools/stack.sh env [--path]
#   tools/stack.sh rabbitmqctl|ceph|rbd|rados ARGS...   (bound to our stack)
#
# Everything (configs, data, logs, pid files, sockets, keyrings) lives in
# $STACK_DIR (default /var/lib/imaged-stack, override with IMAGED_STACK_DIR);
# nothing touches /etc/ceph, /var/lib/ceph, /var/run/ceph or the system
# RabbitMQ node.  Safe to re-run at any time: running services are reused,
# dead ones restarted from their state, unusable state wiped and recreated.
# Every wait has a timeout.  See tools/stack/README.
# Lists of pids are plain space-separated words here, split on purpose.
# shellcheck disable=SC2086,SC2116,SC2015
set -Eeuo pipefail
# Anything that fails without its own message still says what and where.
trap 'echo "[stack] ERROR: \"$BASH_COMMAND\" failed (exit $?) at ${BASH_SOURCE[0]}:$LINENO" >&2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Debian's interpreter on purpose: it has python3-rados/rbd, and the pyenv
# python3 that may be first on PATH has not.
PY=/usr/bin/python3

STACK_DIR=${IMAGED_STACK_DIR:-/var/lib/imaged-stack}
case $STACK_DIR in
    /*) ;;
    *) echo "stack.sh: IMAGED_STACK_DIR must be an absolute path" >&2; exit 2 ;;
esac
if [[ $STACK_DIR =~ [[:space:]] ]]; then
    echo "stack.sh: STACK_DIR must not contain whitespace" >&2; exit 2
fi
ENV_FILE=$STACK_DIR/stack.env

# Debian packages we need.  gcc/python3-dev: pip builds uWSGI from source;
# systemd: the tests check the unit file with systemd-analyze.
APT_PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd
              rabbitmq-server qemu-utils python3-venv python3-dev gcc curl
              procps iproute2 systemd)
# What goes into Glance's venv; the string is the install stamp, so changing
# it (e.g. IMAGED_STACK_GLANCE_PIP="glance==30.0.0 uwsgi pyOpenSSL ...")
# rebuilds the venv.  pyOpenSSL: Debian's 23.x breaks against the newer
# cryptography that pip brings in.
GLANCE_PIP=${IMAGED_STACK_GLANCE_PIP:-"glance uwsgi pyOpenSSL python-glanceclient"}
VENV=$STACK_DIR/glance-venv
VENV_STAMP=$VENV/.stack-installed

# --- Ceph -------------------------------------------------------------------
CEPH_DIR=$STACK_DIR/ceph
CEPH_CONF=$CEPH_DIR/ceph.conf
CEPH_RUN=$CEPH_DIR/run
CEPH_LOGDIR=$CEPH_DIR/log
CEPH_FSID_FILE=$CEPH_DIR/fsid
CEPH_READY=$CEPH_DIR/cluster.ready   # written last by ceph_bootstrap
MON_ID=a
MGR_ID=x
OSD_ID=0
MON_DATA=$CEPH_DIR/mon/ceph-$MON_ID
MGR_DATA=$CEPH_DIR/mgr/ceph-$MGR_ID
OSD_DATA=$CEPH_DIR/osd/ceph-$OSD_ID
# BlueStore on a sparse file outside the OSD dir: benchmarks write several
# GiB, which memstore would keep in RAM.  The file only grows as data is
# written.
OSD_BLOCK=$CEPH_DIR/osd/ceph-$OSD_ID.block
OSD_BLOCK_SIZE=$((64 * 1024 * 1024 * 1024))
OSD_MEMORY_TARGET=$((1280 * 1024 * 1024))
ADMIN_KEYRING=$CEPH_DIR/ceph.client.admin.keyring
GLANCE_CEPH_USER=glance
GLANCE_KEYRING=$CEPH_DIR/ceph.client.$GLANCE_CEPH_USER.keyring
IMAGED_CEPH_USER=imaged
IMAGED_KEYRING=$CEPH_DIR/ceph.client.$IMAGED_CEPH_USER.keyring
IMAGES_POOL=images
VMS_POOL=vms
MON_ADDRS='[v2:127.0.0.1:3300,v1:127.0.0.1:6789]'

# --- RabbitMQ ---------------------------------------------------------------
RMQ_DIR=$STACK_DIR/rabbitmq
RMQ_NODENAME=imaged@localhost    # not rabbit@<host>: never the system node
RMQ_PORT=5672
RMQ_LOG=$RMQ_DIR/log/$RMQ_NODENAME.log
TRANSPORT_URL="rabbit://guest:guest@127.0.0.1:$RMQ_PORT/"

# --- Glance -----------------------------------------------------------------
GL_DIR=$STACK_DIR/glance
GL_ETC=$GL_DIR/etc
GL_RUN=$GL_DIR/run
GL_LOGDIR=$GL_DIR/log
GLANCE_LOG=$GL_LOGDIR/glance-api.log
GLANCE_ACCESS_LOG=$GL_LOGDIR/access.log
GLANCE_PORT=9292
GLANCE_URL=http://127.0.0.1:$GLANCE_PORT
# uWSGI workers: each thread serves one request (a whole image transfer).
GLANCE_PROCESSES=${IMAGED_STACK_GLANCE_PROCESSES:-2}
GLANCE_THREADS=${IMAGED_STACK_GLANCE_THREADS:-16}
GL_DB=$GL_DIR/glance.sqlite
GL_DB_STAMP=$GL_DIR/db.synced        # glance version the DB was synced with
GL_FSID_FILE=$GL_DIR/ceph-fsid       # cluster the DB's rbd images live in

# Timeouts (seconds).
T_CEPH=${IMAGED_STACK_CEPH_TIMEOUT:-90}
T_RABBIT=${IMAGED_STACK_RABBIT_TIMEOUT:-90}
T_GLANCE=${IMAGED_STACK_GLANCE_TIMEOUT:-90}
T_STOP=${IMAGED_STACK_STOP_TIMEOUT:-30}

CEPH_RECREATED=0   # set by ceph_bootstrap

# ============================================================== helpers =====
# tools/stack/probe.py: bounded readiness checks (see there).
probe() { /usr/bin/python3 "$HERE/stack/probe.py" "$@" 9>&-; }

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

# Our daemons are found by their exact command line (which contains a path
# inside STACK_DIR), not by pid files alone: pid files may be stale or
# corrupt after a killed run, and a daemon whose pid file is gone must still
# be found, reused or stopped.  Prints matching pids (none: empty).
pids_matching() {
    local re=$1 p st
    for p in $(pgrep -f -- "$re" || true); do
        # zombies (dead, not yet reaped) do not count
        st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null || true)
        if [ -n "$st" ] && [ "$st" != Z ]; then echo "$p"; fi
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

# ============================================================== install =====
apt_missing() {
    local p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
            echo "$p"
    done
}

install_apt() {
    local missing
    missing=$(apt_missing)
    [ -n "$missing" ] || return 0
    log "installing Debian packages: $(echo $missing)"
    export DEBIAN_FRONTEND=noninteractive
    # Lock::Timeout: wait (bounded) for another apt instead of failing.
    apt-get -o DPkg::Lock::Timeout=600 update -q >&2 ||
        die "apt-get update failed"
    # shellcheck disable=SC2086
    # With recommends: ceph-mgr's modules and the like come that way.
    apt-get -o DPkg::Lock::Timeout=600 install -y -q $missing >&2 ||
        die "apt-get install failed"
    missing=$(apt_missing)
    [ -z "$missing" ] || die "still missing after apt-get install: $missing"
}

venv_stamp_text() {
    printf 'python=%s\npip=%s\n' "$($PY -c 'import sys; print(sys.version.split()[0])')" "$GLANCE_PIP"
}

install_glance_venv() {
    if [ -f "$VENV_STAMP" ] && [ -x "$VENV/bin/uwsgi" ] && [ -x "$VENV/bin/glance-manage" ] &&
        "$VENV/bin/python" -c '' 2>/dev/null &&
        diff -q <(venv_stamp_text) <(sed -n '1,2p' "$VENV_STAMP") >/dev/null; then
        return 0
    fi
    # No stamp = never built, half-built (killed pip) or built for another
    # spec: start from scratch rather than trust it.
    log "building Glance venv in $VENV ($GLANCE_PIP)"
    rm -rf "$VENV"
    mkdir -p "$STACK_DIR"
    # --system-site-packages: Glance's RBD store needs Debian's rados/rbd.
    $PY -m venv --system-site-packages "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install --disable-pip-version-check -U $GLANCE_PIP 9>&- \
        >"$STACK_DIR/glance-venv-pip.log" 2>&1 ||
        { show_tail "$STACK_DIR/glance-venv-pip.log"; die "pip install into $VENV failed"; }
    "$VENV/bin/python" -c 'import glance, rbd, rados' ||
        die "Glance venv is broken (cannot import glance/rbd/rados)"
    { venv_stamp_text; "$VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null |
        grep -iE '^(glance|glance.store|uwsgi|pyopenssl|python-glanceclient|cryptography)==' || true
    } >"$VENV_STAMP"
    log "Glance venv ready: $(grep -i '^glance==' "$VENV_STAMP" || true)"
}

do_install() {
    install_apt
    install_glance_venv
}

# ================================================================= ceph =====
MON_RE="^/usr/bin/ceph-mon -c $(re_escape "$CEPH_CONF") --id $MON_ID( |\$)"
MGR_RE="^/usr/bin/ceph-mgr -c $(re_escape "$CEPH_CONF") --id $MGR_ID( |\$)"
OSD_RE="^/usr/bin/ceph-osd -c $(re_escape "$CEPH_CONF") --id $OSD_ID( |\$)"
# (also matches a --mkfs left running by a killed stack.sh)
ANY_CEPH_RE="^/usr/bin/ceph-(mon|mgr|osd) -c $(re_escape "$CEPH_CONF") "

# The ceph CLI waits client_mount_timeout (300 s) for a dead mon, and a
# command whose mon dies under it forever: always bound both.  9>&-: an
# orphan of a killed stack.sh must not keep holding its lock.
cephc() {
    timeout 60 ceph -c "$CEPH_CONF" --connect-timeout 20 --rados_mon_op_timeout=30 "$@" 9>&-
}
rbdc() {
    timeout 60 rbd -c "$CEPH_CONF" --client_mount_timeout=20 --rados_mon_op_timeout=30 \
        --rados_osd_op_timeout=30 "$@" 9>&-
}

# The mgr loads every module it finds (~0.2-0.6 s of Python each); give it
# a directory with just the ones Pacific always runs (a missing one would
# be a MGR_MODULE_ERROR) and what they import.
MGR_MODULES=(mgr_module.py mgr_util.py balancer crash devicehealth orchestrator
             pg_autoscaler progress rbd_support status telemetry volumes)
ceph_mgr_modules() {
    local d=$CEPH_DIR/mgr-modules m
    mkdir -p "$d"
    for m in "${MGR_MODULES[@]}"; do
        ln -sfn "/usr/share/ceph/mgr/$m" "$d/$m"
    done
}

ceph_write_conf() {
    local fsid
    fsid=$(cat "$CEPH_FSID_FILE")
    mkdir -p "$CEPH_RUN" "$CEPH_LOGDIR" "$CEPH_DIR/crash" "$CEPH_DIR/mon" \
        "$CEPH_DIR/mgr" "$CEPH_DIR/osd"
    ceph_mgr_modules
    # Explicit paths everywhere so nothing falls back to /etc/ceph,
    # /var/lib/ceph, /var/run/ceph or /var/log/ceph.
    write_file "$CEPH_CONF" <<EOF
# Generated by tools/stack.sh -- edits are overwritten on the next start.
[global]
fsid = $fsid
mon host = $MON_ADDRS
mon initial members = $MON_ID
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $CEPH_RUN
crash dir = $CEPH_DIR/crash
# One OSD, no replication.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# This disk is often < 30% free: no MON_DISK_LOW warning.
mon data avail warn = 1

[mon]
mon data = $MON_DATA
keyring = $MON_DATA/keyring
admin socket = $CEPH_RUN/\$cluster-\$name.asok
pid file = $CEPH_RUN/\$cluster-\$name.pid
log file = $CEPH_LOGDIR/\$cluster-\$name.log
mon cluster log file = $CEPH_LOGDIR/ceph.log
# Default 1 s makes every pool/auth change take seconds.
paxos propose interval = 0.05
mgr initial modules =

[mgr]
mgr data = $MGR_DATA
# Only the always-on modules: loading all 26 takes ~7 s on each start.
mgr module path = $CEPH_DIR/mgr-modules
keyring = $MGR_DATA/keyring
admin socket = $CEPH_RUN/\$cluster-\$name.asok
pid file = $CEPH_RUN/\$cluster-\$name.pid
log file = $CEPH_LOGDIR/\$cluster-\$name.log

[osd]
osd data = $OSD_DATA
keyring = $OSD_DATA/keyring
admin socket = $CEPH_RUN/\$cluster-\$name.asok
pid file = $CEPH_RUN/\$cluster-\$name.pid
log file = $CEPH_LOGDIR/\$cluster-\$name.log
osd objectstore = bluestore
bluestore block path = $OSD_BLOCK
bluestore block create = true
bluestore block size = $OSD_BLOCK_SIZE
osd memory target = $OSD_MEMORY_TARGET
# Mark ourselves down at the mon on SIGTERM, so a stop/start is noticed
# at once instead of after heartbeat timeouts.
osd fast shutdown = false
# Start-up time: the OSD opens and closes the block file once per op shard
# and every close waits out one aio poll interval (default 5 x 250 ms).
osd op num shards = 2
osd op num threads per shard = 2
bdev aio poll ms = 50

[client]
# A dead mon must not block a client's connect for the default 300 s.
client mount timeout = 30

[client.admin]
keyring = $ADMIN_KEYRING

[client.$GLANCE_CEPH_USER]
keyring = $GLANCE_KEYRING

[client.$IMAGED_CEPH_USER]
keyring = $IMAGED_KEYRING
EOF
}

# Is the on-disk cluster complete enough to restart from?  Anything less
# (a bootstrap that was killed half-way, a deleted mon store or OSD) is
# wiped and recreated: with one mon and one OSD there is nothing to
# rebuild it from.
ceph_state_usable() {
    local f
    [ -s "$CEPH_READY" ] && [ -s "$CEPH_FSID_FILE" ] || return 1
    [ "$(cat "$CEPH_READY")" = "$(cat "$CEPH_FSID_FILE")" ] || return 1
    for f in "$MON_DATA/keyring" "$MON_DATA/kv_backend" "$MON_DATA/store.db/CURRENT" \
        "$ADMIN_KEYRING" "$OSD_DATA/whoami" "$OSD_DATA/keyring" "$OSD_DATA/fsid" \
        "$OSD_DATA/ceph_fsid" "$OSD_DATA/ready" "$OSD_BLOCK"; do
        [ -s "$f" ] || { log "ceph state incomplete: $f is missing or empty"; return 1; }
    done
    [ "$(cat "$OSD_DATA/ceph_fsid")" = "$(cat "$CEPH_FSID_FILE")" ] || {
        log "ceph state inconsistent: OSD belongs to another cluster"; return 1; }
}

ceph_kill_all() {
    kill_matching ceph-osd "$OSD_RE" 60
    kill_matching ceph-mgr "$MGR_RE"
    kill_matching ceph-mon "$MON_RE"
    kill_matching "ceph daemons" "$ANY_CEPH_RE"
}

# probe_ceph TIMEOUT WATCH_RE... -- PROBE-ARGS: wait until the probe passes,
# failing at once if a watched daemon dies.
probe_ceph() {
    local timeout=$1; shift
    local watch=() p
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        p=$(wait_pids "$1" 3)
        [ -n "$p" ] || { log "no process matches $1: daemon died"; return 1; }
        for p in $p; do watch+=(--watch-pid "$p"); done
        shift
    done
    shift
    probe ceph --conf "$CEPH_CONF" --timeout "$timeout" "${watch[@]}" "$@"
}

# ceph_launch TYPE ID: start one of our Ceph daemons.  The command returns
# once the daemon has initialised and forked into the background, non-zero
# if it could not (e.g. cannot open its store: the caller decides whether
# that means the state is unusable).  Bounded: a daemon that takes more than
# 5 min is an error, never a reason to wipe.
ceph_launch() {
    local type=$1 id=$2 rc=0
    log "starting ceph-$type.$id"
    timeout 300 "/usr/bin/ceph-$type" -c "$CEPH_CONF" --id "$id" 9>&- </dev/null \
        >>"$CEPH_LOGDIR/ceph-$type.$id.out" 2>&1 || rc=$?
    [ $rc != 0 ] || return 0
    show_tail "$CEPH_LOGDIR/ceph-$type.$id.out" 10
    [ $rc != 124 ] || die "ceph-$type.$id did not finish starting within 300 s (logs in $CEPH_LOGDIR)"
    return 1
}

mon_launch() {
    [ -z "$(pids_matching "$MON_RE")" ] || return 0
    require_port_free 3300 "$MON_RE"
    require_port_free 6789 "$MON_RE"
    ceph_launch mon "$MON_ID"
}

mgr_launch() {
    [ -z "$(pids_matching "$MGR_RE")" ] || return 0
    if [ ! -s "$MGR_DATA/keyring" ]; then
        # Cheap to re-create from the mon (e.g. someone deleted it).
        mkdir -p "$MGR_DATA"
        cephc auth get-or-create "mgr.$MGR_ID" mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
            -o "$MGR_DATA/keyring" >/dev/null
    fi
    ceph_launch mgr "$MGR_ID"
}

osd_launch() {
    [ -z "$(pids_matching "$OSD_RE")" ] || return 0
    ceph_launch osd "$OSD_ID"
}

ceph_show_logs() {
    local d
    for d in mon.$MON_ID mgr.$MGR_ID osd.$OSD_ID; do
        show_tail "$CEPH_LOGDIR/ceph-$d.log" 15
    done
}

# Users for Glance and imaged, with exactly these caps, and their keyrings.
ceph_ensure_users() {
    local user caps
    for user in "$GLANCE_CEPH_USER" "$IMAGED_CEPH_USER"; do
        if [ "$user" = "$GLANCE_CEPH_USER" ]; then
            caps=(mon 'profile rbd' osd "profile rbd pool=$IMAGES_POOL" mgr "profile rbd pool=$IMAGES_POOL")
        else
            # imaged clones images/<id>@snap into vms: full rbd on vms,
            # read-only (which includes the clone attach/detach calls) on
            # images.
            caps=(mon 'profile rbd'
                osd "profile rbd pool=$VMS_POOL, profile rbd-read-only pool=$IMAGES_POOL"
                mgr "profile rbd pool=$VMS_POOL")
        fi
        cephc auth get-or-create "client.$user" "${caps[@]}" >/dev/null 2>&1 ||
            cephc auth caps "client.$user" "${caps[@]}" >/dev/null
        cephc auth get "client.$user" -o "$CEPH_DIR/ceph.client.$user.keyring.tmp" 2>/dev/null
        mv -f "$CEPH_DIR/ceph.client.$user.keyring.tmp" "$CEPH_DIR/ceph.client.$user.keyring"
    done
}

ceph_ensure_pools() {
    local pool
    for pool in "$@"; do
        log "creating pool $pool"
        cephc osd pool create "$pool" 8 8 replicated >/dev/null 2>&1
        # Tags the pool for rbd and writes its rbd_directory object.
        rbdc pool init "$pool"
    done
}

# A brand-new cluster: mon, mgr, OSD on a sparse BlueStore file, pools,
# users.  cluster.ready is written only at the very end, so a bootstrap
# that is killed half-way is redone from scratch on the next start.
ceph_bootstrap() {
    local fsid uuid id mkeyring
    log "creating a new Ceph cluster in $CEPH_DIR"
    CEPH_RECREATED=1
    ceph_kill_all
    rm -rf "$CEPH_DIR"
    mkdir -p "$CEPH_DIR"
    fsid=$(cat /proc/sys/kernel/random/uuid)
    echo "$fsid" >"$CEPH_FSID_FILE"
    ceph_write_conf
    mkdir -p "$MON_DATA" "$MGR_DATA" "$OSD_DATA"

    # -- mon
    mkeyring=$CEPH_DIR/mon-mkfs.keyring
    ceph-authtool --create-keyring "$mkeyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$ADMIN_KEYRING" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$mkeyring" --import-keyring "$ADMIN_KEYRING" >/dev/null
    monmaptool --create --clobber --fsid "$fsid" --addv "$MON_ID" "$MON_ADDRS" \
        "$CEPH_DIR/monmap" >/dev/null
    # --mkfs on an existing store exits 0 ("already exists"), hence the
    # explicit check below.
    /usr/bin/ceph-mon -c "$CEPH_CONF" --id "$MON_ID" --mkfs --monmap "$CEPH_DIR/monmap" \
        --keyring "$mkeyring" >>"$CEPH_LOGDIR/ceph-mon.$MON_ID.out" 2>&1 ||
        { show_tail "$CEPH_LOGDIR/ceph-mon.$MON_ID.out"; die "ceph-mon --mkfs failed"; }
    [ -s "$MON_DATA/store.db/CURRENT" ] || die "ceph-mon --mkfs made no store in $MON_DATA"
    rm -f "$mkeyring" "$CEPH_DIR/monmap"
    mon_launch || die "ceph-mon failed to start"
    probe_ceph 30 "$MON_RE" -- --mon || { ceph_show_logs; die "new ceph-mon did not form a quorum"; }

    # -- mgr
    mgr_launch || die "ceph-mgr failed to start"

    # -- osd
    uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(cephc osd new "$uuid")
    [ "$id" = "$OSD_ID" ] || die "ceph osd new gave id '$id', expected $OSD_ID"
    cephc auth get-or-create "osd.$OSD_ID" mon 'allow profile osd' mgr 'allow profile osd' \
        osd 'allow *' -o "$OSD_DATA/keyring" >/dev/null
    rm -f "$OSD_BLOCK"
    log "creating BlueStore OSD on sparse file $OSD_BLOCK ($((OSD_BLOCK_SIZE >> 30)) GiB)"
    timeout 300 /usr/bin/ceph-osd -c "$CEPH_CONF" --id "$OSD_ID" --mkfs --osd-uuid "$uuid" 9>&- \
        >>"$CEPH_LOGDIR/ceph-osd.$OSD_ID.out" 2>&1 ||
        { show_tail "$CEPH_LOGDIR/ceph-osd.$OSD_ID.out"; show_tail "$CEPH_LOGDIR/ceph-osd.$OSD_ID.log"
          die "ceph-osd --mkfs failed"; }
    osd_launch || die "ceph-osd failed to start"
    probe_ceph "$T_CEPH" "$MON_RE" "$OSD_RE" -- --osd "$OSD_ID" ||
        { ceph_show_logs; die "new ceph-osd.$OSD_ID did not come up"; }

    # -- pools and users
    ceph_ensure_pools "$IMAGES_POOL" "$VMS_POOL"
    ceph_ensure_users
    echo "$fsid" >"$CEPH_READY"
    log "Ceph cluster $fsid created"
}

# Start the wanted daemons (" mon mgr osd ...") from the existing state and
# wait until they answer.  Returns 1 if the mon or the OSD dies or never
# answers: their stores are the cluster, so the state is unusable.  The mgr
# keeps no state worth saving: its failure is an error, never a reason to
# wipe anything.
ceph_start_daemons() {
    local want=$1 mgr_pid probe_args=(--mon) watch=("$MON_RE")
    mon_launch || return 1
    if [[ $want == *" mgr "* ]]; then
        mgr_launch || die "ceph-mgr.$MGR_ID failed to start (logs in $CEPH_LOGDIR)"
    fi
    if [[ $want == *" osd "* ]]; then
        osd_launch || return 1
        probe_args+=(--osd "$OSD_ID"); watch+=("$OSD_RE")
    fi
    probe_ceph "$T_CEPH" "${watch[@]}" -- "${probe_args[@]}" || return 1
    if [[ $want == *" mgr "* ]]; then
        mgr_pid=$(wait_pids "$MGR_RE" 3 | cut -d' ' -f1)
        [ -n "$mgr_pid" ] && probe_ceph "$T_CEPH" "$MGR_RE" -- --mgr-pid "$mgr_pid" ||
            { show_tail "$CEPH_LOGDIR/ceph-mgr.$MGR_ID.log"; die "ceph-mgr.$MGR_ID did not become active"; }
    fi
}

# ceph_start COMPONENTS...: start mon/mgr/osd (a subset; "pools" also makes
# sure pools and keyrings exist and PGs are active), reusing running daemons.
ceph_start() {
    local want=" $* " missing
    if ! ceph_state_usable; then
        ceph_bootstrap
        want=" mon mgr osd pools "
    fi
    ceph_write_conf
    if ! ceph_start_daemons "$want"; then
        ceph_show_logs
        # Daemons that die or never answer on existing state: the state is
        # unusable (e.g. a corrupt store).  Recreate once, then give up.
        log "Ceph did not come up from its existing state: wiping and recreating the cluster"
        ceph_bootstrap
        want=" mon mgr osd pools "
        ceph_start_daemons "$want" || { ceph_show_logs; die "Ceph did not come up (logs in $CEPH_LOGDIR)"; }
    fi
    if [[ $want == *" pools "* ]]; then
        missing=$(probe missing-pools --conf "$CEPH_CONF" --pools "$IMAGES_POOL,$VMS_POOL")
        # shellcheck disable=SC2086
        [ -z "$missing" ] || ceph_ensure_pools $missing
        if [ ! -s "$GLANCE_KEYRING" ] || [ ! -s "$IMAGED_KEYRING" ]; then
            ceph_ensure_users
        fi
        # All PGs active and both pools answer I/O.
        probe_ceph "$T_CEPH" "$MON_RE" "$OSD_RE" -- --mgr --osd "$OSD_ID" --pools "$IMAGES_POOL,$VMS_POOL" ||
            { ceph_show_logs; die "Ceph pools $IMAGES_POOL/$VMS_POOL are not serving"; }
    fi
}

ceph_stop() {  # ceph_stop COMPONENTS... (osd first: it reports to the mon)
    local want=" $* "
    [[ $want != *" osd "* ]] || kill_matching ceph-osd.$OSD_ID "$OSD_RE" 60
    [[ $want != *" mgr "* ]] || kill_matching ceph-mgr.$MGR_ID "$MGR_RE"
    [[ $want != *" mon "* ]] || kill_matching ceph-mon.$MON_ID "$MON_RE"
    return 0
}

# ============================================================= rabbitmq =====
# Matches our node's beam.smp: its command line names our $HOME, and
# "-s rabbit boot" tells it from rabbitmqctl's beam (same $HOME).
RMQ_RE="/beam\.smp .* -home $(re_escape "$RMQ_DIR/home") .*-s rabbit boot( |\$)"

rmq_env() {
    # The CLI tools (rabbitmqctl) and the server must agree on node name and
    # Erlang cookie ($HOME/.erlang.cookie): both come from here.
    export RABBITMQ_CONF_ENV_FILE=$RMQ_DIR/rabbitmq-env.conf
    export RABBITMQ_NODENAME=$RMQ_NODENAME
    export HOME=$RMQ_DIR/home
}

rabbit_write_conf() {
    mkdir -p "$RMQ_DIR/home" "$RMQ_DIR/log" "$RMQ_DIR/mnesia"
    chmod 700 "$RMQ_DIR/home"
    write_file "$RMQ_DIR/rabbitmq-env.conf" <<EOF
# Generated by tools/stack.sh
NODENAME=$RMQ_NODENAME
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=$RMQ_PORT
MNESIA_BASE=$RMQ_DIR/mnesia
LOG_BASE=$RMQ_DIR/log
PID_FILE=$RMQ_DIR/rabbitmq.pid
CONFIG_FILE=$RMQ_DIR/rabbitmq.conf
ADVANCED_CONFIG_FILE=$RMQ_DIR/advanced.config
ENABLED_PLUGINS_FILE=$RMQ_DIR/enabled_plugins
EOF
    write_file "$RMQ_DIR/rabbitmq.conf" <<EOF
# Generated by tools/stack.sh
listeners.tcp.default = 127.0.0.1:$RMQ_PORT
loopback_users.guest = true
log.file.level = info
EOF
    write_file "$RMQ_DIR/enabled_plugins" <<<'[].'
}

# apt may have started the system node (rabbit@<host>) on 5672: stop it
# through the service manager rather than fight over the port.
rabbit_neutralise_system_node() {
    local holder
    holder=$(port_holder "$RMQ_PORT")
    [ -n "$holder" ] || return 0
    grep -qx -- "${holder%% *}" <<<"$(pids_matching "$RMQ_RE")" && return 0
    log "port $RMQ_PORT is held by $holder (the system RabbitMQ?); stopping the system service"
    if [ -d /run/systemd/system ]; then
        systemctl disable --now rabbitmq-server >&2 || true
    else
        timeout 60 service rabbitmq-server stop >&2 || true
    fi
    local end=$((SECONDS + 30))
    while [ -n "$(port_holder "$RMQ_PORT")" ] && [ $SECONDS -lt $end ]; do sleep 0.5; done
    require_port_free "$RMQ_PORT" "$RMQ_RE"
}

rabbit_launch() {
    rabbit_write_conf
    if [ -n "$(pids_matching "$RMQ_RE")" ]; then return 0; fi
    rabbit_neutralise_system_node
    log "starting rabbitmq ($RMQ_NODENAME)"
    # A second -detached while one runs "succeeds" but the new node dies;
    # we only get here when none of ours runs.
    (rmq_env; cd "$RMQ_DIR" && timeout 60 /usr/lib/rabbitmq/bin/rabbitmq-server -detached 9>&- </dev/null) \
        >>"$RMQ_DIR/log/startup.log" 2>&1 ||
        { show_tail "$RMQ_DIR/log/startup.log"; return 1; }
}

rabbit_wait_once() {
    local pids
    pids=$(wait_pids "$RMQ_RE" 15)
    [ -n "$pids" ] || { log "rabbitmq node process did not appear"; return 1; }
    # shellcheck disable=SC2046
    probe amqp --port "$RMQ_PORT" --timeout "$T_RABBIT" $(printf -- '--watch-pid %s ' $pids)
}

rabbit_start() {
    rabbit_launch && rabbit_wait_once && return 0
    show_tail "$RMQ_LOG" 30
    show_tail "$RMQ_DIR/log/startup.log" 10
    # Most likely a broken mnesia dir (e.g. killed during its first boot):
    # the broker's state is disposable for tests, so start afresh.
    log "rabbitmq did not come up from its state: wiping $RMQ_DIR/mnesia and retrying"
    kill_matching rabbitmq "$RMQ_RE"
    rm -rf "$RMQ_DIR/mnesia"
    rabbit_launch && rabbit_wait_once ||
        { show_tail "$RMQ_LOG" 30; die "rabbitmq did not come up (logs in $RMQ_DIR/log)"; }
}

rabbit_stop() {
    # SIGTERM is a clean shutdown for Erlang/OTP >= 20.
    kill_matching rabbitmq "$RMQ_RE"
}

# =============================================================== glance =====
UWSGI_RE="^$(re_escape "$VENV/bin/uwsgi") --ini $(re_escape "$GL_ETC/uwsgi.ini")\$"

glance_write_conf() {
    local fsid
    mkdir -p "$GL_ETC" "$GL_RUN" "$GL_LOGDIR" "$GL_DIR/images" "$GL_DIR/staging" \
        "$GL_DIR/tasks" "$GL_DIR/locks"
    fsid=$(cat "$CEPH_FSID_FILE" 2>/dev/null || true)
    FILES_CHANGED=0
    write_file "$GL_ETC/glance-api-paste.ini" <"$VENV/etc/glance/glance-api-paste.ini"
    write_file "$GL_ETC/glance_wsgi.py" <"$HERE/stack/glance_wsgi.py"
    write_file "$GL_ETC/glance-api.conf" <<EOF
# Generated by tools/stack.sh -- edits are overwritten on the next start.
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $GLANCE_PORT
enabled_backends = ceph:rbd, local:file
show_image_direct_url = True
show_multiple_locations = True
# Under uWSGI sys.executable is not a Python.
[wsgi]
python_interpreter = $VENV/bin/python

[database]
connection = sqlite:///$GL_DB
# Concurrent writers: see tools/stack/glance_wsgi.py.  No fsync per commit: a disposable test DB (safe against killed
# processes, not against a host crash).
sqlite_synchronous = False

[paste_deploy]
# No Keystone: the unauthenticated pipeline (every request is admin).
flavor =
config_file = $GL_ETC/glance-api-paste.ini

[oslo_policy]
policy_file = $GL_ETC/policy.yaml

[oslo_concurrency]
lock_path = $GL_DIR/locks

[oslo_messaging_notifications]
driver = noop

[glance_store]
default_backend = ceph

[ceph]
store_description = Ceph RBD (pool $IMAGES_POOL, cluster $fsid)
rbd_store_pool = $IMAGES_POOL
rbd_store_user = $GLANCE_CEPH_USER
rbd_store_ceph_conf = $CEPH_CONF
rbd_store_chunk_size = 8
rados_connect_timeout = 10

[local]
store_description = Local files
filesystem_store_datadir = $GL_DIR/images/

# Without these Glance writes under /var/lib/glance.
[os_glance_staging_store]
filesystem_store_datadir = $GL_DIR/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $GL_DIR/tasks/
EOF
    # Without Keystone every request has no roles; make it admin.
    write_file "$GL_ETC/policy.yaml" <<EOF
# Generated by tools/stack.sh: no Keystone, everybody is admin.
"context_is_admin": ""
EOF
    # http-socket: the workers speak HTTP themselves (no router process
    # copying every byte).  Threads x processes for ~16+ concurrent
    # transfers; WSGI responses are streamed as Glance yields chunks;
    # no post-buffering/limit-post/harakiri, and a long socket timeout, so
    # multi-GiB transfers are neither buffered nor cut off.
    write_file "$GL_ETC/uwsgi.ini" <<EOF
; Generated by tools/stack.sh
[uwsgi]
strict = true
master = true
http-socket = 127.0.0.1:$GLANCE_PORT
listen = 128
; glance.wsgi.api:application plus fixes: tools/stack/glance_wsgi.py
pythonpath = $GL_ETC
module = glance_wsgi:application
virtualenv = $VENV
env = OS_GLANCE_CONFIG_DIR=$GL_ETC
processes = $GLANCE_PROCESSES
threads = $GLANCE_THREADS
enable-threads = true
single-interpreter = true
lazy-apps = true
thunder-lock = true
need-app = true
die-on-term = true
worker-reload-mercy = 10
buffer-size = 65535
post-buffering = 0
; glanceclient sends chunked bodies in 1 MiB parts: more than the default
; 1 MiB limit per part ("unable to receive chunked part", HTTP 500).
chunked-input-limit = 67108864
limit-post = 0
harakiri = 0
socket-timeout = 3600
add-header = Connection: close
pidfile = $GL_RUN/uwsgi.pid
daemonize = $GLANCE_LOG
log-master = true
req-logger = file:$GLANCE_ACCESS_LOG
logger = file:$GLANCE_LOG
log-format = %(addr) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(size) %(msecs)ms
EOF
}

glance_version() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("glance"))'; }

glance_wipe_state() {
    rm -rf "$GL_DB" "$GL_DB_STAMP" "$GL_FSID_FILE" "$GL_DIR/images" "$GL_DIR/staging" "$GL_DIR/tasks"
    mkdir -p "$GL_DIR/images" "$GL_DIR/staging" "$GL_DIR/tasks"
}

# Does the DB (and the cluster it points into) still make sense?
glance_state_ok() {
    local fsid
    fsid=$(cat "$CEPH_FSID_FILE" 2>/dev/null || true)
    if [ -s "$GL_FSID_FILE" ] && [ -n "$fsid" ] && [ "$(cat "$GL_FSID_FILE")" != "$fsid" ]; then
        log "Ceph cluster was recreated: Glance's images are gone with it"
        return 1
    fi
    # No stamp: no db_sync ever finished, whatever DB file is there is
    # half-made.
    [ -s "$GL_DB_STAMP" ] || { [ ! -e "$GL_DB" ] || { log "Glance DB was never fully synced"; return 1; }; return 0; }
    $PY - "$GL_DB" <<'EOF' || { log "Glance DB $GL_DB is unusable"; return 1; }
import sqlite3, sys
c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=10)
assert c.execute("pragma quick_check").fetchone()[0] == "ok"
c.execute("select count(*) from images").fetchone()
EOF
}

glance_db_sync() {
    local v
    v=$(glance_version)
    if [ "$(cat "$GL_DB_STAMP" 2>/dev/null)" = "$v" ]; then return 0; fi
    log "glance-manage db_sync (glance $v)"
    timeout 300 "$VENV/bin/glance-manage" --config-file "$GL_ETC/glance-api.conf" db_sync 9>&- \
        >>"$GL_LOGDIR/glance-manage.log" 2>&1 ||
        { show_tail "$GL_LOGDIR/glance-manage.log"; die "glance-manage db_sync failed"; }
    echo "$v" >"$GL_DB_STAMP"
    cat "$CEPH_FSID_FILE" >"$GL_FSID_FILE" 2>/dev/null || true
}

# The uWSGI master's pid, if the pid file names a live master of ours.
glance_master_pid() {
    local pid
    pid=$(cat "$GL_RUN/uwsgi.pid" 2>/dev/null | tr -dc 0-9) || true
    [ -n "$pid" ] && grep -qx -- "$pid" <<<"$(pids_matching "$UWSGI_RE")" && echo "$pid"
    return 0
}

glance_start() {
    local pids master
    [ -x "$VENV/bin/uwsgi" ] || die "no Glance venv: run tools/stack.sh install"
    glance_write_conf
    if ! glance_state_ok; then
        log "resetting Glance's state (DB and local images)"
        kill_matching glance "$UWSGI_RE"
        glance_wipe_state
    fi
    master=$(glance_master_pid)
    if [ -z "$master" ] && [ -n "$(pids_matching "$UWSGI_RE")" ]; then
        # Workers whose master was killed: they exit by themselves within
        # seconds, but may still hold the port.
        log "killing orphaned uWSGI workers"
        # shellcheck disable=SC2046
        kill -KILL $(pids_matching "$UWSGI_RE") 2>/dev/null || true
        kill_matching "glance workers" "$UWSGI_RE" 10
    fi
    if [ -n "$master" ] && [ "$FILES_CHANGED" = 1 ]; then
        log "Glance's configuration changed: restarting it"
        kill_matching glance "$UWSGI_RE"
        master=
    fi
    if [ -n "$master" ]; then
        # Running: reuse if it answers (give a starting one a little time).
        if probe http --url "$GLANCE_URL/v2/images" --timeout 20 --watch-pid "$master"; then
            [ -s "$GL_FSID_FILE" ] || cat "$CEPH_FSID_FILE" >"$GL_FSID_FILE" 2>/dev/null || true
            return 0
        fi
        log "glance is running but not answering: restarting it"
        kill_matching glance "$UWSGI_RE"
    fi
    glance_db_sync
    [ -s "$GL_FSID_FILE" ] || cat "$CEPH_FSID_FILE" >"$GL_FSID_FILE" 2>/dev/null || true
    require_port_free "$GLANCE_PORT" "$UWSGI_RE"
    log "starting glance (uWSGI on $GLANCE_URL)"
    rm -f "$GL_RUN/uwsgi.pid"
    echo "--- $(date -Is) stack.sh start" >>"$GLANCE_LOG"
    (cd "$GL_DIR" && timeout 60 "$VENV/bin/uwsgi" --ini "$GL_ETC/uwsgi.ini" 9>&- </dev/null) >>"$GLANCE_LOG" 2>&1 ||
        { show_tail "$GLANCE_LOG"; die "uwsgi failed to start"; }
    pids=$(wait_pids "$UWSGI_RE" 5)
    [ -n "$pids" ] || { show_tail "$GLANCE_LOG"; die "uwsgi exited at once"; }
    # shellcheck disable=SC2046
    probe http --url "$GLANCE_URL/v2/images" --timeout "$T_GLANCE" $(printf -- '--watch-pid %s ' $pids) ||
        { show_tail "$GLANCE_LOG" 40; die "glance did not answer GET /v2/images"; }
}

glance_stop() {
    kill_matching glance "$UWSGI_RE"
}

# ================================================================== env =====
write_env() {
    mkdir -p "$STACK_DIR"
    write_file "$ENV_FILE" <<EOF
# Generated by tools/stack.sh: KEY=value lines, sourceable by sh.
STACK_DIR=$STACK_DIR
CEPH_CONF=$CEPH_CONF
CEPH_FSID=$(cat "$CEPH_FSID_FILE" 2>/dev/null || true)
CEPH_ADMIN_KEYRING=$ADMIN_KEYRING
CEPH_GLANCE_USER=$GLANCE_CEPH_USER
CEPH_GLANCE_KEYRING=$GLANCE_KEYRING
CEPH_IMAGED_USER=$IMAGED_CEPH_USER
CEPH_IMAGED_KEYRING=$IMAGED_KEYRING
CEPH_IMAGES_POOL=$IMAGES_POOL
CEPH_VMS_POOL=$VMS_POOL
CEPH_LOG_DIR=$CEPH_LOGDIR
TRANSPORT_URL=$TRANSPORT_URL
RABBITMQ_LOG=$RMQ_LOG
GLANCE_URL=$GLANCE_URL
GLANCE_ACCESS_LOG=$GLANCE_ACCESS_LOG
GLANCE_LOG=$GLANCE_LOG
GLANCE_VENV=$VENV
EOF
}

# ================================================================ status ====
status_line() { printf '%-10s %-5s %s\n' "$1" "$2" "$3"; }

cmd_status() {
    local bad=0 pids health
    pids=$(pids_matching "$MON_RE")
    if [ -n "$pids" ] && health=$(probe ceph --conf "$CEPH_CONF" --timeout 3 --mon --health 2>/dev/null); then
        status_line ceph-mon up "pid $(echo $pids); $health"
    else status_line ceph-mon down "${pids:+pid $(echo $pids), not answering}"; bad=1; fi

    # Without a mon the mgr and OSD cannot be asked: report by process only.
    local mon_ok=$((1 - bad))

    pids=$(pids_matching "$MGR_RE")
    if [ -z "$pids" ]; then status_line ceph-mgr down ""; bad=1
    elif [ $mon_ok = 0 ]; then status_line ceph-mgr "?" "pid $(echo $pids); cannot check without the mon"
    elif probe ceph --conf "$CEPH_CONF" --timeout 3 --mgr >/dev/null 2>&1; then
        status_line ceph-mgr up "pid $(echo $pids)"
    else status_line ceph-mgr down "pid $(echo $pids), not available"; bad=1; fi

    pids=$(pids_matching "$OSD_RE")
    if [ -z "$pids" ]; then status_line ceph-osd down ""; bad=1
    elif [ $mon_ok = 0 ]; then status_line ceph-osd "?" "pid $(echo $pids); cannot check without the mon"
    elif probe ceph --conf "$CEPH_CONF" --timeout 5 --osd "$OSD_ID" \
        --pools "$IMAGES_POOL,$VMS_POOL" >/dev/null 2>&1; then
        status_line ceph-osd up "pid $(echo $pids); pools $IMAGES_POOL,$VMS_POOL ok"
    else status_line ceph-osd down "pid $(echo $pids), not serving"; bad=1; fi

    pids=$(pids_matching "$RMQ_RE")
    if [ -n "$pids" ] && probe amqp --port "$RMQ_PORT" --timeout 3 >/dev/null 2>&1; then
        status_line rabbitmq up "pid $(echo $pids); $TRANSPORT_URL"
    else status_line rabbitmq down "${pids:+pid $(echo $pids), not answering AMQP}"; bad=1; fi

    pids=$(glance_master_pid)
    if [ -n "$pids" ] && probe http --url "$GLANCE_URL/v2/images" --timeout 5 >/dev/null 2>&1; then
        status_line glance up "pid $pids (uWSGI master); $GLANCE_URL"
    else
        pids=$(pids_matching "$UWSGI_RE")
        status_line glance down "${pids:+pid $(echo $pids), not answering}"; bad=1
    fi
    return $bad
}

# ================================================================= main =====
usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Serialise start/stop/install: two CI steps must not race on one STACK_DIR.
# fd 9 holds the lock; daemons are launched with 9>&- so they never inherit
# it.  A stack.sh that was killed can still leave children holding it (a
# ceph CLI inside $(...) lives on until its timeout): when the recorded
# owner is dead, end those leftovers instead of waiting for them.
LOCK=$STACK_DIR/.lock
take_lock() {
    local owner p
    mkdir -p "$STACK_DIR"
    exec 9>>"$LOCK"
    if ! flock -n 9; then
        owner=$(cat "$LOCK.owner" 2>/dev/null || true)
        if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
            log "the stack.sh holding $LOCK (pid $owner) is gone: ending what it left running"
            for p in /proc/[0-9]*; do
                p=${p#/proc/}
                [ "$p" != $$ ] && [ "$p" != "$BASHPID" ] || continue
                if [ "$(readlink "/proc/$p/fd/9" 2>/dev/null)" = "$LOCK" ]; then
                    kill -KILL "$p" 2>/dev/null || true
                fi
            done
        else
            log "waiting for another tools/stack.sh (pid ${owner:-?}) to finish"
        fi
        flock -w 900 9 || die "another tools/stack.sh holds $LOCK for 15 min"
    fi
    echo $$ >"$LOCK.owner"
}

check_targets() {
    local t
    for t in "$@"; do
        case $t in
            all|ceph|ceph-mon|ceph-mgr|ceph-osd|rabbitmq|glance) ;;
            *) echo "stack.sh: unknown target '$t'" >&2; usage ;;
        esac
    done
}

cmd_start() {
    local t ceph_want="" do_rabbit=0 do_glance=0
    [ $# -gt 0 ] || set -- all
    check_targets "$@"
    for t in "$@"; do
        case $t in
            all) ceph_want+=" mon mgr osd pools"; do_rabbit=1; do_glance=1 ;;
            ceph) ceph_want+=" mon mgr osd pools" ;;
            ceph-mon) ceph_want+=" mon" ;;
            ceph-mgr) ceph_want+=" mon mgr" ;;   # needs the mon
            ceph-osd) ceph_want+=" mon osd" ;;   # needs the mon
            rabbitmq) do_rabbit=1 ;;
            glance) do_glance=1 ;;
        esac
    done
    take_lock
    do_install
    # RabbitMQ boots in the background (~5 s) while Ceph and Glance start.
    if [ $do_rabbit = 1 ]; then rabbit_launch || true; fi
    if [ -n "$ceph_want" ]; then
        # shellcheck disable=SC2086
        ceph_start $ceph_want
    fi
    # A recreated cluster has none of the images a running Glance knows
    # about: reset Glance too, even when it was not asked for.
    if [ $do_glance = 1 ] || { [ "$CEPH_RECREATED" = 1 ] && [ -n "$(pids_matching "$UWSGI_RE")" ]; }; then
        glance_start
    fi
    if [ $do_rabbit = 1 ]; then rabbit_start; fi
    write_env
    if [ -n "$ceph_want" ]; then
        log "ceph: $(probe ceph --conf "$CEPH_CONF" --timeout 10 --mon --health 2>&1 | tail -n1)"
    fi
    log "started [$*] in $(elapsed)s; environment: $ENV_FILE"
}

cmd_stop() {
    local t ceph_want="" do_rabbit=0 do_glance=0
    [ $# -gt 0 ] || set -- all
    check_targets "$@"
    for t in "$@"; do
        case $t in
            all) ceph_want+=" mon mgr osd"; do_rabbit=1; do_glance=1 ;;
            ceph) ceph_want+=" mon mgr osd" ;;
            ceph-mon) ceph_want+=" mon" ;;
            ceph-mgr) ceph_want+=" mgr" ;;
            ceph-osd) ceph_want+=" osd" ;;
            rabbitmq) do_rabbit=1 ;;
            glance) do_glance=1 ;;
        esac
    done
    take_lock
    # Clients first, then the OSD before the mon it reports to.
    if [ $do_glance = 1 ]; then glance_stop; fi
    if [ $do_rabbit = 1 ]; then rabbit_stop; fi
    if [ -n "$ceph_want" ]; then
        # shellcheck disable=SC2086
        ceph_stop $ceph_want
    fi
    log "stopped [$*] in $(elapsed)s"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
        install) take_lock; do_install; log "install done in $(elapsed)s" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        restart) cmd_stop "$@"; cmd_start "$@" ;;
        status) if cmd_status; then exit 0; else exit 1; fi ;;
        env)
            [ -f "$ENV_FILE" ] || die "$ENV_FILE does not exist yet: run tools/stack.sh start"
            if [ "${1:-}" = --path ]; then echo "$ENV_FILE"
            else echo "# $ENV_FILE"; cat "$ENV_FILE"; fi ;;
        rabbitmqctl)
            # rabbitmqctl bound to our node (name, cookie, config).
            rmq_env; exec timeout 120 /usr/lib/rabbitmq/bin/rabbitmqctl "$@" ;;
        ceph|rbd|rados)
            # The Ceph CLIs as client.admin on our cluster.
            exec timeout 300 "$cmd" -c "$CEPH_CONF" "$@" ;;
        -h|--help|help) usage ;;
        *) usage ;;
    esac
}

main "$@"
