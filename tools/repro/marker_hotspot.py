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

"""Measurement: is the pool's one marker object a hot spot in a storm?

``/usr/bin/python3 tools/repro/marker_hotspot.py [calls] [rounds]`` against
the local stack (``IMAGED_STACK_DIR`` picks another, e.g. the fast one).

Every clone imaged makes sets an xattr named after the disk on the pool's
object ``imaged.disks.creating`` and removes it when the disk is complete
(imaged.storage.disks): a storm of N creates writes that one object 2N
times. This does what a storm's first moment does, ``calls`` threads (each
with an I/O context of its own, as imaged's calls have) released together
to set one marker each, on one object and then spread over 16 objects by
the name's first hex digit, ``rounds`` times, alternating; prints each
round's p50, p95 and max seconds per write. Leaves nothing behind.
"""

import json
import os
import sys
import threading
import time
import uuid

STACK = os.environ.get('IMAGED_STACK_DIR', '/var/lib/imaged-stack')
CONF = os.path.join(STACK, 'ceph', 'ceph.conf')
KEYRING = os.path.join(STACK, 'ceph', 'ceph.client.admin.keyring')
POOL = 'vms'
PREFIX = 'imaged.repro.marker-hotspot'


def _cluster():
    import rados
    cluster = rados.Rados(conffile=CONF, conf={'keyring': KEYRING,
                                               'rados_osd_op_timeout': '30',
                                               'rados_mon_op_timeout': '30'})
    cluster.connect(timeout=30)
    return cluster


def storm(cluster, objects, calls):
    """Seconds each of ``calls`` simultaneous marker writes took."""
    barrier = threading.Barrier(calls)
    took = []

    def one(name):
        ioctx = cluster.open_ioctx(POOL)
        try:
            key = objects[int(name[0], 16) % len(objects)]
            barrier.wait()
            started = time.monotonic()
            ioctx.set_xattr(key, name, json.dumps(
                {'host': 'repro', 'at': int(time.time())}).encode())
            took.append(time.monotonic() - started)
            ioctx.rm_xattr(key, name)
        finally:
            ioctx.close()
    threads = [threading.Thread(target=one, args=(uuid.uuid4().hex,))
               for _n in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(took)


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 96
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    cluster = _cluster()
    one = ['%s.one' % PREFIX]
    spread = ['%s.%x' % (PREFIX, n) for n in range(16)]
    try:
        for round_ in range(rounds):
            for objects in (one, spread):
                took = storm(cluster, objects, calls)
                print('round %d, %2d object(s), %d writes: p50 %.3f s, '
                      'p95 %.3f s, max %.3f s' % (
                          round_ + 1, len(objects), calls,
                          took[len(took) // 2],
                          took[int(len(took) * 0.95)], took[-1]))
    finally:
        ioctx = cluster.open_ioctx(POOL)
        for key in one + spread:
            try:
                ioctx.remove_object(key)
            except Exception:  # never written, or gone
                pass
        ioctx.close()
        cluster.shutdown()


if __name__ == '__main__':
    main()
