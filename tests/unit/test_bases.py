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

"""Base images shared by the hosts of one pool: leftovers, owners, locks."""

import threading
import time

import fixtures

from imaged import context
from imaged import exception
from imaged.imagecache import files as image_cache
from imaged.storage import base_builds
from imaged.storage import base_state
from imaged.storage import bases
from imaged.storage import rbd as rbd_storage
from tests import base
from tests.unit import fakes
from tests.unit import parts

IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'
DATA = b'boot' * 1000
BASE = IMAGE + '_base'


def instance(n):
    return '5f0c1d2e-3a4b-4c5d-9e6f-%012d' % n


class Host:
    """One agent's stores on the shared fake cluster."""

    def __init__(self, test, name):
        test.flags(base_dir='%s/%s' % (test.tempdir, name),
                   group='image_cache')
        self.storage = rbd_storage.RBDDriver(
            test.conf, name, rados_module=test.cluster.rados,
            rbd_module=test.cluster.rbd)
        self.cache = image_cache.BaseFiles(test.conf)
        self.cache.prepare()
        self.disks = parts.root_disks(test.conf, test.glance, self.storage,
                                      self.cache)
        self.image_cache = self.disks.image_cache
        self.eviction = self.image_cache.eviction

    def create(self, n, image_id=IMAGE):
        return self.disks.create(context.get_admin_context(), instance(n),
                                 image_id, 1)


class PoolTestCase(base.TestCase):
    """Two hosts sharing one fake pool, an image in Glance."""

    def setUp(self):
        super().setUp()
        self.flags(rbd_base_min_age=600, group='image_cache')
        self.flags(base_lock_timeout=1, group='rbd')
        self.cluster = fakes.FakeCluster()
        self.glance = fakes.FakeGlance()
        self.glance.add(IMAGE, DATA)
        self.vms = self.cluster.pools['vms']
        self.a = Host(self, 'host-a')
        self.b = Host(self, 'host-b')

    def base(self):
        return self.vms[BASE]

    def assertMadeAnewAndCloned(self, result):
        self.assertEqual('download', result['strategy'])
        self.assertEqual(DATA, self.vms[result['name']].read(0, len(DATA)))
        disk = self.base()
        self.assertEqual(({'snap'}, {'snap'}, 'true'),
                         (set(disk.snapshots), disk.protected,
                          disk.metadata[base_state.COMPLETE_KEY]))


class BaseImagesTest(PoolTestCase):

    def test_a_base_records_what_it_is_and_who_used_it(self):
        self.a.create(1)
        self.b.create(2)
        meta = self.base().metadata
        self.assertEqual((IMAGE, 'host-a', 'true'),
                         (meta[base_state.IMAGE_ID_KEY],
                          meta[base_state.MADE_BY_KEY],
                          meta[base_state.COMPLETE_KEY]))
        # Uses go on the lock object, never into the shared image: a
        # read-write open of it by many hosts at once crashed librbd.
        uses = {name for (pool, key, name) in self.cluster.xattrs
                if (pool, key) == ('vms', base_state.lock_object(IMAGE))}
        self.assertIn(base_state.USED_PREFIX + 'host-a', uses)
        self.assertIn(base_state.USED_PREFIX + 'host-b', uses)
        self.assertFalse([k for k in meta
                          if k.startswith(base_state.USED_PREFIX)])
        self.assertEqual(1, self.glance.downloads)

    def test_base_without_its_snapshot_is_made_anew(self):
        # A kill between "remove snapshot" and "remove image".
        self.a.create(1)
        self.a.disks.delete(instance(1))
        disk = self.base()
        disk.metadata[base_state.COMPLETE_KEY] = 'false'
        disk.protected.clear()
        disk.snapshots.clear()
        self.assertMadeAnewAndCloned(self.b.create(2))
        self.assertEqual(2, self.glance.downloads)

    def test_base_with_an_unprotected_snapshot_is_made_anew(self):
        self.a.create(1)
        self.a.disks.delete(instance(1))
        self.base().protected.clear()
        self.assertMadeAnewAndCloned(self.b.create(2))

    def test_base_with_its_metadata_missing_is_made_anew(self):
        self.a.create(1)
        self.a.disks.delete(instance(1))
        meta = self.base().metadata
        del meta[base_state.COMPLETE_KEY]
        self.base().protected.clear()
        self.assertMadeAnewAndCloned(self.b.create(2))

    def test_broken_base_with_clones_is_repaired_not_removed(self):
        self.a.create(1)
        self.base().metadata[base_state.COMPLETE_KEY] = 'false'
        result = self.b.create(2)
        self.assertEqual(1, self.glance.downloads)
        self.assertEqual(result['parent'], self.a.create(1)['parent'])
        self.assertEqual('true', self.base().metadata[base_state.COMPLETE_KEY])

    def test_legacy_base_without_the_new_metadata_is_adopted(self):
        self.a.create(1)
        meta = self.base().metadata
        for key in list(meta):
            if key != 'imaged.host':
                del meta[key]
        self.assertEqual('download', self.b.create(2)['strategy'])
        self.assertEqual(1, self.glance.downloads)

    def test_foreign_base_is_never_touched_and_the_disk_still_made(self):
        foreign = fakes.FakeDisk(len(DATA))
        foreign.snapshots['snap'] = len(DATA)
        foreign.metadata['owner'] = 'someone else'
        self.vms[BASE] = foreign
        result = self.a.create(1)
        self.assertEqual((None, DATA),
                         (result['parent'],
                          self.vms[result['name']].read(0, len(DATA))))
        self.assertIs(foreign, self.vms[BASE])
        self.assertEqual(({'snap': len(DATA)}, {'owner': 'someone else'}),
                         (foreign.snapshots, foreign.metadata))
        later = time.time() + 10 ** 6
        self.assertEqual([], self.b.eviction.clean_rbd_bases(now=later))
        self.assertEqual(['file'], [  # the local file, never the foreign one
            e['where'] for e in self.a.image_cache.purge_image(IMAGE, 'test')])
        self.assertIs(foreign, self.vms[BASE])

    def test_cleanup_spares_a_base_another_host_used_recently(self):
        self.a.create(1)
        self.a.disks.delete(instance(1))
        soon = time.time() + 300
        self.assertEqual([], self.b.eviction.clean_rbd_bases(now=soon))
        self.b.create(2)  # host b uses it too
        self.b.disks.delete(instance(2))
        later = time.time() + 700
        self.assertEqual([], self.a.eviction.clean_rbd_bases(now=soon + 200))
        self.assertEqual([IMAGE], self.a.eviction.clean_rbd_bases(now=later))
        self.assertNotIn(BASE, self.vms)
        self.assertEqual([], self.cluster.held_locks())

    def test_cleanup_never_removes_a_cloned_base(self):
        self.a.create(1)
        later = time.time() + 10 ** 6
        self.assertEqual([], self.b.eviction.clean_rbd_bases(now=later))
        self.assertEqual([], self.b.image_cache.purge_image(IMAGE, 'test'))
        self.assertIn(BASE, self.vms)

    def test_purge_removes_an_unused_base_whatever_its_age(self):
        self.a.create(1)
        self.a.disks.delete(instance(1))
        self.assertEqual([{'image_id': IMAGE, 'where': 'rbd'}],
                         self.b.image_cache.purge_image(IMAGE, 'test'))
        self.assertNotIn(BASE, self.vms)

    def test_a_clone_waits_for_the_lock_held_by_another_host(self):
        self.a.create(1)
        store = self.b.storage.bases
        held, release = threading.Event(), threading.Event()

        def hold():
            with store.lock(IMAGE):
                held.set()
                release.wait(5)
        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(5)
        e = self.assertRaises(exception.Timeout, self.a.create, 2)
        self.assertIn(IMAGE, str(e))
        self.assertNotIn(instance(2) + '_disk', self.vms)
        release.set()
        holder.join(5)
        self.assertEqual('download', self.a.create(2)['strategy'])

    def test_the_lock_of_a_dead_holder_expires(self):
        store = self.b.storage.bases
        key = base_state.lock_object(IMAGE)
        with self.b.storage.conn.ioctx() as ioctx:
            ioctx.lock_exclusive(key, bases.LOCK_NAME, 'dead', duration=30)
            self.assertRaises(exception.Timeout, store.lock(IMAGE).__enter__)
            ioctx.unlock(key, bases.LOCK_NAME, 'dead')
            ioctx.lock_exclusive(key, bases.LOCK_NAME, 'dead', duration=0.2)
        time.sleep(0.3)
        with store.lock(IMAGE):
            pass


class DiskRecordTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.cluster = fakes.FakeCluster()
        self.glance = fakes.FakeGlance()
        self.host = Host(self, 'host-a')
        self.vms = self.cluster.pools['vms']

    def test_existing_disk_from_another_image_is_refused_untouched(self):
        other = 'c3d4e5f6-a7b8-4c9d-8e0f-112233445566'
        self.glance.add(IMAGE, DATA)
        self.glance.add(other, b'other')
        self.host.create(1)
        before = dict(self.vms)
        e = self.assertRaises(exception.DiskImageMismatch, self.host.create,
                              1, other)
        self.assertIn(IMAGE, str(e))
        self.assertIn(other, str(e))
        self.assertEqual(before, self.vms)
        self.assertEqual('existing', self.host.create(1)['strategy'])

    def _refused(self, **record):
        self.glance.add(IMAGE, DATA, **record)
        self.assertRaises(exception.ImageUnacceptable, self.host.create, 1)
        self.assertEqual((0, {}), (self.glance.downloads, self.vms))

    def test_disallowed_disk_format_is_refused_before_download(self):
        self.flags(allowed_disk_formats=['raw'], group='image_cache')
        self._refused(disk_format='qcow2')

    def test_unknown_disk_format_is_refused_before_download(self):
        self._refused(disk_format='ploop')

    def test_container_formats_imaged_cannot_open_are_refused(self):
        self._refused(container_format='ova')

    def test_images_above_the_cache_bound_are_refused_when_kept(self):
        self.flags(max_size_gb=1.0 * len(DATA) / 2 ** 31,
                   rbd_base_images=False, group='image_cache')
        self._refused()


class PoolProtocolTest(base.TestCase):
    """One build per pool, shared clones, leases (issue 14)."""

    def setUp(self):
        super().setUp()
        self.flags(rbd_base_min_age=600, group='image_cache')
        self.flags(base_lock_timeout=5, base_lock_duration=5, group='rbd')
        self.cluster = fakes.FakeCluster()
        self.glance = fakes.FakeGlance()
        self.vms = self.cluster.pools['vms']
        self.hosts = [Host(self, 'host-%d' % i) for i in range(4)]
        self.gate = threading.Event()
        self.downloading = threading.Event()
        real_open = self.glance.open_data

        def slow_open(ctxt, image_id):
            chunks = real_open(ctxt, image_id)
            self.downloading.set()

            def gated():
                self.gate.wait(10)
                yield from chunks
            return gated()
        self.glance.open_data = slow_open

    def storm(self, callers_per_host=3):
        """Every host creates at once; ``{n: result or error}``."""
        results, threads = {}, []
        # The callers that have looked whether a build failed before they
        # came (each does once, before it builds or waits): the build
        # fails only after they all did, however slow this machine.
        looked = set()
        real = base_builds.failed_build

        def failed_build(conn, ioctx, key):
            looked.add(threading.get_ident())
            return real(conn, ioctx, key)
        self.useFixture(fixtures.MockPatchObject(
            base_builds, 'failed_build', failed_build))

        def create(host, n):
            try:
                results[n] = host.create(n)
            except Exception as e:
                results[n] = e
        n = 0
        for host in self.hosts:
            for _ in range(callers_per_host):
                n += 1
                threads.append(threading.Thread(target=create,
                                                args=(host, n)))
        for thread in threads:
            thread.start()
        self.assertTrue(self.downloading.wait(10))
        # Every caller waits for the one build, woken by a notification on
        # the base's lock object: one rados watch per host (process), not
        # one per caller (issue 24).
        key = ('vms', base_state.lock_object(IMAGE))

        def waiting():
            return sum(h.storage.bases.watches.watched().get(key, 0)
                       for h in self.hosts)
        deadline = time.monotonic() + 20
        while (waiting() < n or len(looked) < n) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(n, waiting())
        self.assertEqual(n, len(looked))
        self.assertEqual(len(self.hosts),
                         len(self.cluster.watches.get(key, [])))
        self.gate.set()
        for thread in threads:
            thread.join(30)
        return results

    def test_a_new_image_is_downloaded_once_for_the_whole_pool(self):
        self.glance.add(IMAGE, DATA)
        results = self.storm()
        self.assertEqual(12, len(results))
        for n, result in results.items():
            self.assertIsInstance(result, dict, result)
            self.assertEqual('download', result['strategy'])
            self.assertEqual(DATA, self.vms[result['name']].read(
                0, len(DATA)))
        self.assertEqual(1, self.glance.downloads)
        self.assertEqual([], self.cluster.held_locks())
        self.assertGreater(self.cluster.notifies, 0)

    def test_the_waiters_get_the_builder_s_typed_error(self):
        self.glance.add(IMAGE, DATA, os_hash_value='0' * 128)
        results = self.storm()
        self.assertEqual(12, len(results))
        for result in results.values():
            self.assertIsInstance(result, exception.ImageUnacceptable)
            self.assertIn('hash', str(result))
        self.assertEqual(1, self.glance.downloads)
        self.assertEqual([], [n for n in self.vms if n.endswith('_disk')])
        # Bytes that did not match may have been damaged on the way: a
        # call after the build downloads again.
        self.assertRaises(exception.ImageDataMismatch, self.hosts[0].create,
                          99)
        self.assertEqual(2, self.glance.downloads)

    def test_an_image_refused_for_itself_answers_stragglers_a_while(self):
        self.glance.add(IMAGE, DATA, disk_format='qcow2')  # raw inside
        self.gate.set()
        self.assertRaises(exception.ImageUnacceptable, self.hosts[0].create,
                          1)
        self.assertRaises(exception.ImageUnacceptable, self.hosts[1].create,
                          2)
        self.assertEqual(1, self.glance.downloads)
        self.useFixture(base.fixtures.MonkeyPatch(
            'imaged.storage.base_builds.REFUSAL_TTL', 0))
        self.assertRaises(exception.ImageUnacceptable, self.hosts[1].create,
                          3)
        self.assertEqual(2, self.glance.downloads)  # then it tries again

    def test_a_dead_builder_s_lease_runs_out_and_a_waiter_takes_over(self):
        self.glance.add(IMAGE, DATA)
        self.gate.set()
        key = base_state.lock_object(IMAGE)
        with self.hosts[1].storage.conn.ioctx() as ioctx:
            # A builder that died a moment ago: its lease runs 1 s more.
            ioctx.lock_exclusive(key, base_builds.BUILD_LOCK_NAME, 'dead',
                                 duration=1)
            ioctx.set_xattr(key, base_builds.BUILD_XATTR, b'{"id": "dead"}')
        started = time.monotonic()
        result = self.hosts[0].create(1)
        self.assertEqual('download', result['strategy'])
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        self.assertEqual(1, self.glance.downloads)

    def test_clones_never_wait_for_each_other(self):
        self.glance.add(IMAGE, DATA)
        self.gate.set()
        self.hosts[0].create(1)
        key = base_state.lock_object(IMAGE)
        with self.hosts[1].storage.conn.ioctx() as ioctx:
            # Another host's clone in progress holds the lock shared.
            ioctx.lock_shared(key, bases.LOCK_NAME, 'other-clone',
                              'imaged', duration=30)
            started = time.monotonic()
            self.assertEqual('download', self.hosts[2].create(2)['strategy'])
            self.assertLess(time.monotonic() - started, 1.0)
            # ... and keeps a cleanup out.
            self.hosts[0].disks.delete(instance(1))
            self.hosts[2].disks.delete(instance(2))
            self.assertEqual([], self.hosts[3].image_cache.purge_image(
                IMAGE, 'test'))
            self.assertIn(BASE, self.vms)

    def test_last_use_is_written_at_most_once_per_interval(self):
        self.glance.add(IMAGE, DATA)
        self.gate.set()
        host = self.hosts[0]
        host.create(1)
        key = ('vms', base_state.lock_object(IMAGE),
               base_state.USED_PREFIX + 'host-0')
        first = self.cluster.xattrs[key]
        host.create(2)
        host.create(3)
        self.assertEqual(first, self.cluster.xattrs[key])
        self.flags(rbd_base_min_age=0, group='image_cache')
        host.create(4)
        self.assertNotEqual(first, self.cluster.xattrs[key])

    def test_an_expired_deadline_waits_for_nothing(self):
        self.glance.add(IMAGE, DATA)
        gone = type('Deadline', (), {'remaining': lambda self: 0})()
        store = self.hosts[0].storage.bases
        e = self.assertRaises(exception.Timeout, store.use(
            IMAGE, lambda: None, gone).__enter__)
        self.assertIn(IMAGE, str(e))
        self.assertEqual(0, self.glance.downloads)

    def test_a_waiter_s_deadline_ends_its_wait_for_another_builder(self):
        self.glance.add(IMAGE, DATA)
        key = base_state.lock_object(IMAGE)
        with self.hosts[1].storage.conn.ioctx() as ioctx:
            # A live builder elsewhere: its lease outlasts the call.
            ioctx.lock_exclusive(key, base_builds.BUILD_LOCK_NAME, 'alive',
                                 duration=30)
        ends = time.monotonic() + 0.5
        deadline = type('Deadline', (), {
            'remaining': lambda self: ends - time.monotonic()})()
        store = self.hosts[0].storage.bases
        started = time.monotonic()
        e = self.assertRaises(exception.Timeout, store.use(
            IMAGE, lambda: None, deadline).__enter__)
        self.assertIn(IMAGE, str(e))
        self.assertLess(time.monotonic() - started, 5)
        self.assertGreaterEqual(time.monotonic() - started, 0.4)
        self.assertEqual(0, self.glance.downloads)

    def test_too_large_for_one_disk_is_built_for_a_larger_one(self):
        self.gate.set()
        self.glance.add(IMAGE, b'x' * 15, size=None)
        self.flags(max_root_disk_gb=4)
        self.useFixture(base.fixtures.MonkeyPatch('oslo_utils.units.Gi', 10))
        self.assertRaises(exception.ImageTooLarge, self.hosts[0].create, 1)
        result = self.hosts[1].disks.create(
            context.get_admin_context(), instance(2), IMAGE, 2)
        self.assertEqual('download', result['strategy'])
        self.assertEqual(2, self.glance.downloads)

    def test_a_base_gone_after_each_build_is_a_typed_error(self):
        builds = []
        store = self.hosts[0].storage.bases
        e = self.assertRaises(exception.StorageError, store.use(
            IMAGE, lambda: builds.append(1)).__enter__)
        self.assertIn(BASE, str(e))
        self.assertEqual(base_builds.MAX_BUILDS, len(builds))
        self.assertEqual([], self.cluster.held_locks())

    def test_cleanup_skips_a_busy_base_and_goes_on(self):
        other = 'c3d4e5f6-a7b8-4c9d-8e0f-112233445566'
        self.glance.add(IMAGE, DATA)
        self.glance.add(other, DATA)
        self.gate.set()
        host = self.hosts[0]
        host.create(1)
        host.create(2, other)
        host.disks.delete(instance(1))
        host.disks.delete(instance(2))
        with host.storage.conn.ioctx() as ioctx:
            ioctx.lock_exclusive(base_state.lock_object(IMAGE),
                                 bases.LOCK_NAME, 'busy', duration=30)
            started = time.monotonic()
            removed = host.eviction.clean_rbd_bases(now=time.time() + 10 ** 6)
        self.assertLess(time.monotonic() - started, 1.0)  # did not wait
        self.assertEqual([other], removed)
        self.assertIn(BASE, self.vms)


class InstanceDiskRaceTest(base.TestCase):
    """Two hosts asked for the same instance's disk (issue 14)."""

    def setUp(self):
        super().setUp()
        self.cluster = fakes.FakeCluster()
        self.glance = fakes.FakeGlance()
        self.glance.add(IMAGE, DATA)
        self.vms = self.cluster.pools['vms']
        self.a = Host(self, 'host-a')
        self.b = Host(self, 'host-b')
        self.name = instance(1) + '_disk'

    def hold(self, host):
        """Host ``host`` in the middle of a call for the disk."""
        held, release = threading.Event(), threading.Event()

        def run():
            with host.storage.disk_locks.lock(self.name, 5):
                held.set()
                release.wait(10)
        thread = threading.Thread(target=run)
        thread.start()
        self.assertTrue(held.wait(5))
        self.addCleanup(thread.join, 10)
        self.addCleanup(release.set)
        return release

    def test_two_hosts_creating_one_disk_make_one(self):
        results = []
        threads = [threading.Thread(target=lambda h=h: results.append(
            h.create(1))) for h in (self.a, self.b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(['download', 'existing'],
                         sorted(r['strategy'] for r in results))
        self.assertEqual([self.name],
                         [n for n in self.vms if n.endswith('_disk')])

    def test_a_delete_waits_for_another_host_s_create(self):
        release = self.hold(self.a)
        self.flags(long_rpc_timeout=1)
        e = self.assertRaises(exception.RootDiskBusy,
                              self.b.disks.delete, instance(1))
        self.assertIn(self.name, str(e))
        self.assertRaises(exception.RootDiskBusy, self.b.create, 1)
        self.assertNotIn(self.name, self.vms)
        release.set()
        self.flags(long_rpc_timeout=30)
        self.b.create(1)
        self.a.disks.delete(instance(1))
        self.assertEqual([], [n for n in self.vms if n.endswith('_disk')])
        self.assertEqual([], self.cluster.held_locks())
        self.assertNotIn(('vms', 'imaged.lock.' + self.name),
                         self.cluster.objects)
