"""Cluster-wide locks and their wake-ups, on the fakes."""

import contextlib
import threading
import time

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


class LeaseTest(base.TestCase):
    """A holder whose lease ran out stops before it commits (issue 27)."""

    def setUp(self):
        super().setUp()
        self.cluster = fakes.FakeCluster()
        self.conn = connection.CephConnection(self.conf, self.cluster.rados,
                                              self.cluster.rbd)
        stack = contextlib.ExitStack()
        self.addCleanup(stack.close)  # after the locks' release
        self.ioctx = stack.enter_context(self.conn.ioctx())

    def lock(self):
        lock = locks.RadosLock(self.conn, self.ioctx, 'obj', 'imaged-test',
                               'host-a', 30)
        self.assertTrue(lock.try_acquire())
        self.addCleanup(lock.release)
        return lock

    def test_a_held_lease_lets_the_commit_go_on(self):
        self.lock()
        locks.check_leases('renaming x')

    def test_a_lease_taken_by_another_holder_stops_the_commit(self):
        self.lock().lost = True  # what the renewal finds then
        e = self.assertRaises(exception.LeaseLost, locks.check_leases,
                              'renaming x')
        self.assertIn('obj', str(e))
        self.assertIn('renaming x', str(e))

    def test_a_lease_run_out_by_our_clock_stops_the_commit(self):
        # The host was paused past its lease: whoever holds the lock now,
        # this holder can no longer know it is alone.
        self.lock()._expires = 0.0
        self.assertRaises(exception.LeaseLost, locks.check_leases, 'x')

    def test_released_locks_and_other_threads_locks_are_not_checked(self):
        lock = self.lock()
        lock.lost = True
        errors = []
        thread = threading.Thread(target=lambda: errors.append(
            locks.check_leases('x')))
        thread.start()
        thread.join(5)
        self.assertEqual([None], errors)
        lock.release()
        locks.check_leases('x')

    def test_the_renewal_uses_and_closes_an_io_context_of_its_own(self):
        # A release while Ceph seems unreachable does not wait for the
        # renewal, and the caller closes its context at once: the renewal
        # must never use that one.
        used = []
        real = locks.RadosLock._lock_once

        def recording(lock, flags, ioctx):
            used.append((flags, ioctx))
            return real(lock, flags, ioctx)
        self.useFixture(fixtures.MockPatchObject(
            locks.RadosLock, '_lock_once', recording))
        lock = locks.RadosLock(self.conn, self.ioctx, 'obj', 'imaged-test',
                               'host-a', 3)
        self.assertTrue(lock.try_acquire())
        deadline = time.monotonic() + 10
        while len(used) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        renewer = lock._renewer
        lock.release()
        renewer.join(5)
        (_f, first), (flags, renewal) = used[:2]
        self.assertIs(self.ioctx, first)
        self.assertEqual(locks.LOCK_FLAG_MAY_RENEW, flags)
        self.assertIsNot(self.ioctx, renewal)
        self.assertTrue(renewal.closed)
        self.assertFalse(self.ioctx.closed)
