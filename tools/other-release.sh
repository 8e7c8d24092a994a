#!/usr/bin/env bash
# The README's commands on a fresh machine of another Debian release, from
# this one: a root made with debootstrap, what a fresh machine of this
# workplace has copied in, a clone of this checkout's HEAD inside, then
# tools/quickstart.sh and tools/run-tests.sh run in it.
#
#   tools/other-release.sh [--release trixie|bookworm] [--reuse] [STEP...]
#   tools/other-release.sh [--release R] --shell      (a shell in that root)
#
# STEP: quickstart, tests (tools/run-tests.sh: every stage), or some of
# unit, functional, scenario, bench, soak (tools/run-tests.sh with only
# those stages). Default: quickstart tests. --release: default the other of
# Debian 12 (bookworm) and 13 (trixie).
#
# Two phases, because this machine reaches the package registries only
# through its own network:
#   1. with this machine's network: the Debian packages and the Python
#      environments (tools/stack.sh install, tools/venv.sh), and the .deb the
#      scenario suite's boot test downloads;
#   2. in a network namespace of its own with only a loopback: the steps.
#      Its Ceph, RabbitMQ, Keystone and Glance take the same ports as this
#      machine's stack without meeting it.
# Each phase runs in its own mount and PID namespaces: its mounts go when
# it ends, and so does every process it started (the stack's daemons too).
#
# Kept: the debootstrap result, in /var/cache/imaged-other-release/R/base
# (made once); the machine, in /var/lib/imaged-other-release/R/root, copied
# afresh from the base on each run unless --reuse (then the packages,
# environments and stack state of the last run are used again). Logs in
# /var/lib/imaged-other-release/R/.
# Run as root. Needs debootstrap (installed if missing), unshare, chroot.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=/var/cache/imaged-other-release
WORK=/var/lib/imaged-other-release
# What a fresh machine here has beyond debootstrap's minbase.
INCLUDE=ca-certificates,git,python3,curl,procps
T_DEBOOTSTRAP=${IMAGED_OTHER_RELEASE_DEBOOTSTRAP_TIMEOUT:-1800}
T_PREPARE=${IMAGED_OTHER_RELEASE_PREPARE_TIMEOUT:-3600}
T_RUN=${IMAGED_OTHER_RELEASE_RUN_TIMEOUT:-7200}

say() { printf '[other-release %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run it as root (it makes a root with debootstrap and mounts into it)"

this_codename() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

RELEASE= REUSE=0 SHELL_ONLY=0 STEPS=()
while [ $# -gt 0 ]; do
    case $1 in
        --release) RELEASE=${2:-}; shift 2 ;;
        --reuse) REUSE=1; shift ;;
        --shell) SHELL_ONLY=1; shift ;;
        quickstart|tests|unit|functional|scenario|bench|soak) STEPS+=("$1"); shift ;;
        -h|--help) usage ;;
        *) echo "other-release: unknown argument '$1'" >&2; usage ;;
    esac
done
if [ -z "$RELEASE" ]; then
    case $(this_codename) in
        bookworm) RELEASE=trixie ;;
        trixie) RELEASE=bookworm ;;
        *) die "this machine is $(. /etc/os-release && echo "${PRETTY_NAME:-unknown}"): say which release with --release trixie or --release bookworm" ;;
    esac
fi
case $RELEASE in
    bookworm|trixie) ;;
    *) die "--release must be bookworm (Debian 12) or trixie (Debian 13), not '$RELEASE'" ;;
esac
[ ${#STEPS[@]} -gt 0 ] || STEPS=(quickstart tests)

BASE=$CACHE/$RELEASE/base
DIR=$WORK/$RELEASE
ROOT=$DIR/root
CLONE=/root/imaged          # inside the root
mkdir -p "$CACHE/$RELEASE" "$DIR"

# One run per release at a time: a second would copy over a root in use.
exec 9>>"$DIR/.lock"
flock -n 9 || die "another tools/other-release.sh --release $RELEASE is running ($DIR/.lock)"

# ------------------------------------------------------------ the base ----
# This machine's Debian archive and security archive (deb822 or one-line
# sources), so the root fetches from where this machine does.
apt_uri() {  # apt_uri security|main
    local want=$1 uri
    for uri in $(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
                 awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }' \
                     /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null); do
        case $uri in
            */debian-security|*/debian-security/) [ "$want" = security ] && { echo "${uri%/}"; return; } ;;
            */debian|*/debian/) [ "$want" = main ] && { echo "${uri%/}"; return; } ;;
        esac
    done
    case $want in
        main) echo http://deb.debian.org/debian ;;
        security) echo http://deb.debian.org/debian-security ;;
    esac
}
MIRROR=$(apt_uri main)
SECURITY_MIRROR=$(apt_uri security)

make_base() {
    command -v debootstrap >/dev/null || {
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q debootstrap >&2 ||
            die "apt-get install debootstrap failed"; }
    # A base.tmp is a debootstrap that did not finish: start again.
    rm -rf "$BASE.tmp"
    say "debootstrap $RELEASE from $MIRROR into $BASE (once; log $CACHE/$RELEASE/debootstrap.log)"
    timeout "$T_DEBOOTSTRAP" debootstrap --variant=minbase --include="$INCLUDE" \
        "$RELEASE" "$BASE.tmp" "$MIRROR" >"$CACHE/$RELEASE/debootstrap.log" 2>&1 ||
        { tail -20 "$CACHE/$RELEASE/debootstrap.log" >&2; die "debootstrap failed"; }
    [ -x "$BASE.tmp/usr/bin/python3" ] || die "debootstrap made no python3 in $BASE.tmp"
    echo "$RELEASE $(date -u +%FT%TZ)" >"$BASE.tmp/.imaged-base"
    mv "$BASE.tmp" "$BASE"
}
[ -s "$BASE/.imaged-base" ] || { rm -rf "$BASE"; make_base; }

# ------------------------------------------------------------ the root ----
# Mounts and processes of an earlier run end with its namespaces; a run
# killed half-way can still leave them if it was killed between unshare's
# fork and exit: refuse to delete a root something still uses.
root_in_use() {
    local p
    grep -q " $ROOT/" /proc/mounts && return 0
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && return 0
    done
    return 1
}
if root_in_use; then
    die "$ROOT is still in use (a mount under it, or a process chrooted into it): end that first"
fi

# What a fresh machine of this workplace has: its CA certificates, its pip
# configuration, apt fetching from where this machine's does, services not
# started by package installs (policy-rc.d, as in this machine's image).
furnish_root() {
    local n=0 f
    say "furnishing $ROOT as a fresh machine"
    write_sources >"$ROOT/etc/apt/sources.list.d/debian.sources"
    rm -f "$ROOT/etc/apt/sources.list"
    for f in /etc/apt/apt.conf.d/*; do
        # only what changes how apt fetches (e.g. Check-Valid-Until)
        if grep -q '^Acquire' "$f" 2>/dev/null; then cp -f "$f" "$ROOT/etc/apt/apt.conf.d/"; fi
    done
    if [ -f /usr/sbin/policy-rc.d ]; then cp -f /usr/sbin/policy-rc.d "$ROOT/usr/sbin/"
    else printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"; fi
    [ ! -f /etc/pip.conf ] || cp -f /etc/pip.conf "$ROOT/etc/pip.conf"
    if [ -d /etc/xdg/pip ]; then
        mkdir -p "$ROOT/etc/xdg"; rm -rf "$ROOT/etc/xdg/pip"; cp -a /etc/xdg/pip "$ROOT/etc/xdg/pip"
    fi
    # This machine's CA certificates that the root's bundle lacks, kept
    # where update-ca-certificates keeps them.
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    while IFS= read -r -d '' cert; do
        if ! grep -qF -- "$(sed -n 2p <<<"$cert")" "$ROOT/etc/ssl/certs/ca-certificates.crt"; then
            n=$((n + 1))
            printf '%s\n' "$cert" >"$ROOT/usr/local/share/ca-certificates/this-machine-$n.crt"
        fi
    done < <(awk '/-----BEGIN CERTIFICATE-----/ { c = "" } { c = c $0 "\n" }
                  /-----END CERTIFICATE-----/ { printf "%s%c", c, 0 }' /etc/ssl/certs/ca-certificates.crt)
    if [ $n -gt 0 ]; then
        say "adding $n CA certificates of this machine"
        chroot "$ROOT" update-ca-certificates >/dev/null
    fi
    cp -f /etc/resolv.conf "$ROOT/etc/resolv.conf"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
}

write_sources() {
    cat <<EOF
Types: deb
URIs: $MIRROR
Suites: $RELEASE $RELEASE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $RELEASE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

# A fresh clone; with --reuse the last run's clone moved to this HEAD, its
# untracked files (.venv, .stestr) kept.
clone_checkout() {
    local head
    head=$(git -C "$SRC" rev-parse HEAD)
    if [ -n "$(git -C "$SRC" status --porcelain --untracked-files=no)" ]; then
        say "note: $SRC has uncommitted changes; the root gets HEAD ($head) only"
    fi
    if [ $REUSE = 1 ] && git -C "$ROOT$CLONE" rev-parse HEAD >/dev/null 2>&1; then
        git -C "$ROOT$CLONE" fetch -q "$SRC" HEAD
        git -C "$ROOT$CLONE" checkout -q -f --detach FETCH_HEAD
    else
        rm -rf "$ROOT$CLONE"
        git clone -q --no-hardlinks "$SRC" "$ROOT$CLONE"
        git -C "$ROOT$CLONE" checkout -q --detach "$head"
    fi
    say "cloned $SRC at $(git -C "$ROOT$CLONE" log -1 --format='%h %s' | cut -c1-80)"
}

if [ $REUSE = 1 ] && [ -s "$ROOT/.imaged-base" ]; then
    say "reusing $ROOT (--reuse)"
    furnish_root
else
    say "copying $BASE to $ROOT (a fresh machine)"
    # (a ROOT.tmp is a copy that was cut short)
    rm -rf "$ROOT" "$ROOT.tmp"
    cp -a --reflink=auto "$BASE" "$ROOT.tmp"
    mv "$ROOT.tmp" "$ROOT"
    furnish_root
fi
clone_checkout

# ------------------------------------------------------- in namespaces ----
# in_root_run NET SCRIPT TIMEOUT: run SCRIPT with bash in the root, in new
# mount and PID namespaces, and with NET=own in a network namespace with
# only lo up. The environment is a fresh root login's, plus this machine's
# pip and proxy settings.
in_root_run() {
    local net=$1 script=$2 limit=$3
    # --kill-child: if unshare is killed (the timeout), so is the
    # namespace's first process, and with it every process in it.
    local unshare_args=(--mount --pid --fork --kill-child --propagation private)
    local passenv=() v
    [ "$net" = own ] && unshare_args+=(--net)
    for v in PIP_CERT PIP_DEFAULT_TIMEOUT PIP_DISABLE_PIP_VERSION_CHECK PIP_INDEX_URL \
             PIP_EXTRA_INDEX_URL http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -z "${!v:-}" ] || passenv+=("$v=${!v}")
    done
    # shellcheck disable=SC2016
    timeout --kill-after=30 "$limit" unshare "${unshare_args[@]}" /bin/bash -c '
        set -e
        root=$1 net=$2; shift 2
        if [ "$net" = own ]; then ip link set lo up; fi
        mount -t proc proc "$root/proc"
        if [ "$net" = own ]; then mount -t sysfs sysfs "$root/sys"
        else mount --rbind /sys "$root/sys"; fi
        mount --rbind /dev "$root/dev"
        mount -t tmpfs tmpfs "$root/run"
        mount -t tmpfs tmpfs "$root/dev/shm"
        exec chroot "$root" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            LANG=C.UTF-8 "$@"
    ' in-root "$ROOT" "$net" "${passenv[@]}" /bin/bash -c "$script"
}
in_root() {  # in_root NET LOG|- SCRIPT TIMEOUT (-: no log, the terminal's)
    if [ "$2" = - ]; then in_root_run "$1" "$3" "$4"
    else in_root_run "$1" "$3" "$4" 2>&1 | tee -a "$2"; return "${PIPESTATUS[0]}"; fi
}

if [ $SHELL_ONLY = 1 ]; then
    say "a shell in $ROOT (own network namespace; its stack ends with the shell)"
    in_root own - "cd $CLONE && exec bash -i" 86400
    exit
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
PREPARE_LOG=$DIR/prepare-$STAMP.log
RUN_LOG=$DIR/run-$STAMP.log

# Phase 1: with this machine's network.
say "phase 1 ($RELEASE, this machine's network): Debian packages, environments, the boot test's kernel; log $PREPARE_LOG"
started=$SECONDS
in_root host "$PREPARE_LOG" "
    set -euo pipefail
    cd $CLONE
    tools/stack.sh install
    tools/venv.sh
    # The scenario suite's boot test downloads a kernel .deb (apt-get
    # download): fetched now, into the cache the suite reads.
    .venv/bin/python -c 'from imaged.tempest_plugin.scenario import bootdisk; print(\"boot disk:\", bootdisk.build(\"/var/lib/imaged-stack/scenario/bootdisk\"))'
" "$T_PREPARE" >/dev/null || die "phase 1 failed after $((SECONDS - started))s (log $PREPARE_LOG)"
say "phase 1 done in $((SECONDS - started))s"

# Phase 2: the steps, on loopback only.
commands=()
stages=()
for step in "${STEPS[@]}"; do
    case $step in
        quickstart) commands+=("tools/quickstart.sh") ;;
        tests) commands+=("tools/run-tests.sh") ;;
        *) stages+=("$step") ;;
    esac
done
if [ ${#stages[@]} -gt 0 ]; then
    commands+=("IMAGED_TEST_STAGES='${stages[*]}' tools/run-tests.sh")
fi
script="cd $CLONE
echo \"== $RELEASE: \$(. /etc/os-release && echo \$PRETTY_NAME), Python \$(python3 -c 'import platform; print(platform.python_version())'), \$(ceph --version | cut -d' ' -f1-3), \$(qemu-img --version | head -n1)\"
rc=0"
for c in "${commands[@]}"; do
    script+="
echo \"== $c\"
start=\$SECONDS
if $c; then echo \"== $c: passed (\$((SECONDS - start))s)\"
else r=\$?; echo \"== $c: FAILED, exit \$r (\$((SECONDS - start))s)\"; rc=1; fi"
done
script+="
exit \$rc"
say "phase 2 ($RELEASE, own network namespace): ${commands[*]}; log $RUN_LOG"
started=$SECONDS
rc=0
in_root own "$RUN_LOG" "$script" "$T_RUN" || rc=$?
echo
echo "other-release $RELEASE ($((SECONDS - started))s; log $RUN_LOG):"
grep -E '^== |"problems": |^[a-z -]+: [0-9]+ passed, [0-9]+ failed|^(bench --quick|soak):|^total: ' "$RUN_LOG" || true
exit $rc
