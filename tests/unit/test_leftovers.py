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

"""imaged.leftovers: each kind planted in the fakes, and seen to go; who
may sweep it, and when; the one schedule."""

import json
import os
import time
from unittest import mock

import fixtures

from imaged.imagecache import files as image_files
from imaged import leftovers
from imaged.storage import disk_markers
from imaged.storage import guards
from imaged.storage import lazy as rbd_lazy
from imaged.storage import locks
from imaged.storage import partial
from imaged.storage import partial_names
from imaged.storage import rbd as rbd_storage
from imaged.storage import snapshots
from tests import base
from tests.unit import fakes

IMAGE = '7d0a9c4e-5c2b-4d8e-9f1a-2b3c4d5e6f70'
DISK = '1c9d6a0e-3f4b-4a5c-8d7e-9f0a1b2c3d4e_disk'
HOST = 'test-host'


class LeftoversTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(base_dir=os.path.join(self.tempdir, 'cache'),
                   group='image_cache')
        self.cluster = fakes.FakeCluster()
        self.vms = self.cluster.pools['vms']
        self.images = self.cluster.pools['images']
        self.storage = self.driver(HOST)
        self.files = image_files.BaseFiles(self.conf)
        self.files.prepare()
        self.eviction = mock.Mock()
        self.owner = self.leftovers(self.storage)

    def driver(self, host):
        return rbd_storage.RBDDriver(self.conf, host,
                                     rados_module=self.cluster.rados,
                                     rbd_module=self.cluster.rbd)

    def leftovers(self, storage, clock=time.monotonic):
        return leftovers.Leftovers(self.conf, storage, self.files,
                                   lambda: {'images'}, self.eviction,
                                   clock=clock)

    def ioctx(self, pool='vms'):
        return self.cluster.rados.Rados().open_ioctx(pool)


class ScratchFileTest(LeftoversTestCase):

    def scratch(self, name, age):
        path = os.path.join(self.files.tmp_dir, name)
        open(path, 'w').close()
        then = time.time() - age
        os.utime(path, (then, then))
        return name

    def test_every_one_goes_at_start_up(self):
        fresh = self.scratch(IMAGE + '.download.1', 0)
        old = self.scratch(IMAGE + '.raw.2', 7200)
        self.assertEqual(sorted([fresh, old]), self.owner.at_start())
        self.assertEqual([], os.listdir(self.files.tmp_dir))

    def test_later_only_those_older_than_any_call(self):
        self.flags(long_rpc_timeout=600)
        fresh = self.scratch(IMAGE + '.download.1', 60)
        old = self.scratch(IMAGE + '.raw.2', 1300)
        self.assertEqual([old], self.owner.sweep_own()['scratch file'])
        self.assertEqual([fresh], os.listdir(self.files.tmp_dir))


class PoolPartialTest(LeftoversTestCase):

    def test_this_host_s_go_at_once(self):
        mine = partial_names.partial_name('a_disk', HOST)
        self.vms[mine] = fakes.FakeDisk(1)
        self.assertEqual([mine], self.owner.sweep_own()['pool partial'])
        self.assertNotIn(mine, self.vms)

    def test_another_host_s_go_on_the_cleanup_host_after_the_bound(self):
        now = time.time()
        dead = partial_names.partial_name('a_disk', 'dead-host',
                                          now=now - 7200)
        young = partial_names.partial_name('b_disk', 'live-host',
                                           now=now - 60)
        self.vms.update({dead: fakes.FakeDisk(1), young: fakes.FakeDisk(1)})
        self.assertEqual([], self.owner.sweep_own()['pool partial'])
        self.assertEqual([dead], self.owner.sweep_pool()['pool partial'])
        self.assertEqual([young], list(self.vms))


class GuardedPartialTest(LeftoversTestCase):
    """Another host's partial that names its writer's locks is judged by
    their leases in Ceph, not by the time in its name."""

    def writer_lock(self, key, duration):
        """The writer's lock, held (renewed) until the test ends."""
        lock = locks.RadosLock(self.storage.conn, self.ioctx(), key, 'build',
                               'a writer', duration)
        self.assertTrue(lock.try_acquire())
        self.addCleanup(lock.release)
        return lock

    def plant(self, pool, name, host, held=(('imaged.lock.' + IMAGE,
                                             'build'),)):
        pool[name] = fakes.FakeDisk(1)
        pool[name].metadata[partial.OWNER_KEY] = host
        if held is not None:
            pool[name].metadata[guards.GUARDS_KEY] = json.dumps(
                [list(g) for g in held])
        return name

    def lapsed(self, key):
        """A writer that died: its lock's lease has run out in Ceph."""
        self.ioctx().lock_exclusive(key, 'build', 'dead-writer',
                                    duration=0.05)
        time.sleep(0.1)

    def test_a_new_partial_names_the_exclusive_locks_its_writer_holds(self):
        self.writer_lock('imaged.lock.' + IMAGE, 30)
        shared = locks.RadosLock(self.storage.conn, self.ioctx(),
                                 'imaged.lock.other', 'clone', 'a reader',
                                 30, shared=True)
        self.assertTrue(shared.try_acquire())
        self.addCleanup(shared.release)
        spec = partial.FinalImage('a_disk', None, None, None)
        new = self.storage.partials.new(spec, 1024)
        self.addCleanup(new.abort)
        self.assertEqual([['imaged.lock.' + IMAGE, 'build']], json.loads(
            self.vms[new.part].metadata[guards.GUARDS_KEY]))

    def test_one_written_by_another_thread_names_its_writer_s_locks(self):
        # A lazy build's plain base: written by its download thread,
        # renamed by the build thread, which holds the build lock.
        held = [['imaged.lock.' + IMAGE, 'build']]
        spec = partial.FinalImage('a_base', None, 'snap', None)
        new = self.storage.partials.new(spec, 1024, held=held, rename=False)
        new.commit(1024)
        self.assertTrue(new.committed)
        self.assertEqual(held, json.loads(
            self.vms[new.part].metadata[guards.GUARDS_KEY]))
        # Finished under its partial name, still its writer's.
        self.assertNotIn('a_base', self.vms)
        self.assertIn('snap', self.vms[new.part].snapshots)
        self.assertTrue(self.storage.partials.is_in_progress(new.part))
        self.assertEqual([], self.owner.sweep_own()['pool partial'])

    def test_an_old_partial_whose_writer_holds_its_lock_stays(self):
        self.writer_lock('imaged.lock.' + IMAGE, 30)
        old = self.plant(self.vms, partial_names.partial_name(
            'a_disk', 'slow-host', now=time.time() - 86400), 'slow-host')
        self.assertEqual([], self.owner.sweep_pool()['pool partial'])
        self.assertIn(old, self.vms)

    def test_a_new_partial_whose_writer_s_lease_ran_out_goes(self):
        self.lapsed('imaged.lock.' + IMAGE)
        dead = self.plant(self.vms, partial_names.partial_name(
            'a_disk', 'dead-host'), 'dead-host')
        self.assertEqual([dead], self.owner.sweep_pool()['pool partial'])
        self.assertNotIn(dead, self.vms)
        # The sweeper let go of the lock: a new writer takes it at once.
        self.writer_lock('imaged.lock.' + IMAGE, 30)

    def test_a_lock_object_gone_is_a_free_lock_and_is_not_made_again(self):
        dead = self.plant(self.vms, partial_names.partial_name(
            'a_disk', 'dead-host'), 'dead-host')
        self.assertEqual([dead], self.owner.sweep_pool()['pool partial'])
        self.assertNotIn(('vms', 'imaged.lock.' + IMAGE),
                         self.cluster.objects)

    def test_a_lock_that_cannot_be_judged_keeps_its_partial_only(self):
        refused = 'imaged.lock.refused'
        kept = self.plant(self.vms, partial_names.partial_name(
            'a_disk', 'dead-host'), 'dead-host', held=[(refused, 'build')])
        self.lapsed('imaged.lock.' + IMAGE)
        dead = self.plant(self.vms, partial_names.partial_name(
            'b_disk', 'dead-host'), 'dead-host')
        self.ioctx().lock_exclusive(refused, 'build', 'x', duration=0.01)
        real = fakes.FakeIoctx.stat

        def stat(ioctx, key):
            if key == refused:
                raise self.cluster.rados.PermissionError(key)
            return real(ioctx, key)
        self.useFixture(fixtures.MockPatchObject(fakes.FakeIoctx, 'stat',
                                                 stat))
        self.assertEqual([dead], self.owner.sweep_pool()['pool partial'])
        self.assertEqual([kept], list(self.vms))

    def test_one_naming_no_lock_or_garbage_is_judged_by_its_age(self):
        young = self.plant(self.vms, partial_names.partial_name(
            'a_disk', 'old-host', now=time.time() - 60), 'old-host',
            held=None)
        garbage = self.plant(self.vms, partial_names.partial_name(
            'b_disk', 'old-host', now=time.time() - 60), 'old-host',
            held=None)
        self.vms[garbage].metadata[guards.GUARDS_KEY] = '{"no": 1}'
        old = self.plant(self.vms, partial_names.partial_name(
            'c_disk', 'old-host', now=time.time() - 7200), 'old-host',
            held=None)
        self.assertEqual([old], self.owner.sweep_pool()['pool partial'])
        self.assertEqual(sorted([young, garbage]), sorted(self.vms))

    def test_snapshot_copies_are_judged_by_the_disk_s_lock(self):
        key = 'imaged.lock.' + DISK
        self.writer_lock(key, 30)
        held = self.plant(self.images, partial_names.partial_name(
            IMAGE, 'slow-host', now=time.time() - 86400), 'slow-host',
            held=[(key, 'build')])
        self.lapsed('imaged.lock.other')
        dead = self.plant(self.images, partial_names.partial_name(
            IMAGE, 'dead-host'), 'dead-host',
            held=[('imaged.lock.other', 'build')])
        self.assertEqual(['images/' + dead],
                         self.owner.sweep_pool()['snapshot partial'])
        self.assertEqual([held], list(self.images))


class VerificationRecordTest(LeftoversTestCase):

    def record(self, image_id, location):
        self.storage.verified.record(image_id, {'location': location,
                                                'outcome': 'verified'})

    def test_a_record_goes_once_its_snapshot_is_gone(self):
        other = '5e1f0c2a-7b3d-4e8f-9a0b-1c2d3e4f5a6b'
        self.cluster.add_glance_image(IMAGE, b'x' * 512)
        self.cluster.add_glance_image(other, b'y' * 512)
        self.record(IMAGE, 'images/%s@snap' % IMAGE)
        self.record(other, 'images/%s@snap' % other)
        self.assertEqual(sorted([IMAGE, other]),
                         self.storage.verified.listed())
        self.assertEqual([], self.owner.sweep_own().get(
            'verification record', []))
        self.assertEqual([], self.owner.sweep_pool()['verification record'])
        # The image deleted in Glance: its snapshot goes with it.
        del self.images[other]
        self.assertEqual([other],
                         self.owner.sweep_pool()['verification record'])
        self.assertEqual([IMAGE], self.storage.verified.listed())
        self.assertIsNone(self.storage.verified.recorded(other))
        self.assertIsNotNone(self.storage.verified.recorded(IMAGE))

    def test_a_snapshot_gone_but_its_image_kept_or_a_bad_record_go(self):
        self.cluster.add_glance_image(IMAGE, b'x' * 512, snapshot='old')
        self.record(IMAGE, 'images/%s@snap' % IMAGE)
        self.assertEqual([IMAGE],
                         self.owner.sweep_pool()['verification record'])
        self.record(IMAGE, 'no location')
        self.assertEqual([IMAGE],
                         self.owner.sweep_pool()['verification record'])
        self.assertEqual([], self.storage.verified.listed())

    def test_the_list_is_read_a_page_at_a_time(self):
        self.cluster.add_glance_image(IMAGE, b'x' * 512)
        ids = ['%08d-0000-4000-8000-000000000000' % n for n in range(5)]
        for image_id in ids:
            self.record(image_id, 'images/%s@snap' % IMAGE)
        self.useFixture(fixtures.MockPatch(
            'imaged.storage.verified.INDEX_PAGE', 2))
        self.assertEqual(ids, self.storage.verified.listed())


class MarkedDiskTest(LeftoversTestCase):

    def plant(self, name, host, at=None):
        self.vms[name] = fakes.FakeDisk(1)
        self.ioctx().set_xattr(disk_markers.CREATING_OBJECT, name, json.dumps(
            {'host': host, 'at': int(at or time.time())}).encode())

    def markers(self):
        return dict(self.ioctx().get_xattrs(disk_markers.CREATING_OBJECT))

    def test_this_host_s_go_at_once(self):
        self.plant(DISK, HOST)
        self.assertEqual([DISK], self.owner.sweep_own()['marked disk'])
        self.assertEqual(({}, {}), (self.vms, self.markers()))

    def test_another_host_s_go_once_its_lock_is_free_whatever_the_clocks(
            self):
        # Marked a second ago by the other host's clock: the lock judges.
        self.plant(DISK, 'dead-host')
        self.assertEqual([], self.owner.sweep_own()['marked disk'])
        self.assertEqual([DISK], self.owner.sweep_pool()['marked disk'])
        self.assertEqual(({}, {}), (self.vms, self.markers()))

    def test_a_disk_whose_create_still_holds_its_lock_stays(self):
        self.plant(DISK, 'live-host')
        other = self.driver('live-host')
        with other.disk_locks.lock(DISK, 0):
            self.assertEqual([], self.owner.sweep_pool()['marked disk'])
        self.assertIn(DISK, self.vms)
        self.assertIn(DISK, self.markers())


class TrashedBaseTest(LeftoversTestCase):

    def test_a_trashed_base_without_clones_goes_on_the_cleanup_host(self):
        name = IMAGE + '_base'
        self.vms[name] = fakes.FakeDisk(1)
        self.cluster.rbd.RBD().trash_move(self.ioctx(), name)
        self.assertEqual([name], self.owner.sweep_pool()['trashed base'])
        self.assertEqual({}, self.cluster.trash['vms'])


class KeptLazyBaseTest(LeftoversTestCase):
    """A lazy base never published, kept for the disks cloned from it."""

    def plant(self, host='dead-host', quarantined=True, migrating=False):
        name = partial_names.partial_name(IMAGE + '_base', host)
        kept = self.vms[name] = fakes.FakeDisk(1)
        kept.metadata[rbd_lazy.LAZY_KEY] = rbd_lazy.VERIFIED_MARK
        if quarantined:
            kept.metadata[rbd_lazy.QUARANTINED_KEY] = 'its hash'
        if migrating:
            kept.migration = '{"type": "raw"}'
        kept.snapshots['snap'] = 1
        kept.protected.add('snap')
        return name

    def clone(self, name):
        self.cluster.rbd.RBD().clone(self.ioctx(), name, 'snap',
                                     self.ioctx(), 'vm_disk')

    def test_it_goes_with_its_last_clone_on_the_cleanup_host(self):
        mine, other = self.plant(HOST), self.plant()
        self.clone(mine)
        self.assertEqual([], self.owner.sweep_own()['pool partial'])
        self.assertEqual([other], self.owner.sweep_pool()['kept lazy base'])
        self.assertEqual([], self.owner.sweep_pool()['kept lazy base'])
        self.assertIn(mine, self.vms)
        del self.vms['vm_disk']
        self.assertEqual([mine], self.owner.sweep_pool()['kept lazy base'])
        self.assertEqual([], list(self.vms))

    def test_one_not_committed_or_not_quarantined_stays(self):
        migrating = self.plant(migrating=True)
        published_soon = self.plant(host='live-host', quarantined=False)
        self.assertEqual([], self.owner.sweep_pool()['kept lazy base'])
        self.assertEqual({migrating, published_soon}, set(self.vms))

    def test_an_unmarked_migration_target_is_left_to_its_maker(self):
        # Killed between its prepare and its first mark: still a lazy
        # base (its maker's start-up aborts it), never swept as a partial.
        name = partial_names.partial_name(IMAGE + '_base', HOST)
        self.vms[name] = fakes.FakeDisk(1)
        self.vms[name].migration = '{"type": "raw"}'
        self.assertEqual([], self.owner.sweep_own()['pool partial'])
        self.assertEqual([IMAGE], rbd_lazy.LazyTarget.left_images(
            self.storage.conn, self.storage.partials, '_base'))


class SnapshotPartialTest(LeftoversTestCase):

    def plant(self, host, age=0, ours=True):
        name = partial_names.partial_name(IMAGE, host, now=time.time() - age)
        self.images[name] = fakes.FakeDisk(1)
        if ours:
            self.images[name].metadata[partial.OWNER_KEY] = host
        return name

    def test_this_host_s_go_at_once(self):
        mine = self.plant(HOST)
        self.assertEqual(['images/' + mine],
                         self.owner.sweep_own()['snapshot partial'])
        self.assertEqual({}, self.images)

    def test_later_sweeps_ask_for_no_pool(self):
        self.owner.sweep_own()
        pools = mock.Mock(return_value={'images'})
        self.owner.glance_pools = pools
        self.plant(HOST)  # a kill before this process: the first sweep's
        self.assertEqual([], self.owner.sweep_own()['snapshot partial'])
        pools.assert_not_called()

    def test_another_host_s_go_on_the_cleanup_host_after_the_bound(self):
        dead = self.plant('dead-host', age=7200)
        young = self.plant('live-host', age=60)
        glance_s = self.plant('dead-host', age=7200, ours=False)
        self.assertEqual([], self.owner.sweep_own()['snapshot partial'])
        self.assertEqual(['images/' + dead],
                         self.owner.sweep_pool()['snapshot partial'])
        self.assertEqual(sorted([young, glance_s]), sorted(self.images))

    def test_a_copy_in_progress_is_never_a_leftover(self):
        self.vms[DISK] = fakes.FakeDisk(1)
        store = self.storage.snapshots
        seen = {}

        def flatten(part, pool, wait=None, progress=None):
            seen['own'] = self.owner.sweep_own()['snapshot partial']
            seen['left'] = list(self.images)
        self.storage.snapshots.flattener = mock.Mock(flatten=flatten)
        store.take(DISK, IMAGE)
        store.copy(DISK, IMAGE, 'instance', 'images')
        self.assertEqual([], seen['own'])
        self.assertEqual(1, len(seen['left']))
        self.assertIn(IMAGE, self.images)


class TemporaryDiskSnapshotTest(LeftoversTestCase):

    def plant(self, host):
        self.vms[DISK] = fakes.FakeDisk(1)
        self.driver(host).snapshots.take(DISK, IMAGE)

    def snaps(self):
        return sorted(self.vms[DISK].snapshots)

    def test_this_host_s_go_at_once(self):
        self.plant(HOST)
        self.assertEqual([snapshots.disk_snapshot_name(IMAGE)], self.snaps())
        self.assertEqual(['%s@%s' % (DISK, IMAGE)],
                         self.owner.sweep_own()['temporary disk snapshot'])
        self.assertEqual(([], []), (self.snaps(),
                                    self.storage.snapshots.taken()))

    def test_another_host_s_go_once_the_disk_s_lock_is_free(self):
        self.plant('dead-host')
        self.assertEqual(
            [], self.owner.sweep_own()['temporary disk snapshot'])
        other = self.driver('live-host')
        with other.disk_locks.lock(DISK, 0):  # its snapshot call runs
            self.assertEqual(
                [], self.owner.sweep_pool()['temporary disk snapshot'])
        self.assertEqual(1, len(self.snaps()))
        self.assertEqual(['%s@%s' % (DISK, IMAGE)],
                         self.owner.sweep_pool()['temporary disk snapshot'])
        self.assertEqual(([], []), (self.snaps(),
                                    self.storage.snapshots.taken()))

    def test_a_failed_removal_is_retried_by_the_next_sweep(self):
        self.vms[DISK] = fakes.FakeDisk(1)
        store = self.storage.snapshots
        self.owner.sweep_own()  # the first sweep: nothing of ours
        store.take(DISK, IMAGE)
        with mock.patch.object(store, '_drop', side_effect=RuntimeError):
            self.assertRaises(RuntimeError, store.drop, DISK, IMAGE)
        self.assertEqual(['%s@%s' % (DISK, IMAGE)],
                         self.owner.sweep_own()['temporary disk snapshot'])
        self.assertEqual([], self.snaps())


class ScheduleTest(LeftoversTestCase):

    def setUp(self):
        super().setUp()
        self.now = 1000.0
        self.owner = self.leftovers(self.storage, clock=lambda: self.now)
        self.flags(manager_interval=100, group='image_cache')

    def test_own_sweeps_every_tick_the_interval_s_cleanup_when_due(self):
        mine = partial_names.partial_name('a_disk', HOST)
        self.vms[mine] = fakes.FakeDisk(1)
        self.assertEqual(leftovers.OWN_SWEEP_INTERVAL, self.owner.tick())
        self.assertNotIn(mine, self.vms)
        self.eviction.run.assert_not_called()  # one interval after start
        self.now += 90
        self.assertEqual(10, self.owner.tick())
        self.eviction.run.assert_not_called()
        self.now += 10
        self.owner.tick()
        self.eviction.run.assert_called_once_with(pool_wide=True)

    def test_a_short_interval_shortens_the_tick(self):
        self.flags(manager_interval=2, group='image_cache')
        self.assertEqual(2, self.owner.tick())

    def test_only_the_cleanup_host_sweeps_other_hosts_leftovers(self):
        self.flags(pool_cleanup='never', group='image_cache')
        dead = partial_names.partial_name('a_disk', 'dead-host',
                                          now=time.time() - 7200)
        self.vms[dead] = fakes.FakeDisk(1)
        self.assertFalse(self.owner.run_interval())
        self.eviction.run.assert_called_once_with(pool_wide=False)
        self.assertIn(dead, self.vms)
        self.flags(pool_cleanup='always', group='image_cache')
        self.assertTrue(self.owner.run_interval())
        self.assertNotIn(dead, self.vms)

    def test_one_kind_failing_stops_no_other(self):
        mine = partial_names.partial_name('a_disk', HOST)
        self.vms[mine] = fakes.FakeDisk(1)
        self.storage.incomplete_disks.sweep = mock.Mock(
            side_effect=RuntimeError('broken'))
        removed = self.owner.sweep_own()
        self.assertEqual([mine], removed['pool partial'])
        self.assertEqual([], removed['marked disk'])

    def test_every_kind_is_declared_and_swept(self):
        declared = {kind.name for kind in leftovers.KINDS}
        swept = set(self.owner.sweep_own()) | set(self.owner.sweep_pool())
        self.assertEqual(declared, swept)


class DocsTest(base.TestCase):

    def test_the_operators_page_names_every_kind(self):
        path = os.path.join(os.path.dirname(__file__), '..', '..', 'doc',
                            'source', 'operate', 'leftovers.rst')
        with open(path) as f:
            text = f.read()
        for kind in leftovers.KINDS:
            self.assertIn('\n%s\n    ' % kind.name, text, kind.name)
