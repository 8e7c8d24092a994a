#!/bin/bash
# Local service stack for imaged's tests and benchmarks: a one-node Ceph
# cluster, RabbitMQ, Keystone, Barbican and Glance (behind Keystone; RBD +
# file stores; signed images' certificates in Barbican),
# and a second Glance with the file store only (glance-file).
#
#   tools/stack.sh install [packages]   (packages: the Debian packages only)
#   tools/stack.sh start  [all|ceph|ceph-mon|ceph-mgr|ceph-osd|rabbitmq|keystone|barbican|glance|glance-file ...]
#   tools/stack.sh stop   [all|ceph|ceph-mon|ceph-mgr|ceph-osd|rabbitmq|keystone|barbican|glance|glance-file ...]
#   tools/stack.sh status
#   tools/stack.sh env [--path]
#   tools/stack.sh rabbitmqctl|ceph|rbd|rados ARGS...   (bound to our stack)
#
# Everything (configs, data, logs, pid files, sockets, keyrings) lives in
# $STACK_DIR (default /var/lib/imaged-stack, override with IMAGED_STACK_DIR);
# nothing touches /etc/ceph, /var/lib/ceph, /var/run/ceph or the system
# RabbitMQ node.  Safe to re-run at any time: running services are reused,
# dead ones restarted from their state, unusable state wiped and recreated.
# Every wait has a timeout.  Each service has its own file in tools/stack/
# (ceph.sh, rabbitmq.sh, keystone.sh, glance.sh; shared helpers in lib.sh).
# See tools/stack/README.
# shellcheck disable=SC2086,SC2116,SC2015
set -Eeuo pipefail
# Anything that fails without its own message still says what and where.
trap 'echo "[stack] ERROR: \"$BASH_COMMAND\" failed (exit $?) at ${BASH_SOURCE[0]}:$LINENO" >&2' ERR

STACK_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")/stack" && pwd)

STACK_DIR=${IMAGED_STACK_DIR:-/var/lib/imaged-stack}
case $STACK_DIR in
    /*) ;;
    *) echo "stack.sh: IMAGED_STACK_DIR must be an absolute path" >&2; exit 2 ;;
esac
if [[ $STACK_DIR =~ [[:space:]] ]]; then
    echo "stack.sh: STACK_DIR must not contain whitespace" >&2; exit 2
fi
ENV_FILE=$STACK_DIR/stack.env

# Knobs (IMAGED_STACK_*, see tools/stack/README) may also be kept in
# $STACK_DIR/stack.conf, one NAME=value a line, so that every later
# stack.sh on that directory (a test's "stop glance") uses the same ports;
# the environment wins.
if [ -f "$STACK_DIR/stack.conf" ]; then
    while IFS='=' read -r knob value; do
        [ -n "${!knob+x}" ] || export "$knob=$value"
    done < <(grep -E '^IMAGED_STACK_[A-Z0-9_]+=' "$STACK_DIR/stack.conf" | grep -v '^IMAGED_STACK_DIR=')
fi

# shellcheck source=stack/lib.sh
. "$STACK_LIB/lib.sh"
# shellcheck source=stack/ceph.sh
. "$STACK_LIB/ceph.sh"
# shellcheck source=stack/rabbitmq.sh
. "$STACK_LIB/rabbitmq.sh"
# shellcheck source=stack/keystone.sh
. "$STACK_LIB/keystone.sh"
# shellcheck source=stack/glance.sh
. "$STACK_LIB/glance.sh"
# shellcheck source=stack/barbican.sh
. "$STACK_LIB/barbican.sh"

# Debian packages we need.  gcc/python3-dev: pip builds uWSGI from source;
# systemd: the tests check the unit file with systemd-analyze;
# qemu-block-extra: qemu-img's rbd driver (imaged's download helper);
# fdisk (sfdisk), gdisk (sgdisk), xorriso: the unit tests make MBR and GPT
# disks and ISOs with them, as qemu-img makes the other formats.
APT_PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd
              rabbitmq-server qemu-utils qemu-block-extra python3-venv python3-dev
              gcc curl procps iproute2 systemd fdisk gdisk xorriso)
# The boot tests (the scenario suite's, and the functional lazy first disk's
# tests/functional/test_lazy_boot.py) build a disk
# (imaged/tempest_plugin/scenario/bootdisk.py) with busybox, syslinux on FAT
# (dosfstools, mtools) and a kernel taken from its .deb (apt-get download,
# never installed), and boot it in QEMU; these come without their
# recommends (qemu-system-x86's would add a GTK GUI).
APT_PACKAGES_NO_RECOMMENDS=(qemu-system-x86 busybox-static syslinux
                            syslinux-common dosfstools mtools)

# ============================================================== install =====
apt_missing() {  # apt_missing [PACKAGE..]: default all of ours
    local p
    [ $# -gt 0 ] || set -- "${APT_PACKAGES[@]}" "${APT_PACKAGES_NO_RECOMMENDS[@]}"
    for p in "$@"; do
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
    # With recommends: ceph-mgr's modules and the like come that way.
    missing=$(apt_missing "${APT_PACKAGES[@]}")
    if [ -n "$missing" ]; then
        apt-get -o DPkg::Lock::Timeout=600 install -y -q $missing >&2 ||
            die "apt-get install failed"
    fi
    missing=$(apt_missing "${APT_PACKAGES_NO_RECOMMENDS[@]}")
    if [ -n "$missing" ]; then
        apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
            $missing >&2 || die "apt-get install failed"
    fi
    missing=$(apt_missing)
    [ -z "$missing" ] || die "still missing after apt-get install: $missing"
}

do_install() {
    check_release
    install_apt
    glance_install
    keystone_install   # its version follows Glance's
}

# ================================================================== env =====
write_env() {
    mkdir -p "$STACK_DIR"
    {
        echo "# Generated by tools/stack.sh: KEY=value lines, sourceable by sh."
        echo "STACK_DIR=$STACK_DIR"
        ceph_env
        rabbit_env
        keystone_env
        barbican_env
        glance_env
    } | write_file "$ENV_FILE"
}

# ================================================================ status ====
cmd_status() {
    local bad=0
    ceph_status || bad=1
    rabbit_status || bad=1
    keystone_status || bad=1
    barbican_status || bad=1
    glance_status || bad=1
    glance_use file
    glance_status || bad=1
    glance_use main
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

# parse_targets start|stop TARGET..: sets CEPH_WANT, DO_RABBIT, DO_KEYSTONE,
# DO_BARBICAN, DO_GLANCE, DO_GLANCE_FILE.
parse_targets() {
    local cmd=$1 t
    shift
    CEPH_WANT="" DO_RABBIT=0 DO_KEYSTONE=0 DO_BARBICAN=0 DO_GLANCE=0 DO_GLANCE_FILE=0
    for t in "$@"; do
        case $t in
            all) CEPH_WANT+=" mon mgr osd"; DO_RABBIT=1; DO_KEYSTONE=1; DO_BARBICAN=1; DO_GLANCE=1
                 DO_GLANCE_FILE=1
                 [ "$cmd" = stop ] || CEPH_WANT+=" pools" ;;
            ceph) CEPH_WANT+=" mon mgr osd"; [ "$cmd" = stop ] || CEPH_WANT+=" pools" ;;
            ceph-mon) CEPH_WANT+=" mon" ;;
            # (starting the mgr or the OSD needs the mon)
            ceph-mgr) [ "$cmd" = stop ] || CEPH_WANT+=" mon"; CEPH_WANT+=" mgr" ;;
            ceph-osd) [ "$cmd" = stop ] || CEPH_WANT+=" mon"; CEPH_WANT+=" osd" ;;
            rabbitmq) DO_RABBIT=1 ;;
            keystone) DO_KEYSTONE=1 ;;
            barbican) DO_BARBICAN=1 ;;
            glance) DO_GLANCE=1 ;;
            glance-file) DO_GLANCE_FILE=1 ;;
            *) echo "stack.sh: unknown target '$t'" >&2; usage ;;
        esac
    done
}

cmd_start() {
    [ $# -gt 0 ] || set -- all
    parse_targets start "$@"
    take_lock
    do_install
    # RabbitMQ boots in the background (~5 s) while the others start.
    if [ $DO_RABBIT = 1 ]; then rabbit_launch || true; fi
    if [ -n "$CEPH_WANT" ]; then
        ceph_start $CEPH_WANT
    fi
    # Glance needs Keystone (and its users) to answer anything: make sure
    # of it (cheap when it runs and is set up).
    if [ $DO_KEYSTONE = 1 ] || [ $DO_BARBICAN = 1 ] || [ $DO_GLANCE = 1 ] ||
        [ $DO_GLANCE_FILE = 1 ]; then
        keystone_start
    fi
    # Before Glance: it reads signed images' certificates from Barbican.
    # Its venv is built only when it is started (the quick start does not).
    if [ $DO_BARBICAN = 1 ]; then barbican_install; barbican_start; fi
    # A recreated cluster has none of the images a running Glance knows
    # about: reset Glance too, even when it was not asked for.
    if [ $DO_GLANCE = 1 ] || { [ "$CEPH_RECREATED" = 1 ] && [ -n "$(pids_matching "$UWSGI_RE")" ]; }; then
        glance_start
    fi
    if [ $DO_GLANCE_FILE = 1 ]; then
        glance_use file
        glance_start
        glance_use main
    fi
    if [ $DO_RABBIT = 1 ]; then rabbit_start; fi
    write_env
    if [ -n "$CEPH_WANT" ]; then
        log "ceph: $(probe ceph --conf "$CEPH_CONF" --timeout 10 --mon --health 2>&1 | tail -n1)"
    fi
    log "started [$*] in $(elapsed)s; environment: $ENV_FILE"
}

cmd_stop() {
    [ $# -gt 0 ] || set -- all
    parse_targets stop "$@"
    take_lock
    # Clients first, then the OSD before the mon it reports to.
    if [ $DO_GLANCE = 1 ]; then glance_stop; fi
    if [ $DO_GLANCE_FILE = 1 ]; then glance_use file; glance_stop; glance_use main; fi
    if [ $DO_BARBICAN = 1 ]; then barbican_stop; fi
    if [ $DO_KEYSTONE = 1 ]; then keystone_stop; fi
    if [ $DO_RABBIT = 1 ]; then rabbit_stop; fi
    if [ -n "$CEPH_WANT" ]; then
        ceph_stop $CEPH_WANT
    fi
    log "stopped [$*] in $(elapsed)s"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
        install)
            case ${1:-} in
                # What tools/venv.sh and the unit tests need; the services'
                # venvs are then built by "start" (run-tests.sh does it in
                # the background while the lint and unit stages run).
                packages) take_lock; check_release; install_apt ;;
                "") take_lock; do_install; barbican_install ;;
                *) echo "stack.sh: install takes 'packages' or nothing, not '$1'" >&2; usage ;;
            esac
            log "install ${1:-}${1:+ }done in $(elapsed)s" ;;
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
