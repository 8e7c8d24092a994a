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

"""snapshot_root_disk on fakes: strategies, retries, typed errors."""

import os
from unittest import mock

from imaged import exception
from tests.unit import test_manager

IMAGE, INSTANCE = test_manager.IMAGE, test_manager.INSTANCE
TARGET = '7d3c1990-7e1b-4a52-9c1e-5b0f6b3a2c11'
DATA = b'guest' * 1000


class SnapshotRPCTest(test_manager.RPCTestCase):

    def setUp(self):
        super().setUp()
        url = self.cluster.add_glance_image(IMAGE, DATA)
        self.glance.add(IMAGE, DATA, direct_url=url)
        self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE, IMAGE, 1)
        self.disk = self.cluster.pools['vms'][INSTANCE + '_disk']
        self.disk.blocks[4096] = b'written by the guest'
        self.glance.add(TARGET, status='queued', owner='p',
                        container_format='bare')

    def snapshot(self, image_id=TARGET, instance=INSTANCE):
        return self.api.snapshot_root_disk(self.ctxt, 'test-host', instance,
                                           image_id)

    def test_clone_copies_inside_ceph_and_registers_the_location(self):
        result = self.snapshot()
        self.assertEqual(('clone', TARGET), (result['strategy'],
                                             result['image_id']))
        copy = self.cluster.pools['images'][TARGET]
        self.assertIsNone(copy.parent_disk)
        self.assertEqual({'snap'}, copy.protected)
        self.assertEqual(self.disk.read(0, 8192), copy.read(0, 8192))
        self.assertEqual(['rbd://%s/images/%s/snap' % (self.cluster.fsid,
                                                       TARGET)],
                         self.glance.images[TARGET]['locations'])
        # The temporary snapshot of the disk is gone.
        self.assertEqual({}, self.disk.snapshots)
        self.assertEqual('clone', self.snapshot()['strategy'])

    def test_a_partial_copy_left_by_a_kill_is_removed_on_retry(self):
        from imaged.storage import partial_names
        left = partial_names.partial_name(TARGET, 'test-host')
        self.cluster.pools['images'][left] = type(self.disk)(1)
        self.snapshot()
        self.assertNotIn(left, self.cluster.pools['images'])

    def test_a_killed_attempt_s_partial_still_watched_is_removed(self):
        # The dead client's watch lingers until the OSDs time it out.
        from imaged.storage import partial_names
        left = partial_names.partial_name(TARGET, 'test-host')
        self.cluster.pools['images'][left] = type(self.disk)(1)
        self.cluster.pools['images'][left].busy = 1
        self.snapshot()
        self.assertNotIn(left, self.cluster.pools['images'])

    def test_progress_of_the_copy_and_of_the_upload(self):
        sent = []
        self.manager.notifications.snapshot_progress = (
            lambda ctxt, instance, image, step, done, total, seconds:
            sent.append((instance, image, step, done, total)))
        self.manager.notifications.progress_interval = 0
        self.snapshot()
        # librbd counts the flatten in objects, the upload in bytes.
        copied = sent[-1]
        self.assertEqual((INSTANCE, TARGET, 'copy'), copied[:3])
        self.assertEqual(copied[3], copied[4])
        size = self.disk.size
        del sent[:]
        self.flags(snapshot_strategy='upload', group='rbd')
        other = TARGET.replace('7d', '8d')
        self.glance.add(other, status='queued', owner='p',
                        container_format='bare')
        self.snapshot(image_id=other)
        self.assertEqual((INSTANCE, other, 'upload', size, size), sent[-1])
        self.assertTrue(all(s[2] == 'upload' for s in sent))

    def test_a_qcow2_image_is_converted_then_uploaded_with_progress(self):
        sent = []
        self.manager.notifications.snapshot_progress = (
            lambda ctxt, instance, image, step, done, total, seconds:
            sent.append((step, done, total)))
        self.manager.notifications.progress_interval = 0
        converted = b'QFI\xfb' + b'q' * 300000
        made = []

        def convert(image_id, source, dest, disk_format, conf):
            self.assertEqual(('vms', INSTANCE + '_disk', 'qcow2'),
                             (source.pool, source.name, disk_format))
            # qemu-img reads the temporary snapshot, not the live disk.
            self.assertIn(source.snapshot, self.disk.snapshots)
            self.assertIn('@' + source.snapshot + ':', source.filename)
            with open(dest, 'wb') as f:
                f.write(converted)
            made.append(dest)

        self.glance.images[TARGET]['disk_format'] = 'qcow2'
        with mock.patch('imaged.image.format.convert_from_rbd', convert):
            result = self.snapshot()
        self.assertEqual('upload', result['strategy'])
        self.assertEqual(converted, self.glance.data[TARGET])
        self.assertEqual(('convert', 1, 1), sent[0])
        size = len(converted)
        self.assertEqual(('upload', size, size), sent[-1])
        uploads = [done for step, done, _ in sent[1:] if step == 'upload']
        self.assertEqual(sorted(uploads), uploads)
        self.assertGreater(len(uploads), 1)
        self.assertEqual(len(sent) - 1, len(uploads))
        # The scratch file and the disk's temporary snapshot are gone.
        self.assertFalse(os.path.exists(made[0]))
        self.assertEqual({}, self.disk.snapshots)

    def test_upload_sends_the_disk_s_bytes(self):
        self.flags(snapshot_strategy='upload', group='rbd')
        self.assertEqual('upload', self.snapshot()['strategy'])
        self.assertEqual(self.disk.read(0, 8192),
                         self.glance.data[TARGET][:8192])
        self.assertEqual({}, self.disk.snapshots)
        # A retry of the finished upload answers as the call did; another
        # disk's retry does not take it for its own.
        self.assertEqual('upload', self.snapshot()['strategy'])
        self.glance.images[TARGET]['imaged_snapshot_of'] = 'another'
        self.assertRaises(exception.ImageNotWritable, self.snapshot)

    def test_typed_errors(self):
        self.assertRaises(exception.RootDiskNotFound, self.snapshot,
                          instance=INSTANCE.replace('5f', '6f'))
        self.glance.images[TARGET]['owner'] = 'someone-else'
        self.assertRaises(exception.ImageNotWritable, self.snapshot)
        self.glance.images[TARGET].update(owner='p', disk_format='vmdk')
        self.assertRaises(exception.SnapshotFormatUnsupported, self.snapshot)
        self.assertRaises(exception.ImageNotWritable, self.snapshot,
                          image_id=IMAGE)  # active, not ours
        self.assertEqual([], [n for n in self.cluster.pools['images']
                              if n.startswith(TARGET)])
