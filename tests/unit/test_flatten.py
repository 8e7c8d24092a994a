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

"""Flattening root disks: flatten_root_disk, the policy, the depth bound."""

import fixtures

from imaged import exception
from imaged import rpcapi
from imaged.storage import trash
from tests.unit import test_bases
from tests.unit import test_manager

IMAGE, INSTANCE = test_manager.IMAGE, test_manager.INSTANCE
DATA = b'guest' * 1000


class FlattenRPCTest(test_manager.RPCTestCase):

    def setUp(self):
        super().setUp()
        self.url = self.cluster.add_glance_image(IMAGE, DATA)
        self.glance.add(IMAGE, DATA, direct_url=self.url)
        self.vms = self.cluster.pools['vms']

    def create(self):
        return self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE,
                                         IMAGE, 1)

    def test_a_flattened_disk_has_no_parent_and_the_same_bytes(self):
        self.assertEqual(self.url, self.create()['parent'])
        disk = self.vms[INSTANCE + '_disk']
        disk.blocks[4096] = b'written by the guest'
        before = disk.read(0, 8192)
        result = self.api.flatten_root_disk(self.ctxt, 'test-host', INSTANCE)
        self.assertEqual((INSTANCE, None), (result['instance_uuid'],
                                            result['parent']))
        self.assertIsNone(disk.parent_disk)
        self.assertEqual(before, disk.read(0, 8192))
        # The image can go now, and the disk does not notice.
        del self.cluster.pools['images'][IMAGE]
        self.assertEqual(before, disk.read(0, 8192))

    def test_flatten_is_idempotent(self):
        self.create()
        self.api.flatten_root_disk(self.ctxt, 'test-host', INSTANCE)
        again = self.api.flatten_root_disk(self.ctxt, 'test-host', INSTANCE)
        self.assertEqual((None, 0.0), (again['parent'], again['seconds']))

    def test_no_such_disk_is_typed(self):
        e = self.assertRaises(exception.RootDiskNotFound,
                              self.api.flatten_root_disk, self.ctxt,
                              'test-host', INSTANCE)
        self.assertIn(INSTANCE + '_disk', str(e))

    def test_flattening_a_trashed_image_s_last_clone_empties_the_trash(self):
        self.create()
        images = self.cluster.rados.Rados().open_ioctx('images')
        trash.move_to_trash(self.cluster.rbd, images, IMAGE, 'snap')
        self.api.flatten_root_disk(self.ctxt, 'test-host', INSTANCE)
        self.assertEqual({}, self.cluster.trash['images'])

    def test_on_create_flattens_before_answering(self):
        self.flags(flatten_root_disks='on_create', group='rbd')
        result = self.create()
        self.assertEqual(('clone', None), (result['strategy'],
                                           result['parent']))
        self.assertIsNone(self.vms[INSTANCE + '_disk'].parent_disk)
        self.assertEqual(DATA, self.vms[INSTANCE + '_disk'].read(0, len(DATA)))

    def test_a_chain_longer_than_max_clone_depth_is_flattened(self):
        self.flags(max_clone_depth=1, group='rbd')
        # The image is itself a clone (a snapshot of another disk).
        rbd = self.cluster.rbd
        images = self.cluster.rados.Rados().open_ioctx('images')
        child = '6b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'
        rbd.RBD().clone(images, IMAGE, 'snap', images, child)
        with rbd.Image(images, child) as image:
            image.create_snap('snap')
        self.glance.add(child, DATA, direct_url='rbd://%s/images/%s/snap' % (
            self.cluster.fsid, child))
        result = self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE,
                                           child, 1)
        self.assertIsNone(result['parent'])
        self.assertEqual(DATA, self.vms[INSTANCE + '_disk'].read(0, len(DATA)))

    def test_a_disk_of_a_base_is_one_deep_without_reading_its_chain(self):
        # Opening the chain of a lazy base's clone reads its source.
        self.flags(max_clone_depth=1, group='rbd')
        other = '0c3f6a52-7d1e-4b8a-9f2c-5e6d7a8b9c0d'
        self.glance.add(other, DATA)  # no location: a base is built
        flattener = self.manager.root_disks.storage.flattener
        self.useFixture(fixtures.MockPatchObject(
            flattener, 'depth', side_effect=AssertionError('chain read')))
        result = self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE,
                                           other, 1)
        self.assertEqual(('download', 'rbd://%s/vms/%s_base/snap' % (
            self.cluster.fsid, other)), (result['strategy'],
                                         result['parent']))

    def test_a_short_chain_stays_a_clone(self):
        self.flags(max_clone_depth=1, group='rbd')
        self.assertEqual(self.url, self.create()['parent'])

    def test_a_client_capped_at_1_1_refuses_flatten(self):
        self.create()
        self.flags(imaged='1.1', group='upgrade_levels')
        api = rpcapi.ImageAgentAPI(self.conf)
        e = self.assertRaises(exception.RPCVersionCapped,
                              api.flatten_root_disk, self.ctxt, 'test-host',
                              INSTANCE)
        self.assertIn('1.2', str(e))
        self.assertIsNotNone(self.vms[INSTANCE + '_disk'].parent_disk)


class FlattenSlotsTest(test_bases.PoolTestCase):

    def test_no_free_slot_within_the_wait_is_a_timeout(self):
        flattener = self.a.storage.flattener
        self.a.create(1)
        flattener._slots.acquire()
        try:
            self.assertRaises(exception.Timeout, flattener.flatten,
                              test_bases.instance(1) + '_disk', wait=0.01)
        finally:
            flattener._slots.release()
        self.assertGreaterEqual(
            flattener.flatten(test_bases.instance(1) + '_disk', wait=1), 0)
        self.assertEqual(0, flattener.depth(test_bases.instance(1) + '_disk'))
