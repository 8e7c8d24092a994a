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

"""A fleet: three hosts on one pool and one broker, cleaning up all the time.

Each agent makes and deletes disks of a handful of images for a couple of
minutes while every agent's cleanup runs each second and may remove any
base without clones at once (``rbd_base_min_age = 0``): the race that once
made one create in 1,368 fail with "image not found (error creating clone)"
when another host removed the base it was about to clone. Every call must
succeed or fail typed, every disk must hold its image's bytes, no image may
be downloaded twice by one host (each agent reads Glance through a proxy of
its own that counts), and once the disks are deleted nothing may be left.
"""

import random
import threading
import time
import uuid

import fixtures
from oslo_utils import units
from testtools import content

from imaged import exception
from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images
from tests.scenario.faults import base as fault_base

HOSTS = 3
WORKERS_PER_HOST = 2
WORKLOAD_SECONDS = 60
MAX_DISKS_PER_WORKER = 2
CHECKED_BYTES = 64 * 1024
# Waits a loaded 2-core machine may legitimately end with: bounded, typed.
BOUNDED_WAITS = (exception.Timeout, exception.RootDiskBusy)


class FleetTest(fault_base.PoolFaultTestCase):

    def setUp(self):
        super().setUp()
        # Set-up, the workload, the final cleanup: longer than the default.
        self.useFixture(fixtures.Timeout(WORKLOAD_SECONDS + 360, gentle=True))

    def _images(self):
        """``[(image, guest bytes, kind)]``: kind is how a disk is made."""
        made = []
        for n in range(2):
            data = images.random_bytes(4 * units.Mi)
            made.append((self.upload(data, store='clone'), data, 'clone'))
        for n in range(2):
            data = images.random_bytes(2 * units.Mi)
            made.append((self.upload(images.qcow2_holding(data, 8 * units.Mi),
                                     disk_format='qcow2'), data, 'qcow2'))
        data = images.random_bytes(4 * units.Mi)
        made.append((self.upload(data), data, 'raw'))
        return made

    def _worker(self, agent, fleet_images, deadline, record, seed):
        rng = random.Random(seed)
        disks = []  # (instance_uuid, image_id)
        while time.monotonic() < deadline:
            if disks and (len(disks) >= MAX_DISKS_PER_WORKER or
                          rng.random() < 0.6):
                instance_uuid, image_id = disks.pop(rng.randrange(len(disks)))
                record(agent, 'delete', image_id, self._call(
                    agent, 'delete_root_disk', instance_uuid=instance_uuid))
                continue
            image, data, _kind = rng.choice(fleet_images)
            instance_uuid = str(uuid.uuid4())
            self.instances.append(instance_uuid)
            call = self._call(agent, 'create_root_disk',
                              instance_uuid=instance_uuid,
                              image_id=image['id'], size_gb=1)
            if 'result' in call:
                disks.append((instance_uuid, image['id']))
                name = call['result']['name']
                if self.ceph.read(name, 0, CHECKED_BYTES) != \
                        data[:CHECKED_BYTES]:
                    self.wrong_bytes.append((agent.host, image['id'], name))
            record(agent, 'create', image['id'], call)
        for instance_uuid, image_id in disks:
            record(agent, 'delete', image_id, self._call(
                agent, 'delete_root_disk', instance_uuid=instance_uuid))

    def _call(self, agent, method, **kwargs):
        call = {'started': time.monotonic()}
        try:
            call['result'] = self.api.client.prepare(
                server=agent.host, timeout=180, call_monitor_timeout=10).call(
                    self.ctxt, method, **kwargs)
        except Exception as e:
            call['error'] = e
        call['seconds'] = time.monotonic() - call['started']
        return call

    def _remove_instances(self):
        leftovers = [n for n in self.ceph.names()
                     if any(i in n for i in self.instances)]
        for name in leftovers:
            self.ceph.remove(name)

    def test_three_hosts_creating_deleting_and_cleaning_one_pool(self):
        fleet_images = self._images()
        image_ids = [image['id'] for image, _data, _kind in fleet_images]
        self.instances, self.wrong_bytes = [], []
        agents, proxies = [], []
        for n in range(HOSTS):
            proxy = self.glance_proxy()
            agents.append(self.start_agent({
                'glance': {'endpoint_override': proxy.endpoint},
                # Every host cleans the pool (not one elected): the
                # cleanup races every other host's clones.
                'image_cache': {'manager_interval': '1',
                                'rbd_base_min_age': '0',
                                'pool_cleanup': 'always'}}))
            proxies.append(proxy)
        self.addCleanup(self._remove_instances)
        processes = [agent.pids() for agent in agents]

        outcomes, lock = [], threading.Lock()

        def record(agent, op, image_id, call):
            with lock:
                outcomes.append((round(call['started'] - started, 1),
                                 agent.host, op, image_id,
                                 fault_base.outcome(call), call))
        started = time.monotonic()
        deadline = started + WORKLOAD_SECONDS
        threads = [threading.Thread(
            target=self._worker, daemon=True,
            args=(agent, fleet_images, deadline, record, n * 100 + w))
            for n, agent in enumerate(agents)
            for w in range(WORKERS_PER_HOST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WORKLOAD_SECONDS + 600)
        self.assertFalse([t for t in threads if t.is_alive()],
                         'workers still running')

        removals = sum(agent.log().count('Removed base image')
                       for agent in agents)
        self.addDetail('fleet', content.text_content('\n'.join(
            ['%d calls, %d base removals, %d creates by strategy %r' % (
                len(outcomes), removals,
                sum(1 for o in outcomes if o[2] == 'create'),
                _strategies(outcomes))] +
            ['%6.1fs %s %s %s %s %.1fs' % (o[:5] + (o[5]['seconds'],))
             for o in outcomes])))
        failures = [o[:5] for o in outcomes if o[4] != 'ok' and not (
            isinstance(o[5].get('error'), BOUNDED_WAITS))]
        self.assertEqual([], failures)
        self.assertEqual([], self.wrong_bytes)
        self.assertEqual(processes, [agent.pids() for agent in agents])

        # Nothing is left: no disk, no partial image, no base (min age 0).
        base.wait_for(lambda: not self.ceph.names_with(*image_ids), 90,
                      interval=1, what='the bases of %s to be removed' %
                      ', '.join(image_ids))
        self.assertEqual([], [n for n in self.ceph.names()
                              if any(i in n for i in self.instances)])

        # Downloads: none for a cloneable image; at most one per host for
        # one kept in its local cache (qcow2, converted to a local raw file).
        # A raw download streams into its RBD base only: once the cleanup
        # removed that base (min age 0) it is downloaded again, by design.
        counts = {(agent.host, image['id']): proxy.data_requests(image['id'])
                  for agent, proxy in zip(agents, proxies)
                  for image, _data, _kind in fleet_images}
        self.addDetail('downloads', content.text_content('\n'.join(
            '%s %s %s: %d' % (host, image_id, kind, counts[host, image_id])
            for host, image_id in sorted(counts)
            for kind in [k for i, _d, k in fleet_images
                         if i['id'] == image_id])))
        for image, _data, kind in fleet_images:
            per_host = [counts[agent.host, image['id']] for agent in agents]
            if kind == 'clone':
                self.assertEqual([0] * HOSTS, per_host, image['id'])
                self.assertDownloads(0, image['id'])
            elif kind == 'qcow2':
                self.assertLessEqual(max(per_host), 1, (image['id'],
                                                        per_host))
                served = self.glance.downloads(image['id'])
                if served is not None:
                    self.assertLessEqual(served, HOSTS, image['id'])


def _strategies(outcomes):
    counts = {}
    for o in outcomes:
        if o[2] == 'create' and 'result' in o[5]:
            strategy = o[5]['result']['strategy']
            counts[strategy] = counts.get(strategy, 0) + 1
    return counts
