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

"""Reproducer: librbd aborts when many clients open one image read-write.

``/usr/bin/python3 tools/repro/librbd_rw_storm.py [rw|xattr] [seconds]``
against the local stack (tools/stack.sh start). Four processes (four Ceph
clients, like four compute hosts) of eight threads each open one image
read-write and set a metadata key, over and over: with the exclusive-lock
feature librbd hands the lock from client to client through notifications
on the image header, and a client that closes the image while it still
handles one aborts inside librbd::ImageWatcher::~ImageWatcher:

    AsyncOpTracker::~AsyncOpTracker(): FAILED ceph_assert(m_pending_ops == 0)

This was imaged's worker SIGABRT under load (issue 14): every host recorded
its use of a shared base image that way. Measured on the stack's Ceph 16.2:
``rw`` for 60 s, 2 of 4 processes aborted (each had managed 13-18 writes);
``xattr`` (what imaged does now: an xattr on the base's lock object, with
librados alone) for 60 s, 4 of 4 exited cleanly after 134,000-145,000
writes each. Prints each process's exit status; exit 1 if one aborted.
"""

import os
import subprocess
import sys
import time
import uuid

STACK = os.environ.get('IMAGED_STACK_DIR', '/var/lib/imaged-stack')
CONF = os.path.join(STACK, 'ceph', 'ceph.conf')
KEYRING = os.path.join(STACK, 'ceph', 'ceph.client.admin.keyring')
POOL = 'vms'
PROCESSES, THREADS = 4, 8


def _connect():
    import rados
    cluster = rados.Rados(conffile=CONF, conf={'keyring': KEYRING,
                                               'rbd_cache': 'false'})
    cluster.connect(timeout=30)
    return cluster, cluster.open_ioctx(POOL)


def client(mode, name, seconds):
    import threading

    import rbd
    _cluster, ioctx = _connect()
    stop = time.monotonic() + seconds
    done = [0]

    def loop(n):
        while time.monotonic() < stop:
            try:
                if mode == 'rw':
                    with rbd.Image(ioctx, name) as image:
                        image.metadata_set('repro.t%d' % n, str(time.time()))
                else:
                    ioctx.set_xattr(name + '.lock', 'repro.t%d' % n,
                                    str(time.time()).encode())
                done[0] += 1
            except Exception as e:  # a timeout is not what we look for
                print('error', type(e).__name__, e, flush=True)
    threads = [threading.Thread(target=loop, args=(n,))
               for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print('writes', done[0], flush=True)


def main(argv):
    mode = argv[1] if len(argv) > 1 else 'rw'
    seconds = float(argv[2]) if len(argv) > 2 else 60
    if len(argv) > 3:  # a client process
        client(mode, argv[3], seconds)
        return 0
    import rbd
    name = 'repro-%s' % uuid.uuid4().hex[:8]
    cluster, ioctx = _connect()
    rbd.RBD().create(ioctx, name, 4 << 20, old_format=False)
    try:
        procs = [subprocess.Popen([sys.executable, __file__, mode,
                                   str(seconds), name],
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for _ in range(PROCESSES)]
        aborted = 0
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 120)
            writes = [line for line in out.splitlines()
                      if line.startswith('writes')]
            print('client exit %d, %s%s' % (
                proc.returncode, writes[-1] if writes else 'no count',
                ', ceph_assert' if 'ceph_assert' in out else ''))
            aborted += proc.returncode != 0
    finally:
        rbd.RBD().remove(ioctx, name)
        try:
            ioctx.remove_object(name + '.lock')
        except Exception:
            pass
        cluster.shutdown()
    return 1 if aborted else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
