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

"""Root disks from Glance images: clone, download, cache, repeat, delete."""

import uuid

from oslo_utils import units

from imaged import exception
from imaged.tempest_plugin.scenario import backends
from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images


class CloneTest(base.ScenarioTestCase):

    def test_raw_image_in_ceph_store_becomes_a_clone_of_its_snapshot(self):
        data = images.random_bytes(3 * units.Mi)
        image = self.upload(data, store='clone')
        disk = self.create_root_disk(image['id'], size_gb=2)
        self.assertEqual('clone', disk['strategy'])
        # A securely configured Glance shows no location in the record (the
        # agent reads it from the service-only locations API); one that
        # shows it must show the parent.
        if image.get('direct_url'):
            self.assertEqual(image['direct_url'], disk['parent'])
        self.assertEqual(
            (self.ceph.pool, base.disk_name(disk['instance_uuid']),
             2 * units.Gi),
            (disk['pool'], disk['name'], disk['size_bytes']))
        # Ceph agrees: a 2 GiB clone of Glance's snapshot of this image,
        # holding the image's bytes.
        _fsid, pool, name, snap = disk['parent'][len('rbd://'):].split('/')
        self.assertEqual(image['id'], name)
        self.assertEqual((pool, name, snap), self.ceph.parent(disk['name']))
        self.assertDiskHolds(disk['name'], data, size_bytes=2 * units.Gi)
        self.assertDownloads(0, image['id'])
        self.assertNotCached(image['id'])


class DownloadTest(base.ScenarioTestCase):

    def test_raw_image_outside_ceph_is_downloaded_and_imported(self):
        data = (images.random_bytes(units.Mi) + bytes(5 * units.Mi) +
                b'the last bytes')
        image = self.upload(data, store='download')
        disk = self.create_root_disk(image['id'])
        self.assertEqual('download', disk['strategy'])
        self.assertEqual(units.Gi, disk['size_bytes'])
        self.assertDiskHolds(disk['name'], data, size_bytes=units.Gi)
        # Past the image the disk reads as zeros.
        self.assertEqual(bytes(4096), self.ceph.read(disk['name'],
                                                     len(data), 4096))
        self.assertEqual(len(data), self.cached()[image['id']]['size_bytes'])
        self.assertDownloads(1, image['id'])

    def test_qcow2_image_is_converted_to_raw(self):
        data = images.random_bytes(2 * units.Mi)
        image = self.upload(images.qcow2_holding(data, 16 * units.Mi),
                            disk_format='qcow2', store='download')
        disk = self.create_root_disk(image['id'])
        self.assertEqual('download', disk['strategy'])
        self.assertDiskHolds(disk['name'], data, size_bytes=units.Gi)
        self.assertEqual(bytes(units.Mi), self.ceph.read(
            disk['name'], 15 * units.Mi, units.Mi))
        # The cache keeps the raw image: its size is the virtual size.
        self.assertEqual(16 * units.Mi,
                         self.cached()[image['id']]['size_bytes'])

    def test_compressed_qcow2_in_ceph_store_is_downloaded_not_cloned(self):
        data = images.random_bytes(units.Mi)
        image = self.upload(images.qcow2_holding(data, compressed=True),
                            disk_format='qcow2', store='clone')
        disk = self.create_root_disk(image['id'])
        self.assertEqual(('download', 'qcow2'),
                         (disk['strategy'], image['disk_format']))
        self.assertDiskHolds(disk['name'], data)


class CacheTest(base.ScenarioTestCase):

    def test_second_disk_from_an_image_reuses_the_cached_download(self):
        data = images.random_bytes(4 * units.Mi)
        image = self.upload(data, store='download')
        first = self.create_root_disk(image['id'])
        entry = self.cached()[image['id']]
        second = self.create_root_disk(image['id'], size_gb=2)
        self.assertNotEqual(first['name'], second['name'])
        self.assertEqual(('download', 'download'),
                         (first['strategy'], second['strategy']))
        self.assertDiskHolds(first['name'], data, size_bytes=units.Gi)
        self.assertDiskHolds(second['name'], data, size_bytes=2 * units.Gi)
        self.assertDownloads(1, image['id'])
        again = self.cached()[image['id']]
        self.assertEqual(entry['size_bytes'], again['size_bytes'])
        self.assertGreaterEqual(again['last_used'], entry['last_used'])

    def test_cloned_images_are_not_cached(self):
        image = self.upload(images.random_bytes(units.Mi), store='clone')
        self.create_root_disk(image['id'])
        self.create_root_disk(image['id'])
        self.assertNotCached(image['id'])
        self.assertDownloads(0, image['id'])


class RepeatTest(base.ScenarioTestCase):

    def test_repeated_call_returns_the_existing_disk_unchanged(self):
        data = images.random_bytes(units.Mi)
        image = self.upload(data, store='download')
        instance_uuid = self.new_instance()
        first = self.create_root_disk(image['id'], 2, instance_uuid)
        again = self.create_root_disk(image['id'], 2, instance_uuid)
        smaller = self.create_root_disk(image['id'], 1, instance_uuid)
        self.assertEqual('existing', again['strategy'])
        self.assertEqual('existing', smaller['strategy'])
        for result in (again, smaller):
            self.assertEqual(
                (first['name'], first['pool'], first['size_bytes']),
                (result['name'], result['pool'], result['size_bytes']))
        self.assertDiskHolds(first['name'], data, size_bytes=2 * units.Gi)
        self.assertDownloads(1, image['id'])

    def test_repeat_asking_for_a_larger_disk_is_refused_and_changes_nothing(
            self):
        image = self.upload(images.random_bytes(units.Mi), store='clone')
        instance_uuid = self.new_instance()
        first = self.create_root_disk(image['id'], 1, instance_uuid)
        e = self.assertRaises(exception.InvalidInput, self.create_root_disk,
                              image['id'], 2, instance_uuid)
        self.assertIn('size_gb', str(e))
        self.assertEqual(units.Gi, self.ceph.size(first['name']))

    def test_repeat_from_another_image_is_refused_and_keeps_the_disk(self):
        first_data = images.random_bytes(units.Mi)
        first_image = self.upload(first_data, store='clone')
        other_image = self.upload(images.random_bytes(units.Mi),
                                  store='clone')
        instance_uuid = self.new_instance()
        first = self.create_root_disk(first_image['id'], 1, instance_uuid)
        e = self.assertRaises(exception.DiskImageMismatch,
                              self.create_root_disk, other_image['id'], 1,
                              instance_uuid)
        self.assertIn(first_image['id'], str(e))
        self.assertIn(other_image['id'], str(e))
        self.assertDiskHolds(first['name'], first_data)
        again = self.create_root_disk(first_image['id'], 1, instance_uuid)
        self.assertEqual(('existing', first['parent']),
                         (again['strategy'], again['parent']))


class DeleteTest(base.ScenarioTestCase):

    def test_delete_removes_the_disk_and_a_second_delete_is_a_no_op(self):
        image = self.upload(images.random_bytes(units.Mi), store='download')
        disk = self.create_root_disk(image['id'])
        instance_uuid = disk['instance_uuid']
        self.assertIsNone(self.api.delete_root_disk(self.ctxt, self.host,
                                                    instance_uuid))
        self.assertNoDisk(instance_uuid)
        self.assertIsNone(self.api.delete_root_disk(self.ctxt, self.host,
                                                    instance_uuid))
        self.assertNoDisk(instance_uuid)

    def test_deleting_a_clone_leaves_glance_image_usable(self):
        data = images.random_bytes(units.Mi)
        image = self.upload(data, store='clone')
        disk = self.create_root_disk(image['id'])
        self.api.delete_root_disk(self.ctxt, self.host,
                                  disk['instance_uuid'])
        self.assertNoDisk(disk['instance_uuid'])
        again = self.create_root_disk(image['id'])
        self.assertEqual('clone', again['strategy'])
        self.assertDiskHolds(again['name'], data)

    def test_delete_of_an_unknown_instance_is_not_an_error(self):
        instance_uuid = self.new_instance()
        self.assertIsNone(self.api.delete_root_disk(self.ctxt, self.host,
                                                    instance_uuid))

    def test_disk_can_be_created_again_after_delete(self):
        data = images.random_bytes(units.Mi)
        image = self.upload(data, store='download')
        instance_uuid = self.new_instance()
        self.create_root_disk(image['id'], 1, instance_uuid)
        self.api.delete_root_disk(self.ctxt, self.host, instance_uuid)
        again = self.create_root_disk(image['id'], 2, instance_uuid)
        self.assertEqual(('download', 2 * units.Gi),
                         (again['strategy'], again['size_bytes']))
        self.assertDiskHolds(again['name'], data, size_bytes=2 * units.Gi)
        self.assertDownloads(1, image['id'])


class RefusalTest(base.ScenarioTestCase):

    def test_unknown_image_is_image_not_found(self):
        image_id = '00000000-0000-4000-8000-%s' % uuid.uuid4().hex[:12]
        instance_uuid = self.new_instance()
        e = self.assertRaises(exception.ImageNotFound, self.create_root_disk,
                              image_id, 1, instance_uuid)
        self.assertIn(image_id, str(e))
        self.assertNoDisk(instance_uuid)

    def test_image_without_data_is_unacceptable(self):
        image = self.new_image_record()
        instance_uuid = self.new_instance()
        e = self.assertRaises(exception.ImageUnacceptable,
                              self.create_root_disk, image['id'], 1,
                              instance_uuid)
        self.assertIn(image['id'], str(e))
        self.assertNoDisk(instance_uuid)
        self.assertNotCached(image['id'])

    def test_deactivated_image_is_unacceptable_for_a_clone_or_download(self):
        for store in ('clone', 'download'):
            image = self.upload(images.random_bytes(units.Mi), store=store)
            backends.glance_call(self.glance.client.deactivate_image,
                                 image['id'])
            # Glance deletes a deactivated image's record but leaves its
            # data in the store: active again before the upload's cleanup
            # deletes it.
            self.addCleanup(backends.glance_call,
                            self.glance.client.reactivate_image,
                            image['id'])
            instance_uuid = self.new_instance()
            self.assertRaises(exception.ImageUnacceptable,
                              self.create_root_disk, image['id'], 1,
                              instance_uuid)
            self.assertNoDisk(instance_uuid)
            self.assertNotCached(image['id'])
            self.assertDownloads(0, image['id'])
