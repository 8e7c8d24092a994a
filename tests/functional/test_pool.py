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

"""Many agents on one pool (issue 14), on the real stack.

Three real agents share the ``vms`` pool and the broker; the tests release
their callers together and count Glance's downloads in its access log.
"""

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid

import fixtures
from oslo_utils import units
import testtools
import testtools.content

from imaged import exception
from imaged import rpcapi
from tests.functional import base

AGENTS = 3
# Short leases, so that a killed builder's runs out within the test.
OPTIONS = {'rbd': {'base_lock_duration': '6', 'base_lock_timeout': '120'}}


class PoolTestCase(testtools.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        base.configure_client()
        cls.workdir = tempfile.mkdtemp(prefix='imaged-pool-')
        cls.api = rpcapi.ImageAgentAPI(base.CONF)
        cls.ctxt = base.user_context()
        cls.daemons = []
        try:
            for n in range(AGENTS):
                cls.daemons.append(cls.start_agent(n))
            cls.ceph = base.Ceph()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def start_agent(cls, n, host=None):
        workdir = os.path.join(cls.workdir, str(n))
        os.makedirs(workdir, exist_ok=True)
        host = host or 'pool-%d-%s' % (n, uuid.uuid4().hex[:6])
        daemon = base.Daemon(workdir, host, OPTIONS).start()
        try:
            base.FunctionalTestCase.wait_until_serving(cls.api, cls.ctxt,
                                                       host, daemon)
        except Exception:
            daemon.kill()
            raise
        return daemon

    @classmethod
    def tearDownClass(cls):
        for daemon in cls.daemons:
            daemon.stop()
        if getattr(cls, 'ceph', None) is not None:
            cls.ceph.close()
        shutil.rmtree(cls.workdir, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(600, gentle=True))
        self.ctxt = base.user_context()
        self.glance = base.Glance(self)
        self.addOnException(self.attach_agent_logs)

    def attach_agent_logs(self, exc_info):
        for n, daemon in enumerate(self.daemons):
            lines = [line for line in daemon.log().splitlines()
                     if ' DEBUG ' not in line]
            self.addDetail('agent-%d.log' % n, testtools.content.text_content(
                '\n'.join(lines[-60:])))

    def new_instance(self):
        instance_uuid = str(uuid.uuid4())
        self.addCleanup(self.ceph.remove, '%s_disk' % instance_uuid)
        return instance_uuid

    def forget_base(self, image_id):
        self.addCleanup(self.ceph.remove, '%s_base' % image_id)

    def storm(self, image_id, callers=3, instance_uuid=None):
        """Every agent's callers at once: ``[result or error]``."""
        results = []
        lock = threading.Lock()
        barrier = threading.Barrier(AGENTS * callers)

        def create(daemon, uuid_):
            barrier.wait(60)
            try:
                result = self.api.create_root_disk(self.ctxt, daemon.host,
                                                   uuid_, image_id, 1)
            except Exception as e:
                result = e
            with lock:
                results.append(result)
        threads = [threading.Thread(target=create, args=(
            daemon, instance_uuid or self.new_instance()))
            for daemon in self.daemons for _ in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        return results


class OneDownloadPerPoolTest(PoolTestCase):

    def test_a_new_image_is_downloaded_once_by_the_whole_pool(self):
        data = base.random_raw(24 * units.Mi)
        image = self.glance.create(data, backend='local')
        self.forget_base(image['id'])
        results = self.storm(image['id'])
        self.assertEqual(AGENTS * 3, len(results))
        for result in results:
            self.assertIsInstance(result, dict, result)
            self.assertEqual('download', result['strategy'])
            self.assertEqual(data[-units.Mi:], self.ceph.read(
                result['name'], len(data) - units.Mi, units.Mi))
        self.assertEqual(1, self.glance.downloads(image['id']))

    def test_a_failed_build_s_error_goes_to_every_waiting_call(self):
        # A qcow2 with a backing file: refused once downloaded, by the one
        # host that builds; the calls waiting for it get the same refusal.
        # (Uploaded as ovf: Glance itself refuses it as bare.)
        image = self.glance.create(_qcow2_with_backing_file(self),
                                   disk_format='qcow2',
                                   container_format='ovf', backend='local')
        self.forget_base(image['id'])
        results = self.storm(image['id'], callers=2)
        self.assertEqual(AGENTS * 2, len(results))
        for result in results:
            self.assertIsInstance(result, exception.ImageUnacceptable)
        self.assertEqual(1, self.glance.downloads(image['id']))
        self.assertNotIn('%s_base' % image['id'], self.ceph.names())

    def test_two_agents_creating_one_instance_make_one_disk(self):
        image = self.glance.create(base.random_raw(2 * units.Mi),
                                   backend='ceph')
        instance_uuid = self.new_instance()
        results = self.storm(image['id'], callers=1,
                             instance_uuid=instance_uuid)
        self.assertEqual(['clone', 'existing', 'existing'],
                         sorted(r['strategy'] for r in results))
        self.assertEqual(['%s_disk' % instance_uuid],
                         [n for n in self.ceph.names()
                          if n.startswith(instance_uuid)])

    def test_a_delete_racing_a_create_leaves_no_disk(self):
        data = base.random_raw(48 * units.Mi)
        image = self.glance.create(data, backend='local')
        self.forget_base(image['id'])
        instance_uuid = self.new_instance()
        created = []
        creator = threading.Thread(target=lambda: created.append(
            self.api.create_root_disk(self.ctxt, self.daemons[0].host,
                                      instance_uuid, image['id'], 1)))
        creator.start()
        base.wait_for(lambda: 'Downloading image %s' % image['id'] in
                      self.daemons[0].log(), 60, interval=0.05,
                      what='the download to start')
        self.api.delete_root_disk(self.ctxt, self.daemons[1].host,
                                  instance_uuid)
        creator.join(300)
        self.assertEqual('download', created[0]['strategy'])
        # The delete waited for the create, then deleted its disk.
        self.assertEqual([], [n for n in self.ceph.names()
                              if n.startswith(instance_uuid)])


class BuilderKilledTest(PoolTestCase):

    def test_a_waiter_takes_over_from_a_builder_that_stalls_then_dies(self):
        data = base.random_raw(96 * units.Mi)
        image = self.glance.create(data, backend='local')
        self.forget_base(image['id'])
        builder, waiter = self.daemons[0], self.daemons[1]

        def doomed_call():
            # The builder is killed under it: whatever error it gets.
            self.assertRaises(Exception,  # noqa: H202
                              self.api.create_root_disk, self.ctxt,
                              builder.host, self.new_instance(),
                              image['id'], 1)
        doomed = threading.Thread(target=doomed_call, daemon=True)
        doomed.start()
        base.wait_for(lambda: 'Downloading image %s' % image['id'] in
                      builder.log(), 60, interval=0.02,
                      what='the download to start')
        # Stalled mid-download, lease renewals and all (then killed).
        os.killpg(builder.process.pid, signal.SIGSTOP)
        self.addCleanup(builder.kill)
        started = time.monotonic()
        disk = self.api.create_root_disk(self.ctxt, waiter.host,
                                         self.new_instance(), image['id'], 1)
        self.assertEqual('download', disk['strategy'])
        self.assertNotIn('base hit', ' '.join(disk['timings']))  # it built
        self.assertIn('Downloading image %s' % image['id'], waiter.log())
        # It waited for the stalled builder's lease, no longer.
        self.assertLess(time.monotonic() - started, 120)
        self.assertEqual(data[-units.Mi:], self.ceph.read(
            disk['name'], len(data) - units.Mi, units.Mi))
        builder.kill()
        # The dead builder's partial image goes with its next start.
        self.daemons[0] = self.start_agent(0, host=builder.host)
        base.wait_for(lambda: not [n for n in self.ceph.names()
                                   if n.startswith(image['id']) and
                                   n.endswith('.imaged-part')],
                      90, interval=1, what="the dead builder's partial")


def _qcow2_with_backing_file(test):
    """A qcow2 image whose header names a backing file, with 32 MiB of
    data after it: refused only once downloaded whole (a build that takes
    a moment, like a real one)."""
    import subprocess
    tmp = test.useFixture(fixtures.TempDir()).path
    path = os.path.join(tmp, 'hostile.qcow2')
    subprocess.run(['qemu-img', 'create', '-f', 'qcow2', '-F', 'raw', '-b',
                    '/etc/hostname', path, '64M'], check=True,
                   capture_output=True)
    with open(path, 'rb') as f:
        return f.read() + base.random_raw(32 * units.Mi)
