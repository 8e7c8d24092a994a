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

"""A worker that dies mid-call loses no call (issue 24).

The agent's worker is killed in the middle of a create_root_disk (its
image downloading), once with SIGKILL and once with SIGSEGV (what a fault
in librados looks like). The caller's ``imaged.rpcapi`` notices the
heartbeats stop, calls again, and the agent's new worker makes the disk:
the caller gets it, exactly one disk, with the image's bytes. After the
SIGSEGV the agent's log holds the dead worker's Python stacks.
"""

import hashlib
import os
import signal
import threading
import time

import fixtures
from oslo_log import log as logging

from imaged.storage import partial_names
from tests.functional import base
from tools.bench.machine import children

LOG = logging.getLogger(__name__)
MiB = 1024 * 1024
# The caller hears of a dead worker after this many seconds without a
# heartbeat (a live one sends one every half of it).
HEARTBEAT_TIMEOUT = 8


def image_bytes(size):
    """``size`` bytes no other image has, no block of them all zero."""
    block = hashlib.sha512(os.urandom(16)).digest() * (MiB // 64)
    if block[510:512] == b'\x55\xaa':  # an MBR's signature: see random_raw
        block = block[:510] + b'\0' + block[511:]
    return b''.join(block[n % 64:] + block[:n % 64]
                    for n in range(size // MiB))


class DeadWorkerTest(base.FunctionalTestCase):

    # A dead worker's locks run out this soon (the minimum), so the call
    # made again takes them over quickly.
    daemon_options = {'rbd': {'base_lock_duration': '5'}}

    def setUp(self):
        super().setUp()
        base.CONF.set_override('rpc_response_timeout', HEARTBEAT_TIMEOUT)
        self.addCleanup(base.CONF.clear_override, 'rpc_response_timeout')
        base.CONF.set_override('rpc_retries', 2)
        self.addCleanup(base.CONF.clear_override, 'rpc_retries')
        self.caller_log = self.useFixture(fixtures.FakeLogger(
            name='imaged.rpcapi', level=logging.WARNING))

    def worker(self):
        kids = children(self.daemon.process.pid)
        self.assertEqual(1, len(kids), kids)
        return kids[0]

    def create_while_the_worker_dies(self, signum):
        data = image_bytes(128 * MiB)
        image = self.glance.create(data, backend='local')
        instance = self.new_instance()
        worker = self.worker()
        mark = len(self.daemon.log())
        result = {}

        def call():
            started = time.monotonic()
            try:
                result['disk'] = self.create_root_disk(
                    image['id'], instance_uuid=instance)
            except Exception as e:
                result['error'] = e
            result['seconds'] = time.monotonic() - started
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        base.wait_for(
            lambda: result or 'Downloading image %s' % image['id'] in
            self.daemon.log()[mark:], 120, interval=0.01,
            what='the download to start')
        self.assertEqual({}, result, 'the call ended before the kill')
        os.kill(worker, signum)
        caller.join(300)
        self.assertFalse(caller.is_alive(), 'the caller still waits')
        self.assertNotIn('error', result)
        LOG.info('Disk made %.1fs after the call, through a worker killed '
                 'by %s', result['seconds'], signal.Signals(signum).name)
        disk = result['disk']
        self.assertEqual('%s_disk' % instance, disk['name'])
        self.assertNotEqual(worker, self.worker())  # a new one answered
        # Exactly one disk, the image's bytes, nothing half-made left.
        names = self.ceph.names()
        self.assertEqual([disk['name']],
                         [n for n in names if n.startswith(instance)])
        self.assertEqual([], [n for n in names if n.startswith(image['id'])
                              and n.endswith(partial_names.PARTIAL_SUFFIX)])
        for offset in (0, len(data) // 2, len(data) - MiB):
            self.assertEqual(data[offset:offset + MiB],
                             self.ceph.read(disk['name'], offset, MiB))
        return worker, self.daemon.log()[mark:]

    def test_sigkill_mid_download_the_caller_still_gets_its_disk(self):
        worker, log = self.create_while_the_worker_dies(signal.SIGKILL)
        # cotyledon names the signal by its number.
        self.assertIn('Child %d killed by signal -%d' % (
            worker, signal.SIGKILL), log)
        self.assertIn('its worker died); calling it again',
                      self.caller_log.output)

    def test_sigsegv_mid_download_names_the_python_call_in_flight(self):
        worker, log = self.create_while_the_worker_dies(signal.SIGSEGV)
        self.assertIn('Child %d killed by signal -%d' % (
            worker, signal.SIGSEGV), log)
        # imaged.crashes: the parent logged the dead worker's stacks.
        self.assertIn('imaged process %d died of a native crash' % worker,
                      log)
        self.assertIn('Fatal Python error: Segmentation fault', log)
        # The call in flight, wherever in the download the signal came.
        self.assertIn('in create_root_disk', log)
        self.assertIn('imaged/imagecache/manager.py', log)
        self.assertEqual({}, {p: t for p, t in self.daemon.fault_files()
                              .items() if p.endswith('.%d' % worker)})
