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

"""Reproducer: a lock's renewal on an I/O context its caller closed.

``.venv/bin/python tools/repro/renewer_race.py [SECONDS] [THREADS]``
against the local stack (``IMAGED_STACK_DIR``), with imaged's own
``RadosLock`` from ``IMAGED_TREE`` (default: this checkout; a worktree of
an older commit shows the fault).

Once a worker had seen one Ceph timeout its connection "seemed
unreachable", and a lock released then did not wait for its renewal
thread; the caller closed the I/O context right after (``conn.ioctx()``
ends), while the renewal, already past the binding's "is it open" check,
was inside ``rados_lock_shared`` on it: the worker died of SIGSEGV in
librados (``IoCtx::operate``). A second fault made that state last: an
error on an old, retired connection (a watch still on it) marked the
current one unreachable for good. In a boot storm on a busy host the
first timeout is common, and then every lock release raced its renewal.

Each of THREADS threads takes a shared lock with a 3 s lease (renewed
every second), holds it about one second (the release lands on the
renewal) and releases it with the connection "unreachable", then closes
its I/O context; in a child process, whose exit status is printed: a
negative one is the signal that killed it. Measured (Ceph 16.2, fast
stack, 60 s, 24 threads): at 0014215 the child died of SIGSEGV; with this
checkout it ran the whole time. Exit 1 if the child died.
"""

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time

STACK = os.environ.get('IMAGED_STACK_DIR', '/var/lib/imaged-stack')
CONF = os.path.join(STACK, 'ceph', 'ceph.conf')
KEYRING = os.path.join(STACK, 'ceph', 'ceph.client.admin.keyring')
HERE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TREE = os.path.abspath(os.environ.get('IMAGED_TREE', HERE))
POOL = 'vms'


def child(seconds, threads):
    import faulthandler
    faulthandler.enable(all_threads=True)
    sys.path.insert(0, TREE)
    from imaged.storage import locks
    import rados
    import rbd
    cluster = rados.Rados(conffile=CONF, conf={
        'keyring': KEYRING, 'rados_osd_op_timeout': '10'})
    cluster.connect(timeout=30)

    class Unreachable:
        """What RadosLock needs of imaged's connection, after a timeout."""
        pool = POOL

        def __init__(self):
            self.rados, self.rbd = rados, rbd

        def seems_unreachable(self):
            return True

        @contextlib.contextmanager
        def typed_errors(self, name, pool=None):
            yield
    conn = Unreachable()
    stop = time.monotonic() + seconds
    cycles = [0] * threads

    def loop(n):
        key = 'imaged.repro.renewer-%d' % n
        while time.monotonic() < stop:
            ioctx = cluster.open_ioctx(POOL)
            lock = locks.RadosLock(conn, ioctx, key, 'repro', 'repro', 3,
                                   shared=True)
            if lock.try_acquire():
                time.sleep(1.0 + random.uniform(-0.003, 0.003))
                lock.release()
            ioctx.close()  # as conn.ioctx() does once its block ends
            cycles[n] += 1
    workers = [threading.Thread(target=loop, args=(n,))
               for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    time.sleep(2)  # renewals left behind end by themselves
    ioctx = cluster.open_ioctx(POOL)
    for n in range(threads):
        with contextlib.suppress(rados.Error):
            ioctx.remove_object('imaged.repro.renewer-%d' % n)
    ioctx.close()
    cluster.shutdown()
    print('cycles %d' % sum(cycles), flush=True)


def main():
    if sys.argv[1:2] == ['child']:
        return child(float(sys.argv[2]), int(sys.argv[3]))
    seconds = sys.argv[1] if len(sys.argv) > 1 else '60'
    threads = sys.argv[2] if len(sys.argv) > 2 else '24'
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), 'child', seconds,
         threads], capture_output=True, text=True,
        timeout=float(seconds) + 120)
    status = proc.returncode
    how = ('killed by %s' % signal.Signals(-status).name if status < 0
           else 'exit %d' % status)
    print('imaged tree %s, %ss, %s threads: %s; %s' % (
        TREE, seconds, threads, how, proc.stdout.strip()))
    if status < 0:
        print('\n'.join(proc.stderr.strip().splitlines()[:30]))
    return 1 if status < 0 else 0


if __name__ == '__main__':
    sys.exit(main())
