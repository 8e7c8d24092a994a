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

import json
import os
from unittest import mock

from oslo_utils import units

from imaged import exception
from imaged.storage import disk_locks
from imaged.storage import disk_markers
from imaged.storage import disks
from imaged.storage import location
from imaged.storage import partial
from imaged.storage import partial_names
from imaged.storage import rbd as rbd_storage
from tests import base
from tests.unit import fakes


class RBDDriverTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.cluster = fakes.FakeCluster()
        self.driver = rbd_storage.RBDDriver(
            self.conf, 'test-host', rados_module=self.cluster.rados,
            rbd_module=self.cluster.rbd)
        self.vms = self.cluster.pools['vms']

    def spec(self, name, size=0, snapshot=None):
        return partial.FinalImage(name, size, snapshot, {})

    def import_file(self, path, name, size):
        new = self.driver.partials.new(self.spec(name, size),
                                       os.path.getsize(path))
        try:
            partial.fill_from_file(new, path)
        except BaseException:
            new.abort()
            raise
        new.commit(os.path.getsize(path))

    def test_import_writes_only_data_and_grows_to_size(self):
        path = os.path.join(self.tempdir, 'base')
        with open(path, 'wb') as f:
            f.truncate(64 * units.Mi)
            f.seek(8 * units.Mi + 3)
            f.write(b'data')
        self.import_file(path, 'i_disk', units.Gi)
        disk = self.vms['i_disk']
        self.assertEqual(units.Gi, disk.size)
        [(pool, part, offset, length)] = self.cluster.writes
        self.assertEqual(('vms', 8 * units.Mi, 4 * units.Mi),
                         (pool, offset, length))
        self.assertTrue(part.startswith('i_disk.'))
        self.assertEqual(partial_names.host_tag('test-host'),
                         partial_names.partial_owner_tag(part))
        self.assertEqual(b'data', disk.read(8 * units.Mi + 3, 4))
        self.assertEqual('test-host', disk.metadata['imaged.host'])
        self.assertEqual(['i_disk'], list(self.vms))

    def test_failed_write_leaves_no_disk(self):
        path = os.path.join(self.tempdir, 'base')
        with open(path, 'wb') as f:
            f.write(b'x' * 100)

        def failing_write(img, data, offset, oncomplete):
            oncomplete(fakes._Completion(-5))
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeImage.aio_write', failing_write))
        self.assertRaises(exception.StorageError, self.import_file,
                          path, 'i_disk', units.Gi)
        self.assertEqual({}, self.vms)

    def _glance_snapshot(self, data=b'x' * 512):
        url = self.cluster.add_glance_image('img', data)
        return url, location.parse_rbd_location(url)

    def _marked(self):
        return {key[2] for key in self.cluster.xattrs
                if key[:2] == ('vms', disk_markers.CREATING_OBJECT)}

    def test_clone_is_made_under_its_name_and_unmarked_when_complete(self):
        url, loc = self._glance_snapshot()
        seen = []
        real_resize = fakes.FakeImage.resize

        def resize(image, size):
            # Mid-way, the disk is there and marked as being made.
            seen.append(self._marked())
            seen.append(self.driver.disks.info('i_disk')['complete'])
            self.assertIsNone(self.driver.disks.finished('i_disk'))
            return real_resize(image, size)
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeImage.resize', resize))
        renames = []
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeRBD.rename',
            lambda *args: renames.append(args)))
        self.driver.disks.clone(
            loc,
            self.driver.disks.final_image('i_disk', units.Gi, 'img', 'p1'),
            512)
        self.assertEqual([{'i_disk'}, False], seen)
        self.assertEqual([], renames)
        self.assertEqual(['i_disk'], list(self.vms))
        self.assertEqual(set(), self._marked())
        info = self.driver.disks.info('i_disk')
        self.assertEqual({'size_bytes': units.Gi, 'parent': url,
                          'image_id': 'img', 'project_id': 'p1',
                          'complete': True}, info)
        self.assertEqual(info, self.driver.disks.finished('i_disk'))

    def test_clone_failing_after_it_was_made_leaves_nothing(self):
        _url, loc = self._glance_snapshot()

        def refuse(image, key, value):
            raise self.cluster.rbd.PermissionError('metadata refused')
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeImage.metadata_set', refuse))
        e = self.assertRaises(
            exception.StorageError, self.driver.disks.clone, loc,
            self.driver.disks.final_image('i_disk', units.Gi, 'img', 'p1'),
            512)
        self.assertIn('i_disk', str(e))
        self.assertEqual({}, self.vms)
        self.assertEqual(set(), self._marked())

    def test_disks_without_an_owner_are_listed_and_adopted(self):
        _url, loc = self._glance_snapshot()
        store = self.driver.disks
        for name, project in (('a_disk', 'p1'), ('b_disk', 'p2'),
                              ('old_disk', 'p3')):
            store.clone(loc, store.final_image(name, units.Gi, 'img',
                                               project), 512)
        del self.vms['old_disk'].metadata[disks.PROJECT_KEY]
        self.vms['img_base'] = self.vms['old_disk']  # not a root disk
        self.assertEqual(['old_disk'], store.unowned())
        self.assertIsNone(store.info('old_disk')['project_id'])
        store.set_owner('old_disk', 'service')
        self.assertEqual([], store.unowned())
        self.assertEqual('service', store.info('old_disk')['project_id'])

    def test_clone_of_a_missing_snapshot_leaves_no_marker(self):
        _url, loc = self._glance_snapshot()
        loc = loc._replace(snapshot='gone')
        self.assertRaises(
            exception.StorageError, self.driver.disks.clone, loc,
            self.driver.disks.final_image('i_disk', units.Gi, 'img', 'p1'),
            512)
        self.assertEqual({}, self.vms)
        self.assertEqual(set(), self._marked())

    def _leftover(self, name, host, at, disk=True):
        """What a create killed after its clone leaves."""
        if disk:
            self.vms[name] = fakes.FakeDisk(512)
        ioctx = self.cluster.rados.Rados().open_ioctx('vms')
        ioctx.set_xattr(disk_markers.CREATING_OBJECT, name, json.dumps(
            {'host': host, 'at': at}).encode())

    def test_a_crashed_create_s_disk_is_never_finished(self):
        self._leftover('i_disk', 'test-host', 1)
        self.assertFalse(self.driver.disks.info('i_disk')['complete'])
        self.assertIsNone(self.driver.disks.finished('i_disk'))
        self.assertTrue(
            self.driver.incomplete_disks.remove_incomplete('i_disk'))
        self.assertEqual({}, self.vms)
        self.assertEqual(set(), self._marked())

    def test_own_sweep_removes_own_leftovers_once_then_lists_nothing(self):
        self._leftover('a_disk', 'test-host', 1)
        self._leftover('b_disk', 'test-host', 1, disk=False)
        self._leftover('c_disk', 'other-host', 1)
        self.assertEqual(['a_disk'], self.driver.incomplete_disks.sweep())
        self.assertEqual(['c_disk'], list(self.vms))
        self.assertEqual({'c_disk'}, self._marked())
        self.assertNotIn(('vms', disk_locks.lock_object('a_disk')),
                         self.cluster.objects)
        # Later sweeps read nothing: only what this process left.
        self._leftover('d_disk', 'test-host', 1)
        before = self.cluster.ops
        self.assertEqual([], self.driver.incomplete_disks.sweep())
        self.assertEqual(before, self.cluster.ops)

    def test_a_leftover_being_made_again_is_left_alone(self):
        self._leftover('a_disk', 'test-host', 1)
        other = rbd_storage.RBDDriver(
            self.conf, 'other-host', rados_module=self.cluster.rados,
            rbd_module=self.cluster.rbd)
        with other.disk_locks.lock('a_disk', 1):  # a retry on another host
            self.assertEqual([], self.driver.incomplete_disks.sweep())
        self.assertEqual(['a_disk'], list(self.vms))

    def test_abandoned_leftovers_of_other_hosts_go_after_the_bound(self):
        now = 1_000_000
        self._leftover('dead_disk', 'dead-host', now - 7200)
        self._leftover('young_disk', 'live-host', now - 60)
        self._leftover('mine_disk', 'test-host', now - 7200)
        incomplete = self.driver.incomplete_disks
        self.assertEqual(['dead_disk'],
                         incomplete.sweep_abandoned(3600, now=now))
        self.assertEqual(['mine_disk', 'young_disk'], sorted(self.vms))
        self.assertEqual({'mine_disk', 'young_disk'}, self._marked())

    def test_delete_removes_a_leftover_and_its_marker(self):
        self._leftover('a_disk', 'dead-host', 1)
        self.assertTrue(self.driver.disks.remove('a_disk'))
        self.assertEqual({}, self.vms)
        self.assertEqual(set(), self._marked())

    def test_agents_sharing_a_pool_use_distinct_partial_names(self):
        other = rbd_storage.RBDDriver(
            self.conf, 'other-host', rados_module=self.cluster.rados,
            rbd_module=self.cluster.rbd)
        spec = self.spec('img_base', snapshot='snap')
        mine = self.driver.partials.new(spec, 10)
        theirs = other.partials.new(spec, 10)
        self.assertNotEqual(mine.part, theirs.part)
        theirs.commit(10)
        self.assertRaises(exception.DiskExists, mine.commit, 10)
        self.assertEqual(['img_base'], list(self.vms))

    def test_snapshot_size_and_cluster(self):
        good = location.parse_rbd_location(
            self.cluster.add_glance_image('img', b'x' * 10))
        self.assertTrue(self.driver.in_cluster(good))
        self.assertFalse(self.driver.in_cluster(good._replace(fsid='other')))
        self.assertEqual(10, self.driver.snapshot_size(good))

    def test_snapshot_size_not_found_means_none(self):
        good = location.parse_rbd_location(
            self.cluster.add_glance_image('img', b'x' * 10))
        for missing in (good._replace(pool='no-such-pool'),
                        good._replace(image='nope'),
                        good._replace(snapshot='nope')):
            self.assertIsNone(self.driver.snapshot_size(missing))

    def test_snapshot_size_timeouts_are_retried_then_typed(self):
        good = location.parse_rbd_location(
            self.cluster.add_glance_image('img', b'x' * 10))
        self.driver.fsid()
        sleeps = []
        self.useFixture(base.fixtures.MonkeyPatch(
            'imaged.storage.rbd._pause', sleeps.append))
        self.cluster.osds_down = True
        self.assertRaises(exception.BackendUnavailable,
                          self.driver.snapshot_size, good)
        self.assertEqual(rbd_storage.PROBE_ATTEMPTS - 1, len(sleeps))

        def back_up(seconds):
            self.cluster.osds_down = False
        self.useFixture(base.fixtures.MonkeyPatch(
            'imaged.storage.rbd._pause', back_up))
        self.cluster.osds_down = True
        self.assertEqual(10, self.driver.snapshot_size(good))

    def test_snapshot_size_permission_denied_is_typed(self):
        good = location.parse_rbd_location(
            self.cluster.add_glance_image('img', b'x' * 10))

        def refuse(*args, **kwargs):
            raise self.cluster.rbd.PermissionError('EPERM')
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeImage.__init__', refuse))
        e = self.assertRaises(exception.StorageError,
                              self.driver.snapshot_size, good)
        self.assertIn('permission denied', str(e))
        self.assertIn('images', str(e))

    def test_the_own_sweep_spares_other_hosts(self):
        mine = partial_names.partial_name('a_disk', 'test-host')
        theirs = partial_names.partial_name('b_disk', 'other-host')
        self.vms.update({mine: fakes.FakeDisk(1), theirs: fakes.FakeDisk(1),
                         'c_disk': fakes.FakeDisk(1),
                         'd_disk.imaged-part': fakes.FakeDisk(1)})
        self.assertEqual(([mine], []), self.driver.partials.sweep())
        self.assertEqual(sorted([theirs, 'c_disk', 'd_disk.imaged-part']),
                         sorted(self.vms))

    def test_later_sweeps_do_not_list_the_pool(self):
        self.assertEqual(([], []), self.driver.partials.sweep())
        listed = []
        real_list = fakes.FakeRBD.list
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeRBD.list',
            lambda rbd, ioctx: listed.append(1) or real_list(rbd, ioctx)))
        # A leftover of a crash before this process: the start-up sweep's.
        self.vms[partial_names.partial_name('a_disk', 'test-host')] = \
            fakes.FakeDisk(1)
        self.assertEqual(([], []), self.driver.partials.sweep())
        self.assertEqual([], listed)

    def test_abandoned_partials_of_other_hosts_go_after_the_bound(self):
        now = 1_000_000
        dead = partial_names.partial_name('a_disk', 'dead-host',
                                          now=now - 7200)
        young = partial_names.partial_name('b_disk', 'live-host',
                                           now=now - 60)
        open_one = partial_names.partial_name('c_disk', 'slow-host',
                                              now=now - 7200)
        mine = partial_names.partial_name('d_disk', 'test-host',
                                          now=now - 7200)
        undated = 'e_disk.%s-0123abcd.imaged-part' % (
            partial_names.host_tag('x'))
        for name in (dead, young, open_one, mine, undated):
            self.vms[name] = fakes.FakeDisk(1)
        self.vms[open_one].busy = 100  # its host still writes it
        self.assertEqual([dead], self.driver.partials.sweep_abandoned(
            3600, now=now))
        self.assertEqual(sorted([young, open_one, mine, undated]),
                         sorted(self.vms))
        self.assertEqual(now - 7200, partial_names.partial_made_at(dead))
        self.assertIsNone(partial_names.partial_made_at(undated))
        self.assertEqual(partial_names.host_tag('x'),
                         partial_names.partial_owner_tag(undated))

    def test_partial_disks_still_watched_are_left_for_later(self):
        mine = partial_names.partial_name('a_disk', 'test-host')
        self.vms[mine] = fakes.FakeDisk(1)
        self.vms[mine].busy = 1
        self.assertEqual(([], [mine]), self.driver.partials.sweep())
        self.assertEqual(([mine], []), self.driver.partials.sweep())

    def test_remove_retries_while_busy(self):
        self.useFixture(base.fixtures.MonkeyPatch('time.sleep',
                                                  lambda s: None))
        self.vms['i_disk'] = fakes.FakeDisk(1)
        self.vms['i_disk'].busy = 2
        self.assertTrue(self.driver.disks.remove('i_disk'))
        self.assertFalse(self.driver.disks.remove('i_disk'))

    def test_remove_gives_up_when_busy_too_long(self):
        self.flags(delete_busy_timeout=0, group='rbd')
        self.vms['i_disk'] = fakes.FakeDisk(1)
        self.vms['i_disk'].busy = 100
        self.assertRaises(exception.RootDiskBusy, self.driver.disks.remove,
                          'i_disk')
        self.assertIn('i_disk', self.vms)

    def test_status_reports_problems(self):
        self.assertEqual((fakes.FSID, []), self.driver.status())
        self.cluster.osds_up = 0
        self.assertEqual((fakes.FSID, ['Ceph has no OSD up']),
                         self.driver.status())
        self.cluster.reachable = False
        fsid, problems = self.driver.status()
        self.assertIsNone(fsid)
        self.assertIn('Ceph is unavailable', problems[0])

    def test_clones_are_of_format_2_and_a_cluster_that_cannot_says_so(self):
        self.driver.status()
        self.assertEqual('2', self.cluster.connections[-1].conf[
            'rbd_default_clone_format'])
        self.cluster.min_compat_client = 'luminous'
        _fsid, problems = self.driver.status()
        self.assertEqual(1, len(problems))
        self.assertIn('require_min_compat_client is luminous', problems[0])
        self.cluster.min_compat_client = 'reef'
        self.assertEqual((fakes.FSID, []), self.driver.status())

    def test_unreachable_cluster_is_backend_unavailable(self):
        self.cluster.reachable = False
        self.assertRaises(exception.BackendUnavailable,
                          self.driver.disks.info, 'i_disk')

    def test_cleanup_spares_partial_disks_being_made(self):
        path = os.path.join(self.tempdir, 'base')
        with open(path, 'wb') as f:
            f.write(b'x' * 100)
        writer = self.driver.partials.new(self.spec('i_disk'), 100)
        old = partial_names.partial_name('old_disk', 'test-host')
        self.vms[old] = fakes.FakeDisk(1)
        self.assertEqual(([old], []), self.driver.partials.sweep())
        partial.fill_from_file(writer, path)
        writer.commit(100)
        self.assertEqual(['i_disk'], list(self.vms))

    def test_ceph_timeouts_while_importing_are_backend_unavailable(self):
        def timing_out(rbd, ioctx, name, size, old_format=False):
            raise self.cluster.rbd.Timeout('osd op timed out')
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeRBD.create', timing_out))
        self.assertRaises(exception.BackendUnavailable,
                          self.driver.partials.new, self.spec('i_disk'), 100)

    def test_other_ceph_errors_while_importing_are_storage_errors(self):
        writer = self.driver.partials.new(
            self.spec('i_disk', snapshot='snap'), 100)

        def failing_snap(image, name):
            raise self.cluster.rbd.Error('boom')
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeImage.create_snap', failing_snap))
        e = self.assertRaises(exception.StorageError, writer.commit, 100)
        self.assertIn('boom', str(e))
        self.assertEqual({}, self.vms)


class PartialCleanUpTest(base.TestCase):
    """An aborted partial's writes in flight are drained before it goes."""

    def partial(self, *drains):
        part = partial.PartialImage.__new__(partial.PartialImage)
        part._blocks = mock.Mock(**{'drain.side_effect': drains})
        part._image, part.ioctx, part._error = None, None, None
        part._close = mock.Mock()
        part._clean_up_later = mock.Mock()
        return part

    def unavailable(self):
        return exception.BackendUnavailable(backend='Ceph', reason='stalled')

    def test_a_patient_clean_up_drains_again_until_ceph_answers(self):
        part = self.partial(self.unavailable(), self.unavailable(), None)
        part._clean_up(patient=True)
        self.assertEqual(3, part._blocks.drain.call_count)
        part._close.assert_called_once_with()
        part._clean_up_later.assert_not_called()
        self.assertIsInstance(part._error, exception.BackendUnavailable)

    def test_an_impatient_clean_up_leaves_a_stalled_drain_to_a_thread(self):
        part = self.partial(self.unavailable(), None)
        part._clean_up()
        self.assertEqual(1, part._blocks.drain.call_count)
        part._clean_up_later.assert_called_once_with()
        part._close.assert_not_called()

    def test_another_error_of_the_drain_is_raised_at_once(self):
        part = self.partial(RuntimeError('bug'), None)
        self.assertRaises(RuntimeError, part._clean_up, patient=True)
        self.assertEqual(1, part._blocks.drain.call_count)
