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

"""The lazy first disk's decisions that need no librbd migration: which
images it takes, the header it refuses, and the pool's build it holds
(the migration itself: tests/functional/test_lazy_first_disk.py)."""

import concurrent.futures
import json
import struct
import threading
import time
from unittest import mock

import fixtures

from imaged import exception
from imaged.image import record as image_record
from imaged.imagecache import lazy
from imaged.storage import base_builds
from imaged.storage import base_state
from tests import base
from tests.unit import images
from tests.unit import test_bases

IMAGE = test_bases.IMAGE
GiB = 1 << 30
MiB = 1 << 20


def image(**kw):
    fields = {'id': IMAGE, 'disk_format': 'raw', 'size': 1 << 20}
    fields.update(kw)
    return image_record.ImageRecord.from_glance(fields, IMAGE)


class EligibleTest(base.TestCase):

    def lazy(self):
        return lazy.LazyFirstDisks(self.conf, None, None, None)

    def test_off_by_default_nothing_is_lazy(self):
        self.assertFalse(self.conf.image_cache.lazy_first_disk)
        self.assertFalse(self.lazy().eligible(image(), GiB))

    def test_on_only_raw_images_of_a_known_size_that_fit(self):
        self.flags(lazy_first_disk=True, group='image_cache')
        lazy_disks = self.lazy()
        self.assertTrue(lazy_disks.eligible(image(), GiB))
        # qcow2: its virtual size is checked on its header.
        self.assertTrue(lazy_disks.eligible(image(disk_format='qcow2'), GiB))
        self.assertTrue(lazy_disks.eligible(
            image(disk_format='qcow2', size=2 * GiB), GiB))
        self.assertFalse(lazy_disks.eligible(image(disk_format='vmdk'), GiB))
        self.assertFalse(lazy_disks.eligible(image(size=None), GiB))
        self.assertFalse(lazy_disks.eligible(image(size=2 * GiB), GiB))
        self.flags(rbd_base_images=False, group='image_cache')
        self.assertFalse(lazy_disks.eligible(image(), GiB))

    def test_no_room_for_the_spool_no_lazy_disk(self):
        self.flags(lazy_first_disk=True, group='image_cache')

        class Full:
            def check_room(self, image_id, size):
                raise exception.CacheFull(path='/cache', image_id=image_id,
                                          reason='full')
        lazy_disks = lazy.LazyFirstDisks(self.conf, None, None, Full())
        self.assertIsNone(lazy_disks.first_disk(None, image(), GiB, None,
                                                None))
        self.assertIsNone(lazy_disks.source._server)  # never listened

    def test_a_call_it_does_not_take_touches_nothing(self):
        self.assertIsNone(self.lazy().first_disk(None, image(), GiB, None,
                                                 None))


class CompleteBaseTest(test_bases.PoolTestCase):

    def test_an_image_with_a_base_is_looked_at_once_then_never(self):
        self.a.create(1)  # the base, by download (no migration in fakes)
        self.flags(lazy_first_disk=True, group='image_cache')
        lazy_disks = self.a.image_cache.lazy
        ops = self.cluster.ops
        record = image(size=len(test_bases.DATA))
        self.assertIsNone(lazy_disks.first_disk(None, record, GiB, None,
                                                None))
        looked = self.cluster.ops - ops
        self.assertGreater(looked, 0)
        self.assertIsNone(lazy_disks.first_disk(None, record, GiB, None,
                                                None))
        self.assertEqual(looked, self.cluster.ops - ops)
        self.assertIsNone(lazy_disks.source._server)  # never listened


class HeaderTest(images.ImageFilesMixin, base.TestCase):

    def check(self, data, disk_format, size=8 * MiB, max_size=GiB):
        return lazy.check_header(IMAGE, data, disk_format, self.conf, size,
                                 max_size)

    def first_bytes(self, name):
        with open(self.images[name], 'rb') as f:
            return f.read(lazy.HEADER)

    def test_raw_bytes_pass_with_the_image_s_size(self):
        self.assertEqual(('raw', 8 * MiB),
                         self.check(b'\x01' * lazy.HEADER, 'raw'))

    def test_plain_qcow2_passes_with_its_virtual_size(self):
        self.assertEqual(('qcow', 10 * MiB),
                         self.check(self.first_bytes('qcow2'), 'qcow2',
                                    size=200 * 1024))

    def test_qcow2_with_a_backing_or_data_file_is_refused(self):
        for name in ('qcow2-backing', 'qcow2-data-file'):
            e = self.assertRaises(exception.ImageUnacceptable, self.check,
                                  self.first_bytes(name), 'qcow2')
            self.assertIn('safety', str(e))

    def test_a_disk_over_the_call_s_size_is_too_large(self):
        e = self.assertRaises(exception.ImageTooLarge, self.check,
                              self.first_bytes('qcow2'), 'qcow2',
                              max_size=8 * MiB)
        self.assertEqual(10 * MiB, e.kwargs['virtual_size'])

    def test_a_qcow2_librbd_cannot_read_from_its_header_is_not_lazy(self):
        plain = bytearray(self.first_bytes('qcow2'))
        for offset, fmt, value in ((32, '>I', 1),    # encrypted
                                   (60, '>I', 1),    # internal snapshot
                                   (72, '>Q', 8),    # zstd compression
                                   (40, '>Q', 1 << 40)):  # L1 far away
            changed = bytearray(plain)
            struct.pack_into(fmt, changed, offset, value)
            self.assertFalse(lazy._qcow_readable(bytes(changed)), offset)
        self.assertTrue(lazy._qcow_readable(bytes(plain)))
        # The inspector takes it; the lazy path leaves it to the download.
        changed = bytearray(plain)
        struct.pack_into('>I', changed, 60, 1)
        self.assertEqual((None, 10 * MiB),
                         self.check(bytes(changed), 'qcow2'))

    def test_a_qcow2_header_in_an_image_declared_raw_is_refused(self):
        self.assertRaises(exception.ImageUnacceptable, self.check,
                          b'QFI\xfb' + bytes(4096), 'raw')

    def test_other_formats_are_refused(self):
        self.assertRaises(exception.ImageUnacceptable, self.check,
                          b'\x01' * 4096, 'qcow2')
        self.assertRaises(exception.ImageUnacceptable, self.check,
                          self.first_bytes('vhd'), 'vhd')


class DetachedBuildTest(test_bases.PoolTestCase):

    def store(self, host):
        return host.storage.bases

    def test_one_host_builds_the_others_are_told_no(self):
        with self.store(self.a).detached_build(IMAGE) as building:
            self.assertTrue(building)
            with self.store(self.b).detached_build(IMAGE) as other:
                self.assertFalse(other)

    def test_no_build_of_a_complete_base(self):
        self.a.create(1)
        with self.store(self.b).detached_build(IMAGE) as building:
            self.assertFalse(building)

    def test_a_failure_is_recorded_for_the_waiters_and_a_refusal_kept(self):
        def fail():
            with self.store(self.a).detached_build(IMAGE) as building:
                self.assertTrue(building)
                raise exception.ImageDataMismatch(image_id=IMAGE,
                                                  reason='its hash')
        self.assertRaises(exception.ImageDataMismatch, fail)
        key = base_state.lock_object(IMAGE)
        ioctx = self.cluster.rados.Rados().open_ioctx('vms')
        record = json.loads(ioctx.get_xattr(key,
                                            base_builds.BUILD_ERROR_XATTR))
        self.assertEqual('ImageDataMismatch', record['class'])
        # No lazy build of that image again: only a checked download.
        with self.store(self.b).detached_build(IMAGE) as building:
            self.assertFalse(building)

    def test_an_error_not_of_the_image_leaves_the_next_build_lazy(self):
        def fail():
            with self.store(self.a).detached_build(IMAGE):
                raise exception.ImageDownloadFailed(image_id=IMAGE,
                                                    reason='Glance is down')
        self.assertRaises(exception.ImageDownloadFailed, fail)
        with self.store(self.b).detached_build(IMAGE) as building:
            self.assertTrue(building)


class CopyRetryTest(base.TestCase):
    """The copy behind a lazy disk: an execute stopped is resumed, within
    bounds, and the error that stopped it for good is the one kept."""

    def build(self, results, downloaded=None, every_byte=False):
        self.useFixture(fixtures.MockPatchObject(lazy, '_pause',
                                                 lambda s: None))
        self.useFixture(fixtures.MockPatchObject(
            lazy, '_every_byte_served', lambda source, image_id: every_byte))
        calls = []

        def execute():
            calls.append(1)
            result = results[min(len(calls), len(results)) - 1]
            if isinstance(result, Exception):
                raise result
        build = lazy._LazyBuild.__new__(lazy._LazyBuild)
        build.lazy = mock.Mock()
        build.image = mock.Mock(id=IMAGE)
        build.target = mock.Mock(part='p', execute=execute)
        build.downloaded = concurrent.futures.Future()
        if downloaded is not None:
            if isinstance(downloaded, Exception):
                build.downloaded.set_exception(downloaded)
            else:
                build.downloaded.set_result(downloaded)
        return build, calls

    def stopped(self, n):
        return exception.BackendUnavailable(backend='source', reason=str(n))

    def test_stopped_executes_resume_until_one_copies_everything(self):
        build, calls = self.build([self.stopped(1), self.stopped(2), None])
        self.assertIsNone(build._execute(time.monotonic() + 60))
        self.assertEqual(3, len(calls))

    def test_once_the_download_ended_a_few_more_then_its_error(self):
        build, calls = self.build([self.stopped(0)], downloaded='done',
                                  every_byte=True)
        error = build._execute(time.monotonic() + 60)
        self.assertIsInstance(error, exception.BackendUnavailable)
        self.assertEqual(lazy.EXECUTES_AFTER_DOWNLOAD + 1, len(calls))

    def test_a_failed_download_that_left_bytes_unserved_is_the_error(self):
        failed = exception.ImageDownloadFailed(image_id=IMAGE, reason='gone')
        build, calls = self.build([self.stopped(0)], downloaded=failed)
        self.assertIs(failed, build._execute(time.monotonic() + 60))
        self.assertEqual(1, len(calls))

    def test_past_the_deadline_the_last_stop_is_the_error(self):
        build, calls = self.build([self.stopped(0)])
        error = build._execute(time.monotonic() - 1)
        self.assertEqual('source is unavailable: 0', str(error))
        self.assertEqual(1, len(calls))


class HandoverTest(base.TestCase):
    """The download and the copy step aside while the first disk is handed
    out: whatever the call's outcome, they go on once it ends."""

    def first_disk(self, outcome, use=None):
        self.flags(lazy_first_disk=True, group='image_cache')
        self.flags(long_rpc_timeout=1)
        storage = mock.Mock()
        storage.bases.location.return_value = (None, None)
        lazy_disks = lazy.LazyFirstDisks(self.conf, storage, None,
                                         mock.Mock())
        self.useFixture(fixtures.MockPatchObject(lazy_disks.source,
                                                 'start'))
        builds = []

        class Build:
            def __init__(self, *args):
                self.ready = concurrent.futures.Future()
                self.handed = mock.Mock()
                self.sharing = threading.Condition()
                self.cloning, self.closed = 0, False
                builds.append(self)

            share = lazy._LazyBuild.share
            unshare = lazy._LazyBuild.unshare

            def start(self):
                if isinstance(outcome, Exception):
                    self.ready.set_exception(outcome)
                elif outcome is not None:
                    self.ready.set_result(outcome)
        self.useFixture(fixtures.MockPatchObject(lazy, '_LazyBuild', Build))
        timings = mock.Mock()
        try:
            return lazy_disks.first_disk(None, image(), GiB, timings,
                                         use or (lambda loc, size: 'disk'))
        finally:
            self.assertEqual(1, len(builds))
            builds[0].handed.set.assert_called_once_with()

    def test_after_the_clone(self):
        self.assertEqual('disk', self.first_disk(('location', 1 << 20)))

    def test_after_a_clone_that_failed(self):
        def use(location, size):
            raise exception.CloneSourceNotFound(name='d', pool='vms',
                                                reason='gone')
        self.assertRaises(exception.CloneSourceNotFound, self.first_disk,
                          ('location', 1 << 20), use)

    def test_when_another_build_runs(self):
        self.assertIsNone(self.first_disk(lazy.BUSY))

    def test_when_the_build_failed(self):
        self.assertRaises(exception.ImageUnacceptable, self.first_disk,
                          exception.ImageUnacceptable(image_id=IMAGE,
                                                      reason='qcow2'))

    def test_when_the_call_stops_waiting(self):
        self.assertRaises(exception.Timeout, self.first_disk, None)


class SharedTargetTest(base.TestCase):
    """Calls of this host for an image whose lazy base this host builds
    clone their disks from the same target, until it is closed."""

    def setUp(self):
        super().setUp()
        self.flags(lazy_first_disk=True, group='image_cache')
        storage = mock.Mock()
        storage.bases.location.return_value = (None, None)
        self.lazy_disks = lazy.LazyFirstDisks(self.conf, storage, None,
                                              mock.Mock())
        self.useFixture(fixtures.MockPatchObject(self.lazy_disks.source,
                                                 'start'))
        self.builds = []
        builds = self.builds

        class Build(lazy._LazyBuild):
            def start(self):
                builds.append(self)
        self.useFixture(fixtures.MockPatchObject(lazy, '_LazyBuild', Build))

    def first_call(self, used):
        """The first call, in a thread: waiting for its build's target."""
        first = threading.Thread(target=self.call, args=(used,))
        first.start()
        self.addCleanup(first.join, 10)
        for _i in range(1000):
            if self.builds:
                break
            time.sleep(0.01)
        build, = self.builds
        return first, build

    def call(self, used):
        return self.lazy_disks.first_disk(
            None, image(), GiB, mock.Mock(),
            lambda location, size: used.append(location) or 'disk')

    def test_a_second_call_clones_from_the_first_call_s_target(self):
        used = []
        first, build = self.first_call(used)
        self.assertEqual('disk', self.call_after(build, used))
        first.join(10)
        self.assertEqual(['target', 'target'], used)
        self.assertEqual(1, len(self.builds))  # one build, one download
        self.assertTrue(build.handed.is_set())  # by the first call

    def call_after(self, build, used):
        build.ready.set_result(('target', 1 << 20))
        return self.call(used)

    def test_clones_run_at_once_and_close_waits_for_them(self):
        used = []
        first, build = self.first_call(used)
        build.ready.set_result(('target', 1 << 20))
        first.join(10)
        self.assertTrue(build.share())
        self.assertTrue(build.share())  # not one after the other
        closer = threading.Thread(target=build.close)
        closer.start()
        self.addCleanup(closer.join, 10)
        closer.join(0.2)
        self.assertTrue(closer.is_alive())  # waits for the two
        build.unshare()
        build.unshare()
        closer.join(10)
        self.assertFalse(closer.is_alive())
        self.assertFalse(build.share())

    def test_a_closed_target_gets_no_new_clone(self):
        used = []
        first, build = self.first_call(used)
        build.close()  # published, or quarantined
        build.ready.set_result(('target', 1 << 20))
        first.join(10)
        self.assertIsNone(self.call(used))
        self.assertEqual([], used)


class OutcomeTest(base.TestCase):
    """A lazy base's outcome is told: notification and metric."""

    def build(self):
        build = lazy._LazyBuild.__new__(lazy._LazyBuild)
        build.lazy = mock.Mock()
        build.image = mock.Mock(id=IMAGE, size=1 << 20)
        build.target = mock.Mock(part='p.imaged-part', pool='vms')
        build.sharing = threading.Condition()
        build.cloning, build.closed = 0, False
        return build

    def test_a_quarantine_names_the_image_and_its_target(self):
        build = self.build()
        error = exception.ImageDataMismatch(image_id=IMAGE, reason='hash')
        build._quarantine(error)
        build.lazy.notify.assert_called_once_with(
            IMAGE, 'vms', 'p.imaged-part', 'quarantined', error)
        self.assertTrue(build.closed)
        build.target.quarantine.assert_called_once_with(str(error))

    def test_a_publication_names_the_base(self):
        build = self.build()
        build.target.state.return_value = None  # committed
        build._publish(time.monotonic(), 'copied and checked', 3 << 20)
        build.lazy.notify.assert_called_once_with(
            IMAGE, 'vms', IMAGE + '_base', 'published')
        build.lazy.storage.bases.publish.assert_called_once_with(
            'p.imaged-part', IMAGE)
        build.target.commit.assert_not_called()
        build.lazy.files.record.assert_called_once_with(IMAGE, 3 << 20)
        self.assertTrue(build.closed)


class RecoveryTest(base.TestCase):
    """At start-up, a lazy base a killed agent left is built again until
    this host gets the build (the dead lease runs out), within bounds."""

    def recover(self, building, base_after=None):
        self.flags(base_lock_duration=5, group='rbd')
        storage = mock.Mock()
        looks = []

        def location(image_id):
            looks.append(image_id)
            made = base_after is not None and len(looks) >= base_after
            return ('base', 1) if made else (None, None)
        storage.bases.location.side_effect = location
        fetcher = mock.Mock()
        fetcher.glance.show.return_value = image()
        lazy_disks = lazy.LazyFirstDisks(self.conf, storage, fetcher,
                                         mock.Mock())
        self.useFixture(fixtures.MockPatchObject(lazy_disks.source,
                                                 'start'))
        pauses, builds = [], []
        self.useFixture(fixtures.MockPatchObject(lazy, '_pause',
                                                 pauses.append))

        class Build:
            def __init__(self, lazy_, context, image_, max_size,
                         recovery=False):
                self.recovery, self.image = recovery, image_
                self.handed = threading.Event()
                self.building = building[min(len(builds),
                                             len(building) - 1)]
                builds.append(self)

            def start(self):
                lazy_disks._ended(self)

            def join(self, timeout):
                pass
        self.useFixture(fixtures.MockPatchObject(lazy, '_LazyBuild', Build))
        self.logged = self.useFixture(fixtures.FakeLogger())
        self.superseded = []
        self.useFixture(fixtures.MockPatchObject(
            lazy_disks, '_supersede', self.superseded.append))
        lazy_disks._recover('ctxt', IMAGE)
        return builds, pauses

    def test_tried_again_until_this_host_builds(self):
        builds, pauses = self.recover([False, False, True])
        self.assertEqual(3, len(builds))
        self.assertEqual([lazy.RECOVERY_PAUSE] * 2, pauses)
        self.assertTrue(all(b.recovery and b.handed.is_set()
                            for b in builds))
        self.assertNotIn('not finished here', self.logged.output)

    def test_a_base_another_build_made_keeps_or_aborts_the_leftover(self):
        builds, _pauses = self.recover([False], base_after=2)
        self.assertEqual(2, len(builds))
        self.assertEqual([IMAGE], self.superseded)
        self.assertNotIn('was not finished here', self.logged.output)

    def test_it_gives_up_past_the_dead_lease_said(self):
        self.useFixture(fixtures.MockPatch(
            'tenacity.stop.stop_after_delay.__call__',
            lambda self, retry_state: retry_state.attempt_number >= 4))
        builds, _pauses = self.recover([False])
        self.assertEqual(4, len(builds))
        self.assertIn('was not finished here', self.logged.output)
        self.assertEqual([], self.superseded)


class SupersededTest(base.TestCase):
    """A killed agent's lazy bases of an image whose base another build
    made meanwhile: never published; kept for their clones, else gone."""

    def target(self, quarantined=False, clones=False, state=4):
        target = mock.Mock(pool='vms', part='%s_base.x.imaged-part' % IMAGE)
        target.quarantined.return_value = quarantined
        target.abort.return_value = not clones
        target.state.return_value = state
        return target

    def supersede(self, *targets):
        lazy_disks = lazy.LazyFirstDisks(self.conf, mock.Mock(), mock.Mock(),
                                         mock.Mock())
        self.useFixture(fixtures.MockPatch(
            'imaged.storage.lazy.LazyTarget.left_behind',
            return_value=list(targets)))
        self.logged = self.useFixture(fixtures.FakeLogger())
        lazy_disks._supersede(IMAGE)

    def test_one_with_clones_is_copied_committed_and_kept(self):
        cloned = self.target(clones=True)
        self.supersede(cloned)
        cloned.break_dead_locks.assert_called_once_with()
        self.assertIn('another build', cloned.quarantine.call_args[0][0])
        cloned.execute.assert_called_once_with()
        cloned.commit.assert_called_once_with()
        cloned.done.assert_called_once_with()
        self.assertIn('is kept for its clones', self.logged.output)

    def test_one_without_is_aborted_a_quarantined_one_left(self):
        bare, kept = self.target(), self.target(quarantined=True)
        self.supersede(kept, bare)
        bare.abort.assert_called_once_with()
        bare.quarantine.assert_not_called()
        kept.abort.assert_not_called()
        self.assertTrue(bare.done.called and kept.done.called)

    def test_one_failing_stops_no_other(self):
        failing, bare = self.target(clones=True), self.target()
        failing.execute.side_effect = exception.StorageError(
            name='x', pool='vms', reason='source gone')
        self.supersede(failing, bare)
        failing.commit.assert_not_called()
        bare.abort.assert_called_once_with()
        self.assertIn('source gone', self.logged.output)
