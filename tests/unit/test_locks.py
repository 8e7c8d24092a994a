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

"""Cluster-wide locks and their leases, on the fakes."""

import contextlib
import threading
import time

import fixtures

from imaged import exception
from imaged.storage import connection
from imaged.storage import locks
from tests import base
from tests.unit import fakes


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
