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

"""What a fleet's bookkeeping costs Ceph (issue 14), counted in the fakes.

8 agents share a pool with 200 base images; every operation that reaches
the cluster is counted (ioctx calls, RBD calls, image opens, metadata and
snapshot reads). The figures the README gives come from this test's log
line (``stestr run test_bookkeeping``, then ``stestr last --subunit |
subunit2pyunit`` or a debugger).
"""

import datetime
import logging

import fixtures

from imaged.imagecache import files as image_cache
from imaged import manager as imaged_manager
from imaged import metrics
from imaged.storage import base_state
from imaged.storage import rbd as rbd_storage
from tests import base
from tests.unit import fakes
from tests.unit import parts

HOSTS = 8
BASES = 200
LOG = logging.getLogger(__name__)


class BookkeepingCostTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(
            name=__name__, level=logging.INFO))
        self.flags(glance_check_interval=0, group='image_cache')
        self.cluster = fakes.FakeCluster()
        self.glance = fakes.FakeGlance()
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        for n in range(BASES):
            image_id = '0b1e2f4a-1d2c-4e5f-8a9b-%012d' % n
            disk = fakes.FakeDisk(4096)
            disk.snapshots[base_state.SNAPSHOT] = 4096
            disk.protected.add(base_state.SNAPSHOT)
            disk.metadata.update({base_state.IMAGE_ID_KEY: image_id,
                                  base_state.MADE_BY_KEY: 'host-0',
                                  base_state.MADE_AT_KEY: now,
                                  base_state.COMPLETE_KEY: 'true'})
            self.cluster.pools['vms'][base_state.base_name(image_id)] = disk
        self.managers = []
        for n in range(HOSTS):
            self.flags(base_dir='%s/%d' % (self.tempdir, n),
                       group='image_cache')
            storage = rbd_storage.RBDDriver(
                self.conf, 'host-%d' % n, rados_module=self.cluster.rados,
                rbd_module=self.cluster.rbd)
            cache = image_cache.BaseFiles(self.conf)
            cache.prepare()
            self.managers.append(imaged_manager.ImageAgentManager(
                parts.agent(self.conf, self.glance, storage, cache,
                            _Silent())))

    def count(self, func):
        before = self.cluster.ops
        func()
        return self.cluster.ops - before

    def test_ceph_operations_per_cleanup_interval(self):
        # Start-up: every host sweeps its own partials once.
        for manager in self.managers:
            manager.leftovers.sweep_own()
        # Then 20 sweeps a host (10 minutes at the 30 s spacing).
        sweeps = self.count(lambda: [m.leftovers.sweep_own()
                                     for m in self.managers
                                     for _ in range(20)])
        per_host = [self.count(lambda m=m: m.leftovers.run_interval())
                    for m in self.managers]
        cleaner, others = per_host[0], per_host[1:]
        LOG.info('%d hosts, %d bases: one cleanup interval costs %d Ceph '
                 'operations (cleanup host %d, each other host %s); 20 '
                 'partial sweeps a host after start-up: %d',
                 HOSTS, BASES, sum(per_host), cleaner, sorted(set(others)),
                 sweeps)
        self.assertEqual(0, sweeps)
        # The cleanup host looks at each base; the others at none.
        self.assertLessEqual(cleaner, 8 * BASES)
        self.assertGreaterEqual(cleaner, BASES)
        for cost in others:
            self.assertLessEqual(cost, 10)
        # Only one host holds the role.
        self.assertEqual(1, sum(1 for m in self.managers
                                if m.storage._cleanup_role._held))


class _Silent:
    """Notifications that send nothing; the metrics are real."""

    def __init__(self):
        self.metrics = metrics.Metrics()

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
