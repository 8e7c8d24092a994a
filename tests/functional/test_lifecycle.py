"""Images that can be deleted (clones of format 2), flattened disks."""

import os

from oslo_utils import units

from tests.functional import base


class DeletableImageTest(base.FunctionalTestCase):

    def test_glance_deletes_an_image_that_has_three_root_disks(self):
        data = os.urandom(units.Mi) + bytes(3 * units.Mi) + b'tail'
        image = self.glance.create(data, backend='ceph')
        images_pool = base.stack()['CEPH_IMAGES_POOL']
        disks = [self.create_root_disk(image['id']) for _ in range(3)]
        self.assertEqual({'clone'}, {d['strategy'] for d in disks})

        # 204: Glance moves the image, whose snapshot has clones of
        # format 2, to the RBD trash (409 "in use" with format 1).
        resp = base.keystone_session('DEMO').delete(
            '%s/v2/images/%s' % (base.stack()['GLANCE_URL'], image['id']))
        self.assertEqual(204, resp.status_code, resp.text)
        self.assertNotIn(image['id'], self.ceph.names(images_pool))
        self.assertEqual([image['id']], [
            n for n in self.ceph.trash(images_pool) if n == image['id']])

        for disk in disks:
            self.assertEqual(data[:units.Mi],
                             self.ceph.read(disk['name'], 0, units.Mi))
            self.assertEqual(b'tail', self.ceph.read(
                disk['name'], len(data) - 4, 4))
        for disk in disks[:2]:
            self.api.delete_root_disk(self.ctxt, self.host,
                                      disk['instance_uuid'])
            self.assertIn(image['id'], self.ceph.trash(images_pool))
        self.api.delete_root_disk(self.ctxt, self.host,
                                  disks[2]['instance_uuid'])
        self.assertNotIn(image['id'], self.ceph.trash(images_pool))

    def test_capabilities_list_no_problem_on_a_mimic_cluster(self):
        caps = self.api.get_capabilities(self.ctxt, self.host)
        self.assertEqual([], caps['problems'])


class FlattenTest(base.FunctionalTestCase):

    def test_a_flattened_disk_has_no_parent_and_the_same_bytes(self):
        data = os.urandom(units.Mi)
        image = self.glance.create(data, backend='ceph')
        disk = self.create_root_disk(image['id'])
        self.assertEqual('clone', disk['strategy'])
        name = disk['name']
        self.ceph.write(name, 512 * units.Mi, b'guest at 512 MiB')
        self.ceph.write(name, 0, b'guest at 0')
        before = [self.ceph.read(name, 0, units.Mi),
                  self.ceph.read(name, 512 * units.Mi, units.Mi)]
        result = self.api.flatten_root_disk(self.ctxt, self.host,
                                            disk['instance_uuid'])
        self.assertEqual((disk['instance_uuid'], None),
                         (result['instance_uuid'], result['parent']))
        self.assertIsNone(self.ceph.parent(name))
        self.assertEqual(before, [self.ceph.read(name, 0, units.Mi),
                                  self.ceph.read(name, 512 * units.Mi,
                                                 units.Mi)])
        self.assertEqual(b'guest at 0' + data[10:units.Mi], before[0])
        again = self.api.flatten_root_disk(self.ctxt, self.host,
                                           disk['instance_uuid'])
        self.assertEqual(0.0, again['seconds'])


class SnapshotTest(base.FunctionalTestCase):

    def queued_image(self):
        image = self.glance.client.images.create(
            name='imaged-snapshot-test', disk_format='raw',
            container_format='bare')
        self.addCleanup(self.glance.delete, image['id'])
        return image

    def guest_disk(self):
        data = os.urandom(units.Mi)
        image = self.glance.create(data, backend='ceph')
        disk = self.create_root_disk(image['id'])
        self.ceph.write(disk['name'], 0, b'guest at 0')
        self.ceph.write(disk['name'], 512 * units.Mi, b'guest at 512 MiB')
        return disk

    def snapshot_equals_disk(self, disk, image_id, pool=None):
        for offset in (0, 512 * units.Mi):
            self.assertEqual(
                self.ceph.read(disk['name'], offset, units.Mi),
                self.ceph.read(image_id, offset, units.Mi, pool=pool))

    def test_strategy_clone_registers_a_flattened_copy(self):
        disk = self.guest_disk()
        target = self.queued_image()
        result = self.api.snapshot_root_disk(self.ctxt, self.host,
                                             disk['instance_uuid'],
                                             target['id'])
        self.assertEqual(('clone', target['id'], units.Gi),
                         (result['strategy'], result['image_id'],
                          result['size_bytes']))
        self.assertEqual('active',
                         self.glance.client.images.get(target['id'])['status'])
        self.assertEqual(0, sum(
            1 for line in open(base.stack()['GLANCE_ACCESS_LOG'],
                               errors='replace')
            if 'PUT /v2/images/%s/file' % target['id'] in line))
        pool = base.stack()['CEPH_IMAGES_POOL']
        self.addCleanup(self.ceph.remove, target['id'], pool)
        self.assertIsNone(self.ceph.parent(target['id'], pool=pool))
        self.snapshot_equals_disk(disk, target['id'], pool=pool)
        self.assertEqual([], [n for n in self.ceph.names(pool)
                              if n.startswith(target['id'] + '.')])
        # A new root disk from it is a clone with the guest's data.
        again = self.create_root_disk(target['id'])
        self.assertEqual('clone', again['strategy'])
        self.assertEqual(b'guest at 0', self.ceph.read(again['name'], 0, 10))
        # Idempotent: the retry of a finished call answers the same.
        retry = self.api.snapshot_root_disk(self.ctxt, self.host,
                                            disk['instance_uuid'],
                                            target['id'])
        self.assertEqual('clone', retry['strategy'])

    def test_no_such_disk_and_an_active_image_are_typed(self):
        from imaged import exception
        target = self.queued_image()
        self.assertRaises(exception.RootDiskNotFound,
                          self.api.snapshot_root_disk, self.ctxt, self.host,
                          self.new_instance(), target['id'])
        disk = self.guest_disk()
        active = self.glance.create(b'x' * 512, backend='local')
        self.assertRaises(exception.ImageNotWritable,
                          self.api.snapshot_root_disk, self.ctxt, self.host,
                          disk['instance_uuid'], active['id'])


class UploadSnapshotTest(SnapshotTest):

    daemon_options = {'rbd': {'snapshot_strategy': 'upload'}}

    def test_strategy_clone_registers_a_flattened_copy(self):
        self.skipTest('this agent uploads')

    def test_strategy_upload_sends_the_bytes(self):
        disk = self.guest_disk()
        target = self.queued_image()
        result = self.api.snapshot_root_disk(self.ctxt, self.host,
                                             disk['instance_uuid'],
                                             target['id'])
        self.assertEqual('upload', result['strategy'])
        record = self.glance.client.images.get(target['id'])
        self.assertEqual(('active', units.Gi), (record['status'],
                                                record['size']))
        got = b''.join(self.glance.client.images.data(target['id']))
        self.assertEqual(units.Gi, len(got))
        for offset in (0, 512 * units.Mi):
            self.assertEqual(self.ceph.read(disk['name'], offset, units.Mi),
                             got[offset:offset + units.Mi])
