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

"""Clones of format 2: parents deleted while their clones live on."""

from imaged.storage import trash
from tests.unit import fakes
from tests.unit import test_bases

IMAGE, BASE, DATA = test_bases.IMAGE, test_bases.BASE, test_bases.DATA
instance = test_bases.instance

GLANCE_IMAGE = '6b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'


class TrashedBaseTest(test_bases.PoolTestCase):

    def trash(self, pool='vms'):
        return [name for name, _disk in self.cluster.trash[pool].values()]

    def test_a_deleted_image_s_cloned_base_goes_to_the_trash(self):
        self.a.create(1)
        self.a.create(2)
        self.assertEqual([{'image_id': IMAGE, 'where': 'rbd'}],
                         self.b.image_cache.purge_image(IMAGE, 'deleted'))
        self.assertNotIn(BASE, self.vms)
        self.assertEqual([BASE], self.trash())
        disk = self.vms[instance(1) + '_disk']
        self.assertEqual(DATA, disk.read(0, len(DATA)))
        # A new disk of that id would need a new base, never the trashed.
        self.assertIsNone(self.a.storage.bases.location(IMAGE)[0])

    def test_the_trash_entry_goes_with_the_last_clone(self):
        self.a.create(1)
        self.a.create(2)
        self.b.image_cache.purge_image(IMAGE, 'deleted')
        self.a.disks.delete(instance(1))
        self.assertEqual([BASE], self.trash())
        self.a.disks.delete(instance(2))
        self.assertEqual([], self.trash())

    def test_the_cleanup_purges_trashed_bases_nothing_needs(self):
        self.a.create(1)
        self.b.image_cache.purge_image(IMAGE, 'deleted')
        # The last clone removed by someone else (rbd rm).
        self.cluster.rbd.RBD().remove(
            self.cluster.rados.Rados().open_ioctx('vms'),
            instance(1) + '_disk')
        self.cluster.pools['vms']['other_base_not_ours'] = \
            fakes.FakeDisk(1)
        self.assertEqual([BASE], self.a.storage.bases.purge_trash())
        self.assertEqual([], self.trash())

    def test_a_purge_of_a_live_image_still_waits_for_its_clones(self):
        self.a.create(1)
        self.assertEqual([], self.b.image_cache.purge_image(IMAGE, 'test'))
        self.assertIn(BASE, self.vms)
        self.assertEqual([], self.trash())

    def test_clones_of_format_1_keep_the_base(self):
        self.cluster.clone_format = 1
        self.a.create(1)
        # librbd's refusal, whatever its class: the base must stay whole.
        self.assertRaises(Exception,  # noqa: H202
                          self.b.storage.bases.remove_if_unused,
                          IMAGE, None, deleted=True)
        base = self.base()
        self.assertEqual(({'snap'}, 'true'),
                         (base.protected, base.metadata['imaged.complete']))

    def test_glance_s_deleted_image_leaves_the_trash_with_its_last_disk(self):
        # Glance's RBD store names the image after its id.
        url = self.cluster.add_glance_image(GLANCE_IMAGE, DATA)
        self.glance.add(GLANCE_IMAGE, DATA, direct_url=url)
        for n in (1, 2, 3):
            self.assertEqual('clone',
                             self.a.create(n, GLANCE_IMAGE)['strategy'])
        images = self.cluster.rados.Rados().open_ioctx('images')
        # What Glance's RBD driver does on delete.
        self.assertTrue(trash.move_to_trash(self.cluster.rbd, images,
                                            GLANCE_IMAGE, 'snap'))
        for n in (1, 2):
            self.a.disks.delete(instance(n))
            self.assertEqual([GLANCE_IMAGE], self.trash('images'))
        disk = self.vms[instance(3) + '_disk']
        self.assertEqual(DATA, disk.read(0, len(DATA)))
        self.a.disks.delete(instance(3))
        self.assertEqual([], self.trash('images'))
