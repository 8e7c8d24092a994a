# Ceph for tools/stack.sh: a one-node cluster (mon, mgr, one OSD: BlueStore
# on a sparse file, or memstore with IMAGED_STACK_CEPH_OBJECTSTORE=memstore),
# pools for Glance and imaged, cephx users for both.
# Sourced by tools/stack.sh after lib.sh.  Entry points: ceph_start,
# ceph_stop, ceph_status, ceph_env.
# shellcheck shell=bash disable=SC2086,SC2116,SC2015

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
# memstore: the OSD keeps every object in RAM, so Ceph is no longer the
# slowest part of a download on this machine (as in a cloud, where the OSDs
# are other machines).  Its store is saved into $OSD_DATA only by a clean
# stop; $MEMSTORE_SAVED says one happened.  An OSD that ended any other way
# would come back with stale data: the cluster is recreated instead.
OSD_OBJECTSTORE=${IMAGED_STACK_CEPH_OBJECTSTORE:-bluestore}
case $OSD_OBJECTSTORE in
    bluestore|memstore) ;;
    *) die "IMAGED_STACK_CEPH_OBJECTSTORE must be bluestore or memstore, not '$OSD_OBJECTSTORE'" ;;
esac
# What the cluster was made with (no file: bluestore, as before the option).
CEPH_OBJECTSTORE_FILE=$CEPH_DIR/objectstore
# Room the OSD reports; RAM is used only as data is written, but about
# twice over (Ceph 16.2: 12 GiB of objects took the OSD to 23 GB of RSS and
# the OOM killer), so it stays well under the machine's RAM.  The bench's
# 4 GiB download (18 GiB asked) is then skipped on this cluster.
MEMSTORE_BYTES=${IMAGED_STACK_CEPH_MEMSTORE_BYTES:-$((8 * 1024 * 1024 * 1024))}
MEMSTORE_SAVED=$CEPH_DIR/osd/memstore.saved
ADMIN_KEYRING=$CEPH_DIR/ceph.client.admin.keyring
GLANCE_CEPH_USER=glance
GLANCE_KEYRING=$CEPH_DIR/ceph.client.$GLANCE_CEPH_USER.keyring
IMAGED_CEPH_USER=imaged
IMAGED_KEYRING=$CEPH_DIR/ceph.client.$IMAGED_CEPH_USER.keyring
IMAGES_POOL=images
VMS_POOL=vms
# The mon's ports (msgr2, legacy); the OSD and mgr bind in 6800-7300.
MON_PORT=${IMAGED_STACK_CEPH_MON_PORT:-3300}
MON_V1_PORT=${IMAGED_STACK_CEPH_MON_V1_PORT:-6789}
check_port IMAGED_STACK_CEPH_MON_PORT "$MON_PORT"
check_port IMAGED_STACK_CEPH_MON_V1_PORT "$MON_V1_PORT"
MON_ADDRS="[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_V1_PORT]"
T_CEPH=${IMAGED_STACK_CEPH_TIMEOUT:-90}

CEPH_RECREATED=0   # set by ceph_bootstrap

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
# a directory with just the ones Pacific and Reef always run (a missing one
# would be a MGR_MODULE_ERROR) and what they import (object_format.py:
# Reef's, absent from Pacific).
MGR_MODULES=(mgr_module.py mgr_util.py object_format.py balancer crash devicehealth
             orchestrator pg_autoscaler progress rbd_support status telemetry volumes)
ceph_mgr_modules() {
    local d=$CEPH_DIR/mgr-modules m
    mkdir -p "$d"
    for m in "${MGR_MODULES[@]}"; do
        [ -e "/usr/share/ceph/mgr/$m" ] || { rm -f "$d/$m"; continue; }
        if [ "$m" = mgr_util.py ] && [ "${IMAGED_STACK_CEPH_MGR_LAZY_BCRYPT:-1}" = 1 ] &&
                grep -qx 'import bcrypt' "/usr/share/ceph/mgr/$m"; then
            mgr_util_lazy_bcrypt <"/usr/share/ceph/mgr/$m" | write_file "$d/$m"
        else
            [ ! -f "$d/$m" ] || [ -L "$d/$m" ] || rm -f "$d/$m"
            ln -sfn "/usr/share/ceph/mgr/$m" "$d/$m"
        fi
    done
}

# Ceph's mgr_util.py (imported by every module) as installed, but importing
# bcrypt on first use instead of at import: only password_hash() uses it
# (the dashboard's, which this stack does not load), and where bcrypt is a
# PyO3 module (Debian 13) importing it in the mgr's sub-interpreters fails,
# and with it every module.
mgr_util_lazy_bcrypt() {
    sed -e '/^import bcrypt$/{
s/.*/class _BcryptOnFirstUse:  # written by imaged tools\/stack\/ceph.sh/
a\
    def __getattr__(self, name):\
        import bcrypt\
        return getattr(bcrypt, name)\
\
\
bcrypt = _BcryptOnFirstUse()
}'
}

# A mgr whose Python modules cannot load on this machine.  Ceph 18 on
# Debian 13: every module imports mgr_util, which imports bcrypt, and
# Debian 13's python3-bcrypt (like its python3-cryptography) is built with
# PyO3, which refuses to load in the mgr's sub-interpreters ("PyO3 modules
# do not yet support subinterpreters"; ceph_mgr_modules works around it).
# Measured there with the installed mgr_util: the mgr still becomes active,
# its C++ part serving PG and usage figures, with every module failed
# (HEALTH_WARN MGR_MODULE_DEPENDENCY): the stack says what is lost and goes
# on.  A mgr that shows the error and never becomes active is stopped, and
# the stack carries on without one: RBD needs only the mon and the OSD.
# $MGR_UNUSABLE records that verdict with the versions it was made for: a
# ceph-mgr or python3-bcrypt upgrade tries again.
MGR_UNUSABLE=$CEPH_DIR/mgr.unusable
MGR_PYO3_ERROR="PyO3 modules do not yet support subinterpreters"
MGR_LOG=$CEPH_LOGDIR/ceph-mgr.$MGR_ID.log
mgr_versions() {
    dpkg-query -W -f='${Package}=${Version} ' ceph-mgr python3-bcrypt python3-cryptography 2>/dev/null || true
}
mgr_usable() {  # (a verdict made for other versions does not count)
    [ -s "$MGR_UNUSABLE" ] && [ "$(sed -n 1p "$MGR_UNUSABLE")" = "$(mgr_versions)" ] && return 1
    return 0
}
mgr_modules_message() {
    log "WARNING: ceph-mgr.$MGR_ID cannot load its Python modules on this machine: $MGR_PYO3_ERROR"
    log "(each module runs in a sub-interpreter, and bcrypt or cryptography, which they import,"
    log "are PyO3 modules here).  Lost: the rbd_support module (rbd trash purge schedule, rbd task"
    log "add), the pg autoscaler, balancer, progress, crash, telemetry and status modules."
    log "RBD and imaged need none of them.  See tools/stack/README \"without a Ceph mgr\"."
}
mgr_unusable_message() {
    mgr_modules_message
    log "The mgr did not become active either: carrying on WITHOUT a Ceph mgr (the mon and the"
    log "OSD are all RBD needs).  Also lost: PG and usage figures (ceph -s, ceph df); health"
    log "says there is no active mgr."
}
mgr_log_has_pyo3_error() {  # mgr_log_has_pyo3_error OFFSET
    tail -c +"$(($1 + 1))" "$MGR_LOG" 2>/dev/null | grep -qF "$MGR_PYO3_ERROR"
}
# mgr_wait_active PID LOG_OFFSET: 0 once the mgr is active, 2 when its log
# (from LOG_OFFSET on) shows it cannot load its modules, 1 otherwise (dead,
# or not active within $T_CEPH s).
mgr_wait_active() {
    local pid=$1 offset=$2 end=$((SECONDS + T_CEPH))
    while :; do
        probe_ceph 5 "$MGR_RE" -- --mgr-pid "$pid" >/dev/null 2>&1 && return 0
        if mgr_log_has_pyo3_error "$offset"; then
            # Its modules load one after another before it goes active
            # (measured: active 20 s after its start): 30 s, then give up.
            [ $SECONDS -ge $((end - T_CEPH + 30)) ] && return 2
        fi
        [ $SECONDS -lt $end ] && [ -n "$(pids_matching "$MGR_RE")" ] || return 1
    done
}

ceph_objectstore_conf() {
    if [ "$OSD_OBJECTSTORE" = memstore ]; then
        echo "osd objectstore = memstore"
        echo "memstore device bytes = $MEMSTORE_BYTES"
    else
        echo "osd objectstore = bluestore"
        echo "bluestore block path = $OSD_BLOCK"
        echo "bluestore block create = true"
        echo "bluestore block size = $OSD_BLOCK_SIZE"
        echo "osd memory target = $OSD_MEMORY_TARGET"
    fi
}

# Where the OSD loads its object classes (cls_rbd, cls_lock: RBD needs
# them).  Debian 13's Ceph 18 has a relative default
# ("lib/x86_64-linux-gnu/rados-classes"), right only for a daemon whose
# working directory is /, which ours is not: always an absolute path here.
osd_class_dir() {
    local d
    d=$(ceph-conf -c /dev/null --show-config-value osd_class_dir 2>/dev/null || true)
    case $d in /*) ;; ?*) d=/$d ;; esac
    if [ -z "$d" ] || ! [ -e "$d/libcls_rbd.so" ]; then
        for d in /usr/lib/*/rados-classes /usr/lib64/rados-classes /usr/lib/rados-classes ""; do
            [ -z "$d" ] || [ -e "$d/libcls_rbd.so" ] && break
        done
    fi
    [ -n "$d" ] || die "no rados-classes directory with libcls_rbd.so (is ceph-osd installed?)"
    echo "$d"
}

ceph_write_conf() {
    local fsid class_dir
    fsid=$(cat "$CEPH_FSID_FILE")
    class_dir=$(osd_class_dir)
    mkdir -p "$CEPH_RUN" "$CEPH_LOGDIR" "$CEPH_DIR/crash" "$CEPH_DIR/mon" \
        "$CEPH_DIR/mgr" "$CEPH_DIR/osd"
    ceph_mgr_modules
    # Explicit paths everywhere so nothing falls back to /etc/ceph,
    # /var/lib/ceph, /var/run/ceph or /var/log/ceph.
    write_file "$CEPH_CONF" <<EOF
# Generated by tools/stack/ceph.sh -- edits are overwritten on the next start.
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
osd class dir = $class_dir
$(ceph_objectstore_conf)
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
    [ "$(cat "$CEPH_OBJECTSTORE_FILE" 2>/dev/null || echo bluestore)" = "$OSD_OBJECTSTORE" ] || {
        log "ceph state was made for another objectstore than $OSD_OBJECTSTORE"; return 1; }
    for f in "$MON_DATA/keyring" "$MON_DATA/kv_backend" "$MON_DATA/store.db/CURRENT" \
        "$ADMIN_KEYRING" "$OSD_DATA/whoami" "$OSD_DATA/keyring" "$OSD_DATA/fsid" \
        "$OSD_DATA/ceph_fsid" "$OSD_DATA/ready" \
        $([ "$OSD_OBJECTSTORE" = memstore ] || echo "$OSD_BLOCK"); do
        [ -s "$f" ] || { log "ceph state incomplete: $f is missing or empty"; return 1; }
    done
    if [ "$OSD_OBJECTSTORE" = memstore ] && [ ! -e "$MEMSTORE_SAVED" ] &&
        [ -z "$(pids_matching "$OSD_RE")" ]; then
        log "ceph state lost: the memstore OSD ended without saving its store"; return 1
    fi
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
    require_port_free "$MON_PORT" "$MON_RE"
    require_port_free "$MON_V1_PORT" "$MON_RE"
    ceph_launch mon "$MON_ID"
}

mgr_launch() {
    [ -z "$(pids_matching "$MGR_RE")" ] || return 0
    mgr_usable || return 0
    MGR_LOG_OFFSET=$(stat -c %s "$MGR_LOG" 2>/dev/null || echo 0)
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
    # From now on only a clean stop leaves a memstore worth loading.
    rm -f "$MEMSTORE_SAVED"
    ceph_launch osd "$OSD_ID"
}

# Stop the OSD; a memstore OSD that exited on SIGTERM has saved its store.
osd_stop() {
    local timeout=60
    [ "$OSD_OBJECTSTORE" != memstore ] || timeout=180  # it writes its RAM out
    [ -n "$(pids_matching "$OSD_RE")" ] || return 0
    kill_matching ceph-osd.$OSD_ID "$OSD_RE" $timeout
    if [ "$OSD_OBJECTSTORE" = memstore ] && [ "$KILLED" = 0 ]; then
        touch "$MEMSTORE_SAVED"
    fi
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
            # imaged clones images/<id>@snap into vms (read-only would do:
            # it includes the clone attach/detach calls), but writes
            # snapshots into images (strategy clone, as Nova's direct
            # snapshots do) and removes a trashed parent, and its trashed
            # snapshot, once its last clone is gone: profile rbd on both.
            caps=(mon 'profile rbd'
                osd "profile rbd pool=$VMS_POOL, profile rbd pool=$IMAGES_POOL"
                mgr "profile rbd pool=$VMS_POOL, profile rbd pool=$IMAGES_POOL")
        fi
        cephc auth get-or-create "client.$user" "${caps[@]}" >/dev/null 2>&1 ||
            cephc auth caps "client.$user" "${caps[@]}" >/dev/null
        cephc auth get "client.$user" -o "$CEPH_DIR/ceph.client.$user.keyring.tmp" 2>/dev/null
        mv -f "$CEPH_DIR/ceph.client.$user.keyring.tmp" "$CEPH_DIR/ceph.client.$user.keyring"
    done
}

# RBD clone format 2 (clones of unprotected snapshots, parents that can go
# to the trash while clones live: Glance can delete an image with root
# disks) needs every client to be mimic or newer.
ceph_ensure_clone_format_2() {
    cephc osd set-require-min-compat-client mimic >/dev/null 2>&1 ||
        die "cannot set require-min-compat-client mimic (an older client is connected?)"
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
    if [ "$OSD_OBJECTSTORE" = memstore ]; then
        log "creating memstore OSD (up to $((MEMSTORE_BYTES >> 30)) GiB of RAM)"
    else
        log "creating BlueStore OSD on sparse file $OSD_BLOCK ($((OSD_BLOCK_SIZE >> 30)) GiB)"
    fi
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
    ceph_ensure_clone_format_2
    echo "$OSD_OBJECTSTORE" >"$CEPH_OBJECTSTORE_FILE"
    echo "$fsid" >"$CEPH_READY"
    log "Ceph cluster $fsid created"
}

# Start the wanted daemons (" mon mgr osd ...") from the existing state and
# wait until they answer.  Returns 1 if the mon or the OSD dies or never
# answers: their stores are the cluster, so the state is unusable.  The mgr
# keeps no state worth saving: its failure is an error, never a reason to
# wipe anything.
ceph_start_daemons() {
    local want=$1 mgr_pid rc probe_args=(--mon) watch=("$MON_RE")
    mon_launch || return 1
    if [[ $want == *" mgr "* ]]; then
        mgr_launch || die "ceph-mgr.$MGR_ID failed to start (logs in $CEPH_LOGDIR)"
    fi
    if [[ $want == *" osd "* ]]; then
        osd_launch || return 1
        probe_args+=(--osd "$OSD_ID"); watch+=("$OSD_RE")
    fi
    probe_ceph "$T_CEPH" "${watch[@]}" -- "${probe_args[@]}" || return 1
    if [[ $want == *" mgr "* ]] && mgr_usable; then
        mgr_pid=$(wait_pids "$MGR_RE" 3 | cut -d' ' -f1)
        rc=1
        if [ -n "$mgr_pid" ]; then
            rc=0; mgr_wait_active "$mgr_pid" "${MGR_LOG_OFFSET:-0}" || rc=$?
        fi
        if [ $rc = 0 ]; then
            # (only for a mgr started now: an older one's log may be stale)
            if [ -n "${MGR_LOG_OFFSET:-}" ] && mgr_log_has_pyo3_error "$MGR_LOG_OFFSET"; then
                mgr_modules_message
            fi
            return 0
        fi
        if [ $rc = 2 ]; then
            kill_matching ceph-mgr.$MGR_ID "$MGR_RE"
            mgr_versions >"$MGR_UNUSABLE"
            echo "$MGR_PYO3_ERROR" >>"$MGR_UNUSABLE"
            mgr_unusable_message
            return 0
        fi
        show_tail "$MGR_LOG"; die "ceph-mgr.$MGR_ID did not become active"
    elif [[ $want == *" mgr "* ]]; then
        log "no ceph-mgr on this machine ($MGR_UNUSABLE: its modules cannot load): mon and OSD only"
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
        # Idempotent: a stack made before a change of caps gets them.
        ceph_ensure_users
        ceph_ensure_clone_format_2
        # All PGs active and both pools answer I/O.
        # (PG states come from the mgr: without one, the data path alone.)
        probe_ceph "$T_CEPH" "$MON_RE" "$OSD_RE" -- $(mgr_usable && echo --mgr) \
            --osd "$OSD_ID" --pools "$IMAGES_POOL,$VMS_POOL" ||
            { ceph_show_logs; die "Ceph pools $IMAGES_POOL/$VMS_POOL are not serving"; }
    fi
}

ceph_stop() {  # ceph_stop COMPONENTS... (osd first: it reports to the mon)
    local want=" $* "
    [[ $want != *" osd "* ]] || osd_stop
    [[ $want != *" mgr "* ]] || kill_matching ceph-mgr.$MGR_ID "$MGR_RE"
    [[ $want != *" mon "* ]] || kill_matching ceph-mon.$MON_ID "$MON_RE"
    return 0
}


# One status line per daemon; returns 1 if any is down.
ceph_status() {
    local bad=0 pids health mon_ok
    pids=$(pids_matching "$MON_RE")
    if [ -n "$pids" ] && health=$(probe ceph --conf "$CEPH_CONF" --timeout 3 --mon --health 2>/dev/null); then
        status_line ceph-mon up "pid $(echo $pids); $health"
    else status_line ceph-mon down "${pids:+pid $(echo $pids), not answering}"; bad=1; fi

    # Without a mon the mgr and OSD cannot be asked: report by process only.
    mon_ok=$((1 - bad))

    pids=$(pids_matching "$MGR_RE")
    if [ -z "$pids" ] && ! mgr_usable; then
        status_line ceph-mgr none "its modules cannot load on this machine ($MGR_UNUSABLE); RBD does without"
    elif [ -z "$pids" ]; then status_line ceph-mgr down ""; bad=1
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
    return $bad
}

ceph_env() {
    cat <<EOV
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
CEPH_OBJECTSTORE=$OSD_OBJECTSTORE
CEPH_MGR=$(mgr_usable && echo yes || echo none)
EOV
}
