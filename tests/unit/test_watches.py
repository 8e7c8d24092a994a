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

"""One rados watch per object per process, and its waiters, on the
fakes."""

import threading

import fixtures

from imaged import exception
from imaged.storage import connection
from imaged.storage import locks
from imaged.storage import watches
from tests import base
from tests.unit import fakes


class ObjectWatchesTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.cluster = fakes.FakeCluster()
        self.conn = connection.CephConnection(self.conf, self.cluster.rados,
                                              self.cluster.rbd)
        self.watches = watches.ObjectWatches(self.conn)

    def registered(self, key='obj'):
        return self.cluster.watches.get(('vms', key), [])

    def test_a_broken_watch_wakes_the_waiter_and_is_made_anew(self):
        with self.conn.ioctx() as ioctx:
            with self.watches.watch('obj') as waiter:
                [first] = self.registered()
                # librados passes the watch id and the error: the callback
                # must take them and never raise (it would end the process).
                first.break_()
                self.assertTrue(waiter.wait(5))
                [second] = self.registered()
                self.assertIsNot(first, second)
                locks.notify(self.conn, ioctx, 'obj')
                self.assertTrue(waiter.wait(5))
                self.assertFalse(waiter.wait(0.01))
            self.assertEqual([], self.registered())

    def test_the_object_is_made_if_it_is_missing(self):
        with self.watches.watch('new-obj'):
            self.assertIn(('vms', 'new-obj'), self.cluster.objects)

    def test_many_waiters_share_one_watch_and_all_wake(self):
        # A storm's 16 callers of one image: one rados watch, not 16; one
        # notification wakes every one of them; the last to leave closes it.
        woke = []
        ready = threading.Barrier(17)
        leave = threading.Event()

        def waiter():
            with self.watches.watch('obj') as w:
                ready.wait(5)
                woke.append(w.wait(5))
                leave.wait(5)
        threads = [threading.Thread(target=waiter) for _ in range(16)]
        for t in threads:
            t.start()
        ready.wait(5)
        self.assertEqual(1, len(self.registered()))
        self.assertEqual({('vms', 'obj'): 16}, self.watches.watched())
        with self.conn.ioctx() as ioctx:
            locks.notify(self.conn, ioctx, 'obj')
        leave.set()
        for t in threads:
            t.join(5)
        self.assertEqual([True] * 16, woke)
        self.assertEqual([], self.registered())
        self.assertEqual({}, self.watches.watched())

    def test_a_waiter_that_leaves_keeps_the_watch_for_the_others(self):
        with self.watches.watch('obj') as staying:
            with self.watches.watch('obj'):
                pass
            [watch] = self.registered()
            with self.conn.ioctx() as ioctx:
                locks.notify(self.conn, ioctx, 'obj')
            self.assertTrue(staying.wait(5))
        self.assertEqual([], self.registered())

    def test_a_watch_on_a_retired_connection_is_made_on_the_current_one(
            self):
        with self.watches.watch('obj') as waiter:
            [old] = self.registered()
            retired = self.conn._current
            self.conn._retire(retired)
            waiter.wait(0.01)  # watches anew before it waits
            new = self.registered()[-1]
            self.assertIsNot(old, new)
            # Ceph seemed unreachable: the old one is kept, not unwatched.
            self.assertIn(old, [w for w, _i in watches._UNCLOSED])
            self.assertIsNot(retired, self.conn._current)
            self.assertEqual(1, self.conn._current.users)
        self.assertEqual(0, retired.users)

    def test_the_watch_holds_a_lease_on_the_connection(self):
        # A connection is never shut down under a watch: the watch's lease
        # is returned only once the watch is closed.
        with self.watches.watch('obj'):
            lease = self.conn._current
            self.assertEqual(1, lease.users)
        self.assertEqual(0, lease.users)

    def test_a_watch_whose_close_failed_is_never_freed(self):
        # Freed, the binding's Watch unwatches again on memory librados
        # released: the worker died of SIGSEGV.
        with self.watches.watch('obj'):
            [registered] = self.registered()

            def timed_out():
                raise self.cluster.rados.TimedOut('unwatch error')
            registered.close = timed_out
        kept = [w for w, _ioctx in watches._UNCLOSED]
        self.assertIn(registered, kept)
        watches._UNCLOSED[:] = [(w, i) for w, i in watches._UNCLOSED
                                if w is not registered]

    def test_a_failed_watch_leaves_no_waiter_and_no_lease(self):
        def refused(*args, **kwargs):
            raise self.cluster.rados.PermissionError('EPERM')
        with self.conn.ioctx():
            lease = self.conn._current
        self.patch_ioctx_watch(refused)
        self.assertRaises(exception.StorageError,
                          self.watches.watch('obj').__enter__)
        self.assertEqual({}, self.watches.watched())
        self.assertEqual(0, lease.users)

    def patch_ioctx_watch(self, fn):
        self.useFixture(fixtures.MockPatchObject(fakes.FakeIoctx, 'watch',
                                                 fn))
