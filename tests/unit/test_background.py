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

"""imaged.background: background flattens through a bounded queue and a
fixed pool of workers, each holding its disk's lock; a delete cancels."""

import threading

from imaged import background
from imaged import exception
from tests import base
from tests.unit import fakes
from tests.unit import test_manager

IMAGE, INSTANCE = test_manager.IMAGE, test_manager.INSTANCE
DATA = b'guest' * 1000
WAIT = 30  # seconds: only ever reached when a test fails


def wait_for(predicate, timeout):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError('not true within %ss' % timeout)


class Gate:
    """A flatten that waits until the test lets it go (or is cancelled)."""

    def __init__(self):
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.done = []
        self.cancelled = []
        self._lock = threading.Lock()

    def __call__(self, name, cancelled):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.started.release()
        try:
            while not self.release.wait(0.01):
                if cancelled():
                    self.cancelled.append(name)
                    raise exception.FlattenCancelled(name=name, pool='vms',
                                                     reason='asked')
            self.done.append(name)
        finally:
            with self._lock:
                self.running -= 1


class QueueTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(concurrent_flatten_operations=2,
                   background_flatten_queue=3, group='rbd')
        self.gate = Gate()
        self.flattens = background.BackgroundFlattens(self.conf, self.gate)
        self.addCleanup(self.flattens.close)
        self.addCleanup(self.gate.release.set)

    def wait_started(self, n):
        for _ in range(n):
            self.assertTrue(self.gate.started.acquire(timeout=WAIT))

    def test_a_storm_is_a_bounded_queue_and_a_fixed_pool(self):
        threads = threading.active_count()
        names = ['disk-%d' % n for n in range(20)]
        accepted = [self.flattens.submit(name) for name in names[:2]]
        self.wait_started(2)  # both workers busy
        accepted += [self.flattens.submit(name) for name in names[2:]]
        stats = self.flattens.stats()
        # 2 running, 3 queued, the rest dropped.
        self.assertEqual(2, stats['running'])
        self.assertEqual(3, stats['queued'])
        self.assertEqual(20 - 5, stats['dropped'])
        self.assertEqual([True] * 5 + [False] * 15, accepted)
        self.assertLessEqual(threading.active_count(), threads + 2)
        self.gate.release.set()
        self.wait_started(3)
        wait_for(lambda: len(self.gate.done) == 5, WAIT)
        self.assertEqual(2, self.gate.most)
        self.assertEqual([n for n, ok in zip(names, accepted) if ok],
                         sorted(self.gate.done, key=names.index))

    def test_a_disk_already_queued_is_queued_once(self):
        self.flattens.submit('a')
        self.wait_started(1)
        self.assertTrue(self.flattens.submit('a'))
        self.assertTrue(self.flattens.submit('b'))
        self.assertTrue(self.flattens.submit('b'))
        self.assertEqual(1, self.flattens.stats()['queued'])

    def test_cancel_takes_a_queued_disk_out_and_stops_a_running_one(self):
        for name in ('a', 'b', 'c'):
            self.flattens.submit(name)
        self.wait_started(2)
        self.assertTrue(self.flattens.cancel('c'))  # queued
        self.assertEqual(0, self.flattens.stats()['queued'])
        self.assertTrue(self.flattens.cancel('a'))  # running
        wait_for(lambda: self.gate.cancelled == ['a'], WAIT)
        self.assertFalse(self.flattens.cancel('nothing'))
        self.gate.release.set()
        wait_for(lambda: self.gate.done == ['b'], WAIT)
        self.assertNotIn('c', self.gate.done)


class BackgroundFlattenRPCTest(test_manager.RPCTestCase):

    def setUp(self):
        super().setUp()
        self.flags(flatten_root_disks='background', group='rbd')
        self.url = self.cluster.add_glance_image(IMAGE, DATA)
        self.glance.add(IMAGE, DATA, direct_url=self.url)
        self.disk_name = INSTANCE + '_disk'

    def create(self):
        return self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE,
                                         IMAGE, 1)

    def test_the_clone_answers_at_once_and_is_flattened_after(self):
        self.assertEqual(self.url, self.create()['parent'])
        disk = self.cluster.pools['vms'][self.disk_name]
        wait_for(lambda: disk.parent_disk is None, WAIT)
        self.assertEqual(DATA, disk.read(0, len(DATA)))

    def test_a_delete_cancels_the_flatten_holding_the_disk(self):
        holding = threading.Event()
        real_flatten = fakes.FakeImage.flatten

        def slow_flatten(image, on_progress=None):
            # The worker holds the disk's locks now; librbd reports
            # progress until the delete asks it to stop.
            holding.set()
            while not on_progress(0, 1):
                threading.Event().wait(0.01)
            return real_flatten(image, on_progress)
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeImage.flatten', slow_flatten))
        self.create()
        self.assertTrue(holding.wait(WAIT))
        self.assertEqual(1, self.api.get_capabilities(
            self.ctxt, 'test-host')['flattens']['running'])
        self.api.delete_root_disk(self.ctxt, 'test-host', INSTANCE)
        self.assertNotIn(self.disk_name, self.cluster.pools['vms'])
        wait_for(lambda: not self.manager.flattens.stats()[
            'running'], WAIT)
