# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Reproducers of two librados watch faults imaged now steers clear of.

``/usr/bin/python3 tools/repro/librados_watch_faults.py freed-watch [MODE]``
    (MODE ``keep`` or ``imaged``; none: dropped at once)
    A ``rados.Watch`` whose ``close()`` failed, freed later. librados'
    ``IoCtxImpl::unwatch`` cancels (frees) the watch even when the unwatch
    op fails, and the binding raises before it forgets the watch's cookie,
    so freeing the Python object unwatches the freed cookie again. The
    unwatch is made to fail by blocklisting this client (the OSD answers
    as an outage would); the Watch is then dropped (or, with ``keep``,
    kept in a module list, as imaged's ``_UNCLOSED`` once did, and freed at
    the interpreter's exit). Seen on Ceph 16.2: ``keep`` died of SIGABRT
    at the exit's garbage collection (an earlier version, dropping it at
    once, 3 of 3; the drop survives now and then, as a use after
    free may), a fault that shows as ``std::bad_alloc``, SIGSEGV in
    libstdc++ or ``std::system_error`` depending on what reused the memory.
    ``imaged`` keeps it as imaged does now (``watches._keep_forever``: a
    reference nothing holds) and exits cleanly.

``/usr/bin/python3 tools/repro/librados_watch_faults.py notify-timeout MS``
    ``ioctx.notify(key, '', MS)`` with a watcher that acknowledges after
    4 s: librados sends the timeout in whole seconds, so 500 ms becomes 0,
    which the OSD takes for its default (30 s), and the notifier waits for
    the slow watcher. imaged notifies with 1000 ms.

Against the local stack (``IMAGED_STACK_DIR``, default
/var/lib/imaged-stack), pool ``vms``, as the stack's admin.
"""

import faulthandler
import json
import os
import sys
import threading
import time

STACK = os.environ.get('IMAGED_STACK_DIR', '/var/lib/imaged-stack')
CONF = os.path.join(STACK, 'ceph', 'ceph.conf')
KEYRING = os.path.join(STACK, 'ceph', 'ceph.client.admin.keyring')
POOL = 'vms'
KEPT = []


def connect(**conf):
    import rados
    cluster = rados.Rados(conffile=CONF, conf=dict(keyring=KEYRING, **conf))
    cluster.connect(timeout=30)
    return cluster


def blocklist(admin, addr, add):
    verb = 'add' if add else 'rm'
    for prefix in ('osd blocklist', 'osd blacklist'):  # Ceph >= 16, older
        ret, _out, err = admin.mon_command(json.dumps(
            {'prefix': prefix, 'blocklistop': verb, 'blacklistop': verb,
             'addr': addr}), b'', timeout=30)
        if ret == 0:
            return
    raise RuntimeError('cannot %s %s in the blocklist: %s' % (verb, addr, err))


def freed_watch(keep):
    faulthandler.enable()
    admin = connect()
    victim = connect(rados_osd_op_timeout='10')
    ioctx = victim.open_ioctx(POOL)
    key = 'imaged.repro.freed-watch'
    ioctx.write_full(key, b'')
    watch = ioctx.watch(key, lambda *args: None)
    addr = victim.get_addrs()['addrvec'][0]['addr'] \
        if isinstance(victim.get_addrs(), dict) else str(victim.get_addrs())
    blocklist(admin, addr, True)
    try:
        time.sleep(2)
        try:
            watch.close()
            print('unwatch succeeded: nothing to show', flush=True)
            return 0
        except Exception as e:
            print('unwatch failed (%s); now freeing the watch' % e,
                  flush=True)
    finally:
        blocklist(admin, addr, False)
    if keep == 'imaged':
        import ctypes
        KEPT.append(watch)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(watch))
        print('kept for good; exiting', flush=True)
        return 0
    if keep:
        KEPT.append(watch)  # freed when the interpreter ends
        print('kept; exiting', flush=True)
        return 0
    del watch  # the binding unwatches the freed cookie here
    print('survived the free', flush=True)
    return 0


def notify_timeout(ms):
    watcher, notifier = connect(), connect()
    wio, nio = watcher.open_ioctx(POOL), notifier.open_ioctx(POOL)
    key = 'imaged.repro.notify-timeout'
    nio.write_full(key, b'')
    acked = threading.Event()

    def slow(*args):
        time.sleep(4)  # a watcher whose process is busy acknowledges late
        acked.set()
    watch = wio.watch(key, slow)
    started = time.monotonic()
    try:
        nio.notify(key, '', ms)
        outcome = 'answered'
    except Exception as e:
        outcome = repr(e)
    print('notify(timeout_ms=%d) returned after %.2f s: %s' % (
        ms, time.monotonic() - started, outcome), flush=True)
    acked.wait(10)
    watch.close()
    nio.remove_object(key)
    wio.close()
    nio.close()
    watcher.shutdown()
    notifier.shutdown()
    return 0


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ''
    if mode == 'freed-watch':
        return freed_watch(sys.argv[2] if len(sys.argv) > 2 else None)
    if mode == 'notify-timeout':
        return notify_timeout(int(sys.argv[2]) if len(sys.argv) > 2 else 500)
    sys.exit(__doc__)


if __name__ == '__main__':
    sys.exit(main())
