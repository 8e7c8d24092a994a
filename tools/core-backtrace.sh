#!/usr/bin/env bash
# Native and Python backtraces of every thread in a core dump of imaged.
#
#   tools/core-backtrace.sh [--install] CORE [PYTHON]
#
# CORE is a core file (kernel.core_pattern says where they go; with
# systemd-coredump, "coredumpctl dump imaged -o imaged.core" first).
# PYTHON is the interpreter that ran imaged (default /usr/bin/python3, what
# the venv's python links to). It prints gdb's "thread apply all bt" (C and
# C++ frames: librados, librbd, libstdc++) and "thread apply all py-bt"
# (the Python frames of each thread), which needs the interpreter's gdb
# extension from Debian's python3.X-dbg. --install (as root) installs gdb,
# that package and Ceph's debug symbols (librados2-dbg, librbd1-dbg: about
# 200 MB) first; without Ceph's symbols librados frames show as addresses.
set -euo pipefail

install=0
if [ "${1:-}" = --install ]; then install=1; shift; fi
[ $# -ge 1 ] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
core=$1
python=${2:-/usr/bin/python3}
[ -r "$core" ] || { echo "core-backtrace: cannot read $core" >&2; exit 2; }
python=$(readlink -f "$python")
pyver=$(basename "$python")   # python3.11, python3.13, ...
case $pyver in
    python3.*) ;;
    *) echo "core-backtrace: $python is not a python3.X interpreter" >&2; exit 2 ;;
esac

if [ "$install" = 1 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gdb "$pyver-dbg" \
        librados2-dbg librbd1-dbg >/dev/null ||
        echo "core-backtrace: could not install every debug package (Ceph's" \
             "-dbg packages exist in Debian 12; elsewhere see debuginfod)" >&2
fi
command -v gdb >/dev/null || {
    echo "core-backtrace: gdb is missing (apt-get install gdb, or --install)" >&2
    exit 2; }
ext=/usr/share/gdb/auto-load/usr/bin/$pyver-gdb.py
if ! [ -f "$ext" ]; then
    echo "core-backtrace: $ext is missing (apt-get install $pyver-dbg, or" \
         "--install): Python frames will not be shown" >&2
fi

echo "== core $core of $python"
gdb --batch --nx -q \
    -ex 'set pagination off' \
    -ex 'set print thread-events off' \
    -ex "add-auto-load-safe-path /usr/share/gdb/auto-load" \
    -ex "source $ext" \
    -ex 'echo \n== the thread that took the signal\n' \
    -ex 'bt' \
    -ex 'echo \n== every thread, native frames\n' \
    -ex 'thread apply all bt' \
    -ex 'echo \n== every thread, Python frames\n' \
    -ex 'thread apply all py-bt' \
    "$python" "$core" 2>&1 |
    grep -v -E '^(warning: (Could not load shared library symbols|Unable to find libthread_db)|\[New LWP)'
