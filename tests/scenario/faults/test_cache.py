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

"""The base cache facing bad bytes and a full disk."""

import os
import subprocess

from oslo_utils import units

from imaged import exception
from imaged.tempest_plugin.scenario import images
from tests.scenario.faults import base as fault_base

CACHE_SIZE = 64 * units.Mi


class CorruptedDownloadTest(fault_base.FaultTestCase):

    # Corrupts its own image's file in Glance's store, read by an agent
    # of its own: nothing shared is disturbed.
    exclusive = False

    def test_bytes_not_matching_glance_hash_are_refused_and_not_cached(self):
        store = self.conf.imaged_fault_injection.glance_file_store_dir
        if not store:
            self.fail('[imaged_fault_injection] glance_file_store_dir is '
                      'not set')
        data = images.random_bytes(4 * units.Mi)
        image = self.upload(data)
        stored = os.path.join(store, image['id'])
        self.assertEqual(len(data), os.path.getsize(stored))
        agent = self.start_agent()
        original = fault_base.corrupt_file(stored, units.Mi, 4096)
        instance_uuid = self.new_instance(agent.host)
        e = self.assertRaises(exception.ImageUnacceptable, self.create_on,
                              agent, image['id'], 1, instance_uuid)
        self.assertIn('hash', str(e))
        self.assertCleanCache(agent, image['id'])
        self.assertNotCached(image['id'], host=agent.host)
        self.assertNothingInPool(image['id'], instance_uuid)

        # The refusal is not remembered: good bytes are accepted.
        fault_base.restore_file(stored, units.Mi, original)
        disk = self.create_on(agent, image['id'], instance_uuid=instance_uuid)
        self.assertDiskHolds(disk['name'], data)


class CacheFullTest(fault_base.FaultTestCase):

    # Agents of its own on a small tmpfs: nothing shared is disturbed.
    exclusive = False

    def setUp(self):
        super().setUp()
        workdir = self.workdir()
        self.cache_dir = os.path.join(workdir, 'small-cache')
        os.mkdir(self.cache_dir)
        subprocess.run(['mount', '-t', 'tmpfs', '-o',
                        'size=%d' % CACHE_SIZE, 'tmpfs', self.cache_dir],
                       check=True, capture_output=True)
        # After the agent is stopped (cleanups run last-in, first-out).
        self.addCleanup(self._unmount)
        self.agent = self.start_agent(
            {'image_cache': {'base_dir': self.cache_dir}}, workdir=workdir)

    def _unmount(self):
        if subprocess.run(['umount', self.cache_dir]).returncode:
            subprocess.run(['umount', '-l', self.cache_dir], check=True)

    def assertCacheFullLeavesNothing(self, data, disk_format):
        image = self.upload(data, disk_format=disk_format)
        instance_uuid = self.new_instance(self.agent.host)
        e = self.assertRaises(exception.CacheFull, self.create_on,
                              self.agent, image['id'], 1, instance_uuid)
        self.assertIn(image['id'], str(e))
        self.assertCleanCache(self.agent, image['id'])
        self.assertEqual([], self.agent.base_files())
        self.assertNothingInPool(image['id'], instance_uuid)
        self.assertKeepsServing()

    def assertKeepsServing(self):
        small = images.random_bytes(units.Mi)
        image = self.upload(small)
        disk = self.create_on(self.agent, image['id'])
        self.assertDiskHolds(disk['name'], small)
        caps = self.api.get_capabilities(self.ctxt, self.agent.host)
        self.assertEqual(self.cache_dir, caps['cache']['path'])

    def _restart_keeping_local_copies(self):
        # Only a kept local copy fills the cache: with rbd_base_images (the
        # default) a raw image streams into Ceph and a qcow2 is converted
        # straight into it, so neither keeps its bytes on this host.
        self.stop_agent(self.agent)
        self.agent = self.start_agent(
            {'image_cache': {'base_dir': self.cache_dir,
                             'rbd_base_images': False}},
            workdir=self.workdir())

    def test_download_larger_than_the_cache_is_cache_full(self):
        self._restart_keeping_local_copies()
        self.assertCacheFullLeavesNothing(
            images.random_bytes(CACHE_SIZE + 32 * units.Mi), 'raw')

    def test_raw_image_larger_than_the_cache_streams_into_ceph(self):
        data = images.random_bytes(CACHE_SIZE + 32 * units.Mi)
        image = self.upload(data)
        disk = self.create_on(self.agent, image['id'])
        self.assertDiskHolds(disk['name'], data)
        self.assertEqual([], self.agent.base_files())
        self.assertCleanCache(self.agent, image['id'])

    @staticmethod
    def _qcow2_expanding_past_the_cache():
        """A few hundred KiB of qcow2 that expands to 96 MiB of data."""
        pattern = b'imaged scenario: this block is not zero. ' * 100
        data = (pattern * (96 * units.Mi // len(pattern) + 1))[:96 * units.Mi]
        return data, images.qcow2_holding(data, 96 * units.Mi,
                                          compressed=True)

    def test_conversion_larger_than_the_cache_is_cache_full(self):
        self._restart_keeping_local_copies()
        _data, qcow2 = self._qcow2_expanding_past_the_cache()
        self.assertLess(len(qcow2), 16 * units.Mi)
        self.assertCacheFullLeavesNothing(qcow2, 'qcow2')

    def test_conversion_larger_than_the_cache_goes_straight_into_ceph(self):
        data, qcow2 = self._qcow2_expanding_past_the_cache()
        image = self.upload(qcow2, disk_format='qcow2')
        disk = self.create_on(self.agent, image['id'])
        self.assertDiskHolds(disk['name'], data)
        self.assertEqual([], self.agent.base_files())
        self.assertCleanCache(self.agent, image['id'])
