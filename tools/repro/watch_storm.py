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

"""Reproducer: many rados watches on one object, woken by one notify.

``/usr/bin/python3 tools/repro/watch_storm.py [per-waiter|shared] [seconds]``
against the local stack (tools/stack.sh start).

What a boot storm of a new image did inside one imaged worker before issue
24: 16 callers of the image each waited for its base with a watch of their
own on the base's lock object (each on an I/O context of its own), the
builder notified once, and all 16 woke, closed their watches and I/O
contexts at once, and watched again for the next round.

``per-waiter`` does that in PROCESSES processes (several Ceph clients, like
several compute hosts) of THREADS threads each, round after round, while
another client notifies the object; ``shared`` does the same rounds with
what imaged does now (imaged.storage.locks: one watch per object per
process, its waiters woken in Python). Prints each process's rounds and
exit status (a negative status is the signal that killed it); exit 1 if
one died.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import types

STACK = os.environ.get('IMAGED_STACK_DIR', '/var/lib/imaged-stack')
CONF = os.path.join(STACK, 'ceph', 'ceph.conf')
KEYRING = os.path.join(STACK, 'ceph', 'ceph.client.admin.keyring')
POOL = 'vms'
KEY = 'imaged.repro.watch-storm'
PROCESSES = int(os.environ.get('REPRO_PROCESSES', 4))
THREADS = int(os.environ.get('REPRO_THREADS', 16))


def _cluster():
    import rados
    cluster = rados.Rados(conffile=CONF, conf={'keyring': KEYRING,
                                               'rados_osd_op_timeout': '30',
                                               'rados_mon_op_timeout': '30'})
    cluster.connect(timeout=30)
    return cluster


def waiters(mode, seconds):
    """One client: THREADS waiters, round after round until ``seconds``."""
    import faulthandler
    faulthandler.enable(all_threads=True)
    cluster = _cluster()
    stop = time.monotonic() + seconds
    rounds = [0] * THREADS
    if mode == 'shared':
        sys.path.insert(0, os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))))
        from imaged.storage import watches as rados_watches

        class Conn:  # what watches.ObjectWatches needs of a connection
            rados = __import__('rados')

            def __init__(self):
                self.pool = POOL

            def acquire(self):
                return types.SimpleNamespace(cluster=cluster)

            def release(self, lease, error=None):
                pass

            def open_ioctx(self, cluster, pool):
                return cluster.open_ioctx(pool)

            @contextlib.contextmanager
            def typed_errors(self, name, pool=None):
                yield

            def is_unreachable(self, error):
                return False

            def seems_unreachable(self):
                return False
        watches = rados_watches.ObjectWatches(Conn())

    def loop(n):
        # As imaged's waiters did: an I/O context of their own, a try of
        # the base's shared lock, a watch, a wait; thread 0 of each process
        # is the builder that notifies in the middle of the round.
        import uuid
        cookie = uuid.uuid4().hex
        while time.monotonic() < stop:
            ioctx = cluster.open_ioctx(POOL)
            try:
                try:
                    ioctx.lock_shared(KEY, 'repro', cookie, 'repro',
                                      duration=10)
                    ioctx.unlock(KEY, 'repro', cookie)
                except Exception:
                    pass
                if mode == 'shared':
                    with watches.watch(KEY) as watch:
                        if n == 0:
                            time.sleep(0.01)
                            ioctx.notify(KEY, '', 500)
                        watch.wait(2.0)
                else:
                    woke = threading.Event()
                    watch = ioctx.watch(KEY, lambda *a: woke.set(),
                                        lambda *a: woke.set())
                    if n == 0:
                        time.sleep(0.01)
                        ioctx.notify(KEY, '', 500)
                    woke.wait(2.0)
                    watch.close()
            finally:
                ioctx.close()
            rounds[n] += 1

    threads = [threading.Thread(target=loop, args=(n,))
               for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if mode == 'shared':
        watches.close()
    cluster.shutdown()
    print('rounds %d' % sum(rounds), flush=True)


def notifier(seconds):
    cluster = _cluster()
    ioctx = cluster.open_ioctx(POOL)
    ioctx.write_full(KEY, b'')
    stop = time.monotonic() + seconds + 5
    notifies = 0
    while time.monotonic() < stop:
        try:
            ioctx.notify(KEY, '', 500)
        except Exception:
            pass
        notifies += 1
        time.sleep(0.02)
    ioctx.close()
    cluster.shutdown()
    print('notifies %d' % notifies, flush=True)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else 'per-waiter'
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60
    if mode == 'waiters':
        return waiters(sys.argv[3], seconds)
    if mode == 'notifier':
        return notifier(seconds)
    if mode not in ('per-waiter', 'shared'):
        sys.exit('usage: watch_storm.py [per-waiter|shared] [seconds]')
    me = os.path.abspath(__file__)
    python = '/usr/bin/python3'
    notify = subprocess.Popen([python, me, 'notifier', str(seconds)])
    time.sleep(1)
    procs = [subprocess.Popen([python, me, 'waiters', str(seconds), mode],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for _ in range(PROCESSES)]
    died = 0
    for n, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            print('process %d hung: killed' % n)
        status = p.returncode
        if status < 0:
            died += 1
            print('process %d: killed by %s; %s' % (
                n, signal.Signals(-status).name, out.strip()))
            print('\n'.join(err.strip().splitlines()[:40]))
        else:
            print('process %d: exit %d; %s' % (n, status, out.strip()))
    notify.wait(timeout=60)
    print('mode %s, %d processes x %d threads, %ss: %d died'
          % (mode, PROCESSES, THREADS, seconds, died))
    return 1 if died else 0


if __name__ == '__main__':
    sys.exit(main())
