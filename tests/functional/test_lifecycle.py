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

"""Images that can be deleted (clones of format 2), flattened disks."""

import json
import os
import signal
import subprocess
import threading
import uuid

import fixtures
from oslo_utils import units
from testtools import content

from imaged import exception
from imaged.storage import partial
from imaged.storage import partial_names
from imaged.storage import snapshots
from tests.functional import base


class DeletableImageTest(base.FunctionalTestCase):

    def test_glance_deletes_an_image_that_has_three_root_disks(self):
        data = base.random_raw(units.Mi) + bytes(3 * units.Mi) + b'tail'
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
        data = base.random_raw(units.Mi)
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


class _Snapshots:
    """What every snapshot test makes and checks."""

    def queued_image(self, disk_format='raw'):
        image = self.glance.client.images.create(
            name='imaged-snapshot-test', disk_format=disk_format,
            container_format='bare')
        self.addCleanup(self.glance.delete, image['id'])
        return image

    def guest_disk(self):
        data = base.random_raw(units.Mi)
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


class SnapshotTest(_Snapshots, base.FunctionalTestCase):

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

    def test_a_qcow2_image_gets_qemu_img_s_conversion_uploaded(self):
        # Glance's RBD store keeps raw bytes: a qcow2 image is uploaded.
        disk = self.guest_disk()
        target = self.queued_image(disk_format='qcow2')
        result = self.api.snapshot_root_disk(self.ctxt, self.host,
                                             disk['instance_uuid'],
                                             target['id'])
        self.assertEqual('upload', result['strategy'])
        self.assertIn('convert', ' '.join(result['timings']))
        record = self.glance.client.images.get(target['id'])
        self.assertEqual(('active', 'qcow2'), (record['status'],
                                               record['disk_format']))
        # Sparse: far less than the 1 GiB disk.
        self.assertLess(record['size'], 64 * units.Mi)
        workdir = self.useFixture(fixtures.TempDir()).path
        qcow2 = os.path.join(workdir, 'snapshot.qcow2')
        with open(qcow2, 'wb') as f:
            for chunk in self.glance.client.images.data(target['id']):
                f.write(chunk)
        info = json.loads(subprocess.check_output(
            ['qemu-img', 'info', '--output=json', qcow2], timeout=60))
        self.assertEqual(('qcow2', units.Gi),
                         (info['format'], info['virtual-size']))
        raw = os.path.join(workdir, 'snapshot.raw')
        subprocess.check_call(['qemu-img', 'convert', '-f', 'qcow2', '-O',
                               'raw', qcow2, raw], timeout=120)
        with open(raw, 'rb') as f:
            for offset in (0, 512 * units.Mi):
                f.seek(offset)
                self.assertEqual(
                    self.ceph.read(disk['name'], offset, units.Mi),
                    f.read(units.Mi))
        # Nothing left in the cache's scratch directory.
        scratch = os.path.join(self.daemon.workdir, 'state')
        self.assertEqual([], [
            name for _d, _s, names in os.walk(scratch) for name in names
            if name.startswith(target['id'])])

    def test_no_such_disk_and_an_active_image_are_typed(self):
        target = self.queued_image()
        self.assertRaises(exception.RootDiskNotFound,
                          self.api.snapshot_root_disk, self.ctxt, self.host,
                          self.new_instance(), target['id'])
        disk = self.guest_disk()
        active = self.glance.create(b'x' * 512, backend='local')
        self.assertRaises(exception.ImageNotWritable,
                          self.api.snapshot_root_disk, self.ctxt, self.host,
                          disk['instance_uuid'], active['id'])


class FileGlanceSnapshotTest(_Snapshots, base.FunctionalTestCase):
    """Against the stack's second Glance, whose only store is the file
    store (``glance-file``): nothing to copy into, so imaged uploads."""

    @classmethod
    def setUpClass(cls):
        cls.daemon_options = {'glance': {
            'endpoint_override': base.stack()['GLANCE_FILE_URL']}}
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.glance = base.Glance(self, url=base.stack()['GLANCE_FILE_URL'])

    def guest_disk(self):
        # By download: this Glance keeps the image in a file.
        image = self.glance.create(base.random_raw(units.Mi), backend=None)
        disk = self.create_root_disk(image['id'])
        self.assertEqual('download', disk['strategy'])
        self.ceph.write(disk['name'], 0, b'guest at 0')
        self.ceph.write(disk['name'], 512 * units.Mi, b'guest at 512 MiB')
        return disk

    def puts(self, image_id):
        with open(base.stack()['GLANCE_FILE_ACCESS_LOG'],
                  errors='replace') as log:
            return sum(1 for line in log
                       if 'PUT /v2/images/%s/file' % image_id in line)

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
        # Nothing was made in Glance's Ceph pool for it.
        pool = base.stack()['CEPH_IMAGES_POOL']
        self.assertEqual([], [n for n in self.ceph.names(pool)
                              if n.startswith(target['id'])])
        # Idempotent: the retry of a finished upload answers the same,
        # and no second PUT reaches Glance.
        retry = self.api.snapshot_root_disk(self.ctxt, self.host,
                                            disk['instance_uuid'],
                                            target['id'])
        self.assertEqual('upload', retry['strategy'])
        self.assertEqual(1, self.puts(target['id']))
        # Another disk's snapshot is never taken for this one.
        other = self.guest_disk()
        self.assertRaises(exception.ImageNotWritable,
                          self.api.snapshot_root_disk, self.ctxt, self.host,
                          other['instance_uuid'], target['id'])


class SnapshotRetryTest(_Snapshots, base.FunctionalTestCase):
    """A snapshot cut off at any step, then asked again: the image ends
    ``active`` with the disk's bytes, and nothing is left in either pool."""

    def setUp(self):
        super().setUp()
        self.pool = base.stack()['CEPH_IMAGES_POOL']

    def disk_snapshots(self, name):
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            with self.ceph.rbd.Image(ioctx, name, read_only=True) as image:
                return [s['name'] for s in image.list_snaps()]

    def plant_disk_snapshot(self, disk, image_id):
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            with self.ceph.rbd.Image(ioctx, disk['name']) as image:
                image.create_snap(snapshots.disk_snapshot_name(image_id))

    def plant_copy(self, disk, image_id, host, finished):
        """The clone of the disk's snapshot in Glance's pool: under this
        host's partial name, or finished under the image id."""
        part = partial_names.partial_name(image_id, host)
        rbd = self.ceph.rbd
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as disk_ioctx, \
                self.ceph.cluster.open_ioctx(self.pool) as ioctx:
            rbd.RBD().clone(disk_ioctx, disk['name'],
                            snapshots.disk_snapshot_name(image_id),
                            ioctx, part)
            with rbd.Image(ioctx, part) as image:
                image.metadata_set(partial.OWNER_KEY, host)
                if finished:
                    image.flatten()
                    image.metadata_set(snapshots.SOURCE_KEY,
                                       disk['instance_uuid'])
                    image.create_snap(snapshots.SNAPSHOT)
                    image.protect_snap(snapshots.SNAPSHOT)
            if finished:
                rbd.RBD().rename(ioctx, part, image_id)
        self.addCleanup(self.ceph.remove, part, self.pool)
        self.addCleanup(self.ceph.remove, image_id, self.pool)

    def assert_finished(self, disk, image_id, result):
        self.assertEqual(('clone', image_id),
                         (result['strategy'], result['image_id']))
        self.assertEqual('active',
                         self.glance.client.images.get(image_id)['status'])
        self.assertIsNone(self.ceph.parent(image_id, pool=self.pool))
        self.snapshot_equals_disk(disk, image_id, pool=self.pool)
        self.assertEqual([], [n for n in self.ceph.names(self.pool)
                              if n.startswith(image_id + '.')])
        self.assertEqual([], self.disk_snapshots(disk['name']))

    def snapshot(self, disk, image_id, host=None):
        return self.api.snapshot_root_disk(self.ctxt, host or self.host,
                                           disk['instance_uuid'], image_id)

    def test_the_leftovers_of_each_step_are_taken_up(self):
        disk = self.guest_disk()
        # Cut off after the disk's temporary snapshot.
        target = self.queued_image()
        self.plant_disk_snapshot(disk, target['id'])
        self.assert_finished(disk, target['id'],
                             self.snapshot(disk, target['id']))
        # In the copy: a partial clone in Glance's pool.
        target = self.queued_image()
        self.plant_disk_snapshot(disk, target['id'])
        self.plant_copy(disk, target['id'], self.host, finished=False)
        self.assert_finished(disk, target['id'],
                             self.snapshot(disk, target['id']))
        # Before the location: a finished copy under the image id.
        target = self.queued_image()
        self.plant_disk_snapshot(disk, target['id'])
        self.plant_copy(disk, target['id'], self.host, finished=True)
        self.assert_finished(disk, target['id'],
                             self.snapshot(disk, target['id']))
        # After the location, before the disk's snapshot went: the image
        # is active already, and the retry answers as the call would have.
        self.plant_disk_snapshot(disk, target['id'])
        self.assert_finished(disk, target['id'],
                             self.snapshot(disk, target['id']))
        # Someone else's image under that id is never registered.
        target = self.queued_image()
        other = self.guest_disk()
        self.plant_disk_snapshot(other, target['id'])
        self.plant_copy(other, target['id'], self.host, finished=True)
        self.assertRaises(exception.ImageNotWritable, self.snapshot, disk,
                          target['id'])
        self.assertEqual('queued',
                         self.glance.client.images.get(target['id'])['status'])
        self.assertEqual([], self.disk_snapshots(disk['name']))

    def test_sigkill_in_the_copy_then_the_retry_finishes(self):
        workdir = self.useFixture(fixtures.TempDir()).path
        host = 'snapkill-%s' % uuid.uuid4().hex[:8]
        # Its disk lock, held when it dies, runs out after 10 s.
        agent = base.Daemon(workdir, host,
                            {'rbd': {'base_lock_duration': '10'}}).start()
        self.addCleanup(agent.kill)
        self.addOnException(lambda exc_info: self.addDetail(
            'agent-log', content.text_content(agent.log())))
        base.FunctionalTestCase.wait_until_serving(self.api, self.ctxt, host,
                                                   agent)
        disk = self.guest_disk()
        # Enough data that the flatten of the copy takes a while.
        chunk = base.random_raw(4 * units.Mi)
        for n in range(48):
            self.ceph.write(disk['name'], (64 + 8 * n) * units.Mi, chunk)
        target = self.queued_image()
        part_prefix = target['id'] + '.'
        self.addCleanup(self.ceph.remove, target['id'], self.pool)
        result = {}

        def call():
            try:
                result['ok'] = self.snapshot(disk, target['id'], host=host)
            except Exception as e:
                result['error'] = e
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        base.wait_for(lambda: result or any(
            n.startswith(part_prefix) for n in self.ceph.names(self.pool)),
            120, interval=0.01, what='the copy to start')
        if 'ok' in result:
            self.fail('the snapshot finished before the kill: %s' % result)
        os.killpg(agent.process.pid, signal.SIGKILL)
        agent.process.wait(30)
        leftovers = [n for n in self.ceph.names(self.pool)
                     if n.startswith(part_prefix)]
        self.assertNotEqual([], leftovers)
        self.assertEqual('queued',
                         self.glance.client.images.get(target['id'])['status'])
        # The same host again (a restarted agent), and the call again.
        agent.start()
        base.FunctionalTestCase.wait_until_serving(self.api, self.ctxt, host,
                                                   agent)
        self.assert_finished(disk, target['id'],
                             self.snapshot(disk, target['id'], host=host))
        caller.join(60)
