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

import os
import time
from unittest import mock

import fixtures
from oslo_utils import units

from imaged import context
from imaged import deadline
from imaged import exception
from imaged.image import format as image_format
from imaged.imagecache import files as image_cache
from imaged import policy
from imaged.storage import locks
from imaged.storage import rbd as rbd_storage
from tests import base
from tests.unit import fakes
from tests.unit import parts

INSTANCE = '5f0c1d2e-3a4b-4c5d-9e6f-7a8b9c0d1e2f'
IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'


class RootDisksTest(base.TestCase):
    """Default mode: downloaded images become a base image in Ceph."""

    rbd_base_images = True
    download_parent = 'rbd://%s/vms/%s_base/snap' % (fakes.FSID, IMAGE)

    def setUp(self):
        super().setUp()
        self.flags(rbd_base_images=self.rbd_base_images, group='image_cache')
        self.cluster = fakes.FakeCluster()
        self.storage = rbd_storage.RBDDriver(
            self.conf, 'test-host', rados_module=self.cluster.rados,
            rbd_module=self.cluster.rbd)
        self.glance = fakes.FakeGlance()
        self.cache = image_cache.BaseFiles(self.conf)
        self.cache.prepare()
        self.disks = parts.root_disks(self.conf, self.glance, self.storage,
                                      self.cache)
        self.eviction = self.disks.image_cache.eviction
        self.vms = self.cluster.pools['vms']
        self.ctxt = context.get_admin_context()

    def instance_disks(self):
        return [name for name in self.vms if name.startswith(INSTANCE)]

    def test_a_killed_snapshot_s_temporary_snapshot_never_blocks_a_delete(
            self):
        # Issue 27: a snapshot call killed half-way left its temporary
        # snapshot (protected); the disk must still be deletable.
        self.add_cloneable()
        disk = self.create()['name']
        snap = 'imaged-snapshot-1c2d3e4f-0000-4000-8000-000000000001'
        self.vms[disk].snapshots[snap] = self.vms[disk].size
        self.vms[disk].protected.add(snap)
        self.disks.delete(INSTANCE, self.ctxt)
        self.assertEqual([], self.instance_disks())

    def test_a_snapshot_imaged_did_not_make_still_blocks_a_delete(self):
        self.flags(delete_busy_timeout=1, group='rbd')
        self.add_cloneable()
        disk = self.create()['name']
        self.vms[disk].snapshots['backup-by-the-operator'] = \
            self.vms[disk].size
        self.assertRaises(exception.RootDiskBusy, self.disks.delete,
                          INSTANCE, self.ctxt)
        self.assertEqual([disk], self.instance_disks())

    def test_a_clone_whose_lease_ran_out_leaves_nothing(self):
        # Issue 27: the host paused past the disk lock's lease during the
        # clone; it stops before it clears the marker, and removes the
        # clone it made.
        self.add_cloneable()
        self.useFixture(fixtures.MockPatchObject(
            locks.RadosLock, 'lease_valid', lambda lock: False))
        e = self.assertRaises(exception.LeaseLost, self.create)
        self.assertIn(INSTANCE + '_disk', str(e))
        self.assertEqual([], self.instance_disks())

    def test_a_delete_waits_no_longer_than_its_caller(self):
        # Issue 27: the delete's deadline reaches the wait for the disk's
        # lock (held here by a create that never ends), not the long
        # timeout.
        self.flags(long_rpc_timeout=600)
        name = INSTANCE + '_disk'
        held = self.disks.access._instance_locks.get(name)
        held.acquire()
        self.addCleanup(held.release)
        ctxt = context.get_admin_context()
        ctxt.deadline = deadline.Deadline(0.3)
        started = time.monotonic()
        self.assertRaises(exception.RootDiskBusy, self.disks.delete, INSTANCE,
                          ctxt)
        self.assertLess(time.monotonic() - started, 30)

    def create(self, size_gb=1):
        return self.disks.create(self.ctxt, INSTANCE, IMAGE, size_gb)

    def add_cloneable(self, data=b'boot', **record):
        url = self.cluster.add_glance_image(IMAGE, data)
        return url, self.glance.add(IMAGE, data, direct_url=url,
                                    locations=[{'url': url, 'metadata': {}}],
                                    **record)

    def test_cloneable_image_is_cloned(self):
        url, _image = self.add_cloneable()
        result = self.create()
        # 'depth': the chain of the image's snapshot, read once.
        self.assertEqual(['locks', 'glance', 'mark', 'clone', 'metadata',
                          'unmark', 'depth'],
                         [step.split()[0] for step in result.pop('timings')])
        self.assertEqual({'instance_uuid': INSTANCE, 'image_id': IMAGE,
                          'pool': 'vms', 'name': INSTANCE + '_disk',
                          'size_bytes': units.Gi, 'strategy': 'clone',
                          'parent': url, 'signature': None}, result)
        self.assertEqual(0, self.glance.downloads)

    def test_first_cloneable_location_wins(self):
        url = self.cluster.add_glance_image(IMAGE, b'boot')
        foreign = url.replace(fakes.FSID, 'other')
        self.glance.add(IMAGE, b'boot', locations=[
            {'url': 'file:///x'}, {'url': foreign}, {'url': url}])
        self.assertEqual(url, self.create()['parent'])

    def test_direct_url_used_without_locations(self):
        url = self.cluster.add_glance_image(IMAGE, b'boot')
        self.glance.add(IMAGE, b'boot', direct_url=url)
        self.assertEqual('clone', self.create()['strategy'])

    def test_non_raw_rbd_image_is_downloaded(self):
        self.add_cloneable(data=b'not really qcow2', disk_format='qcow2')
        self.assertRaises(exception.ImageUnacceptable, self.create)
        self.assertEqual(1, self.glance.downloads)

    def test_foreign_cluster_is_downloaded(self):
        url = self.cluster.add_glance_image(IMAGE, b'boot')
        self.glance.add(IMAGE, b'boot',
                        direct_url=url.replace(fakes.FSID, 'other'))
        result = self.create()
        self.assertEqual(('download', self.download_parent),
                         (result['strategy'], result['parent']))
        self.assertEqual(b'boot', self.vms[INSTANCE + '_disk'].read(0, 4))

    def test_second_disk_from_same_image_uses_cache(self):
        self.glance.add(IMAGE, b'boot')
        self.create()
        self.disks.create(self.ctxt, INSTANCE.replace('5f', '6f'), IMAGE, 1)
        self.assertEqual(1, self.glance.downloads)

    def test_too_large_clone_is_refused_before_anything_is_made(self):
        self.add_cloneable(data=b'x' * 4096, virtual_size=2 * units.Gi)
        self.assertRaises(exception.ImageTooLarge, self.create)
        self.assertEqual({}, self.vms)

    def test_too_large_snapshot_is_refused(self):
        url, image = self.add_cloneable()
        self.cluster.pools['images'][IMAGE].snapshots['snap'] = 3 * units.Gi
        e = self.assertRaises(exception.ImageTooLarge, self.create)
        self.assertIn(IMAGE, str(e))
        self.assertEqual({}, self.vms)

    def test_too_large_download_is_refused_without_a_disk(self):
        self.glance.add(IMAGE, b'x' * 100, size=None)
        self.flags(max_root_disk_gb=1)
        self.useFixture(base.fixtures.MonkeyPatch(
            'oslo_utils.units.Gi', 10))
        self.assertRaises(exception.ImageTooLarge, self.create)
        self.assertEqual([], self.instance_disks())

    def test_inactive_image_is_refused(self):
        self.glance.add(IMAGE, b'x', status='queued')
        e = self.assertRaises(exception.ImageUnacceptable, self.create)
        self.assertIn('queued', str(e))

    def test_missing_image(self):
        self.assertRaises(exception.ImageNotFound, self.create)

    def test_existing_disk_is_returned_untouched(self):
        self.add_cloneable()
        self.create(size_gb=2)
        result = self.create(size_gb=1)
        self.assertEqual(('existing', 2 * units.Gi),
                         (result['strategy'], result['size_bytes']))

    def test_a_crashed_create_s_leftover_is_made_again(self):
        # Killed between the clone and its metadata: other bytes, no
        # image id, and the marker that says it is not finished.
        url, _image = self.add_cloneable(data=b'boot')
        name = INSTANCE + '_disk'
        self.vms[name] = fakes.FakeDisk(4)
        self.vms[name].blocks[0] = b'junk'
        ioctx = self.cluster.rados.Rados().open_ioctx('vms')
        ioctx.set_xattr('imaged.disks.creating', name,
                        b'{"host": "crashed-host", "at": 1}')
        result = self.create()
        self.assertEqual(('clone', url), (result['strategy'],
                                          result['parent']))
        self.assertEqual(b'boot', self.vms[name].read(0, 4))
        self.assertTrue(self.storage.disks.info(name)['complete'])
        self.assertEqual('existing', self.create()['strategy'])

    def test_a_remembered_location_gone_since_is_looked_up_again(self):
        self.add_cloneable(data=b'boot')
        self.assertEqual('clone', self.create()['strategy'])
        # Glance's snapshot is gone (its location removed), the record
        # still readable: the next disk does not fail on the memory.
        del self.cluster.pools['images'][IMAGE]
        result = self.disks.create(self.ctxt, INSTANCE.replace('5f', '6f'),
                                   IMAGE, 1)
        self.assertEqual('download', result['strategy'])
        self.assertEqual(b'boot', self.vms[result['name']].read(0, 4))
        self.assertEqual(set(), {key[2] for key in self.cluster.xattrs
                                 if key[1] == 'imaged.disks.creating'})

    def test_a_snapshot_gone_under_the_clone_is_a_typed_error(self):
        self.add_cloneable(data=b'boot')

        clones = []

        def gone(rbd, *args):
            clones.append(args)
            raise self.cluster.rbd.ImageNotFound('snap')
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeRBD.clone', gone))
        e = self.assertRaises(exception.CloneSourceNotFound, self.create)
        self.assertIn(INSTANCE + '_disk', str(e))
        # Looked up once more (the location is still there), then given up.
        self.assertEqual(2, len(clones))
        self.assertEqual([], self.instance_disks())
        self.assertEqual(set(), {key[2] for key in self.cluster.xattrs
                                 if key[1] == 'imaged.disks.creating'})

    def test_existing_disk_needs_a_caller_who_sees_the_image(self):
        self.add_cloneable()
        self.create()
        caller = context.RequestContext(auth_token='user-token')
        caller.caller = policy.Caller('user', 'p1', 'u1')
        result = self.disks.create(caller, INSTANCE, IMAGE, 1)
        self.assertEqual('existing', result['strategy'])
        del self.glance.images[IMAGE]  # as Glance's 404 for another project
        self.assertRaises(exception.ImageNotFound, self.disks.create,
                          caller, INSTANCE, IMAGE, 1)
        # imaged's own calls (no token) are not asked again.
        self.assertEqual('existing', self.create()['strategy'])

    def test_location_in_our_own_pool_is_refused_and_nothing_made(self):
        # Another instance's disk, snapshotted, as an image's location.
        self.vms['victim_disk'] = fakes.FakeDisk(4)
        self.vms['victim_disk'].snapshots['snap'] = 4
        url = 'rbd://%s/vms/victim_disk/snap' % fakes.FSID
        self.glance.add(IMAGE, b'boot', locations=[{'url': url}])
        e = self.assertRaises(exception.ImageUnacceptable, self.create)
        self.assertIn('pool vms', str(e))
        self.assertEqual([], self.instance_disks())
        self.assertEqual(0, self.glance.downloads)

    def test_a_call_past_its_deadline_makes_no_disk(self):
        from imaged import deadline
        self.add_cloneable()
        late = context.get_admin_context()
        late.deadline = deadline.Deadline(0)
        e = self.assertRaises(exception.Timeout, self.disks.create, late,
                              INSTANCE, IMAGE, 1)
        self.assertIn(INSTANCE, str(e))
        self.assertEqual([], self.instance_disks())

    def test_existing_smaller_disk_is_refused(self):
        self.add_cloneable()
        self.create(size_gb=1)
        e = self.assertRaises(exception.InvalidInput, self.create, 2)
        self.assertIn('size_gb', str(e))
        self.assertEqual(units.Gi, self.vms[INSTANCE + '_disk'].size)

    def test_failure_after_creation_leaves_no_disk(self):
        self.add_cloneable()

        def broken_resize(img, size):
            raise self.cluster.rbd.NoSpace('full')
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeImage.resize', broken_resize))
        self.assertRaises(exception.StorageError, self.create)
        self.assertEqual({}, self.vms)

    def test_delete(self):
        self.add_cloneable()
        self.create()
        self.disks.delete(INSTANCE)
        self.assertEqual({}, self.vms)
        self.disks.delete(INSTANCE)  # a missing disk is not an error

    def test_hash_mismatch_leaves_no_disk_and_no_base(self):
        self.glance.add(IMAGE, b'boot', os_hash_value='0' * 128)
        self.assertRaises(exception.ImageUnacceptable, self.create)
        self.assertEqual({}, self.vms)
        self.assertEqual([], self.cache.list())

    def test_raw_download_streams_into_ceph_without_a_second_pass(self):
        self.glance.add(IMAGE, b'boot' * 1000)
        with mock.patch.object(self.disks.image_cache, '_import') as imp:
            self.create()
        imp.assert_not_called()
        self.assertEqual(b'boot' * 1000,
                         self.vms[INSTANCE + '_disk'].read(0, 4000))


class RBDBaseImagesTest(RootDisksTest):
    """What only the base-image mode does."""

    def test_later_disks_are_clones_of_the_base_even_after_eviction(self):
        self.glance.add(IMAGE, b'boot')
        first = self.create()
        self.assertEqual(self.download_parent, first['parent'])
        self.disks.image_cache.purge_image(IMAGE, 'test')
        second = self.disks.create(self.ctxt, INSTANCE.replace('5f', '6f'),
                                   IMAGE, 1)
        self.assertEqual(('download', self.download_parent),
                         (second['strategy'], second['parent']))
        self.assertEqual(1, self.glance.downloads)

    def test_base_is_removed_once_unused_for_the_min_age_and_unclones(self):
        self.flags(rbd_base_min_age=600, group='image_cache')
        self.glance.add(IMAGE, b'boot')
        self.create()
        later = time.time() + 700
        # Cloned:
        self.assertEqual([], self.eviction.clean_rbd_bases(now=later))
        self.disks.delete(INSTANCE)
        self.assertEqual([], self.eviction.clean_rbd_bases())  # used just now
        self.assertEqual([IMAGE], self.eviction.clean_rbd_bases(now=later))
        self.assertEqual({}, self.vms)
        # This host's record of it goes with it.
        self.assertEqual([], self.disks.image_cache.list())

    def test_non_raw_base_is_converted_straight_into_ceph(self):
        self.glance.add(IMAGE, b'\0' * 512, disk_format='vhd')
        checked = image_format.CheckedImage('vhd', 512)
        targets = []

        def convert(image_id, source, disk_format, target, conf):
            self.assertTrue(os.path.exists(source))  # the checked download
            targets.append((target.pool, target.name))
            self.vms[target.name].blocks[0] = b'converted'
        with mock.patch.object(image_format, 'check_image',
                               return_value=checked), \
                mock.patch.object(image_format, 'convert_to_raw') as to_raw, \
                mock.patch.object(image_format, 'convert_into_rbd', convert):
            self.create()
        to_raw.assert_not_called()  # no raw file, no second pass
        [(pool, part)] = targets
        self.assertEqual('vms', pool)
        self.assertTrue(part.startswith(IMAGE + '_base.'))
        self.assertEqual(b'converted',
                         self.vms[INSTANCE + '_disk'].read(0, 9))
        self.assertEqual([], os.listdir(self.cache.tmp_dir))

    def test_failed_conversion_into_ceph_leaves_nothing(self):
        self.glance.add(IMAGE, b'\0' * 512, disk_format='vhd')
        checked = image_format.CheckedImage('vhd', 512)
        error = exception.ImageUnacceptable(image_id=IMAGE, reason='boom')
        with mock.patch.object(image_format, 'check_image',
                               return_value=checked), \
                mock.patch.object(image_format, 'convert_into_rbd',
                                  side_effect=error):
            self.assertRaises(exception.ImageUnacceptable, self.create)
        self.assertEqual([], sorted(self.vms))
        self.assertEqual([], os.listdir(self.cache.tmp_dir))


class PerDiskImportTest(RootDisksTest):
    """``rbd_base_images = False``: every disk is a full sparse import."""

    rbd_base_images = False
    download_parent = None

    def test_cache_hit_imports_the_base_file(self):
        self.glance.add(IMAGE, b'boot')
        self.create()
        other = INSTANCE.replace('5f', '6f')
        result = self.disks.create(self.ctxt, other, IMAGE, 1)
        self.assertEqual((None, b'boot'),
                         (result['parent'],
                          self.vms[other + '_disk'].read(0, 4)))
        self.assertNotIn(IMAGE + '_base', self.vms)
