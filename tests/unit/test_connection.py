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

"""The shared Ceph connection is never shut down while in use."""

import threading

from imaged import exception
from imaged.storage import cluster_status
from imaged.storage import connection
from tests import base
from tests.unit import fakes


class CephConnectionTest(base.TestCase):

    def setUp(self):
        super().setUp()
        # Shut down at once, so the tests can see it.
        self.useFixture(base.fixtures.MonkeyPatch(
            'imaged.storage.connection._shutdown_in_background',
            lambda cluster, lock, grace: connection._shutdown_quietly(
                cluster)))
        self.cluster = fakes.FakeCluster()
        self.conn = connection.CephConnection(
            self.conf, self.cluster.rados, self.cluster.rbd)
        # Ceph answering again is enough: no quiet time to wait out.
        self.conn.retired_quiet = lambda: 0
        self.status = cluster_status.ClusterStatus(self.conn).status

    def test_operations_share_one_connection(self):
        with self.conn.ioctx():
            with self.conn.ioctx():
                pass
        self.conn.fsid()
        self.assertEqual(1, len(self.cluster.connections))

    def test_a_timeout_retires_the_connection_but_users_keep_it(self):
        with self.conn.ioctx() as busy:  # another operation in flight
            self.assertRaises(exception.BackendUnavailable,
                              self._fail_with,
                              self.cluster.rados.TimedOut('osd'))
            [first] = self.cluster.connections
            self.assertFalse(first.is_shut_down)
            self.cluster.rbd.RBD().list(busy)  # still usable
            with self.conn.ioctx():  # new operations connect afresh
                self.assertEqual(2, len(self.cluster.connections))
        self.assertTrue(first.is_shut_down)
        self.assertFalse(self.cluster.connections[1].is_shut_down)

    def test_a_connection_made_while_the_osds_were_down_is_replaced(self):
        with self.conn.ioctx():  # the first connection, trusted
            pass
        self.cluster.osds_down = True
        self.assertRaises(exception.BackendUnavailable, self._open_image)
        # An operation connects afresh: the monitors answer, so nothing
        # retires that connection at once, but it never reaches an OSD.
        self.conn.fsid()
        deaf = self.cluster.connections[-1]
        self.assertTrue(deaf.deaf)
        self.assertFalse(deaf.is_shut_down)
        self.cluster.osds_down = False
        # The first operation after the outage gets a connection that
        # reaches the OSDs, not the one that never will.
        self._open_image()
        self.assertFalse(self.cluster.connections[-1].deaf)
        connections = len(self.cluster.connections)
        self._open_image()
        self.assertEqual(connections, len(self.cluster.connections))
        # An OSD answered on the new one: the deaf one is shut down.
        self.assertTrue(deaf.is_shut_down)

    def test_health_check_asks_an_osd_not_only_the_monitors(self):
        self.assertEqual((fakes.FSID, []), self.status())
        # The monitors still count the OSD as up (it is paused, say).
        self.cluster.osds_down = True
        fsid, problems = self.status()
        self.assertEqual(fakes.FSID, fsid)
        [problem] = problems
        self.assertIn('Ceph OSDs do not answer within', problem)
        # The connection that could not reach them is retired, and shut
        # down only once an OSD answers again (see test_retired...).
        self.assertFalse(self.cluster.connections[0].is_shut_down)
        self.cluster.osds_down = False
        self.assertEqual((fakes.FSID, []), self.status())
        self.assertTrue(self.cluster.connections[0].is_shut_down)
        self.assertFalse(self.cluster.connections[-1].is_shut_down)

    def _open_image(self):
        self.cluster.pools['vms']['probe-disk'] = fakes.FakeDisk(1)
        with self.conn.ioctx() as ioctx:
            with self.cluster.rbd.Image(ioctx, 'probe-disk'):
                pass

    def test_an_old_connection_s_error_leaves_the_current_one_trusted(self):
        # A watch kept a lease on a connection retired since; its error
        # when it closes must not mark the current connection unreachable
        # (nothing would clear it: every lock release was then skipped).
        old = self.conn.acquire()
        self.conn.release(old, exception.BackendUnavailable(
            backend='Ceph', reason='timed out'))
        self.assertTrue(self.conn.seems_unreachable())
        with self.conn.ioctx():  # a new connection, probed
            pass
        self.assertFalse(self.conn.seems_unreachable())
        self.conn.release(old, exception.BackendUnavailable(
            backend='Ceph', reason='unwatch timed out'))
        self.assertFalse(self.conn.seems_unreachable())
        self.assertEqual(2, len(self.cluster.connections))

    def test_other_errors_keep_the_connection(self):
        self.assertRaises(exception.StorageError, self._fail_with,
                          self.cluster.rbd.Error('boom'))
        with self.conn.ioctx():
            pass
        self.assertEqual(1, len(self.cluster.connections))

    def test_health_check_of_an_unreachable_cluster_shuts_nothing_in_use(self):
        with self.conn.ioctx() as busy:
            self.cluster.reachable = False
            fsid, problems = self.status()
            self.assertIsNone(fsid)
            self.assertIn('Ceph is unavailable', problems[0])
            self.assertFalse(self.cluster.connections[0].is_shut_down)
            self.cluster.reachable = True
            self.cluster.rbd.RBD().list(busy)
        self.assertEqual((fakes.FSID, []), self.status())

    def test_partial_image_holds_its_lease_until_done(self):
        from imaged.storage import partial
        writer = partial.PartialWriter(self.conn, 'test-host')
        new = writer.new(partial.FinalImage('x_disk', 0, None, {}), 10)
        self.assertRaises(exception.BackendUnavailable, self._fail_with,
                          self.cluster.rados.TimedOut('osd'))
        first = self.cluster.connections[0]
        self.assertFalse(first.is_shut_down)
        new.write(0, b'data')
        new.commit(10)
        self.assertIn('x_disk', self.cluster.pools['vms'])
        with self.conn.ioctx():  # a new connection; an OSD answers on it
            pass
        self.assertTrue(first.is_shut_down)

    def test_retired_connections_stay_while_ceph_does_not_answer(self):
        # librbd aborts the process when a connection that still carries
        # operations in flight is shut down; those end once Ceph answers.
        self.conn.retired_quiet = lambda: 60
        clock = [1000.0]
        self.useFixture(base.fixtures.MonkeyPatch(
            'imaged.storage.connection.time.monotonic', lambda: clock[0]))
        self.assertRaises(exception.BackendUnavailable, self._fail_with,
                          self.cluster.rados.TimedOut('osd'))
        first = self.cluster.connections[0]
        self.cluster.osds_down = True
        for _ in range(3):
            clock[0] += 100
            self.assertRaises(exception.BackendUnavailable,
                              self._open_image)
        self.assertFalse(first.is_shut_down)
        self.assertFalse(any(c.is_shut_down
                             for c in self.cluster.connections))
        self.cluster.osds_down = False
        self._open_image()
        self._open_image()  # an OSD answered; not yet for a minute
        self.assertFalse(first.is_shut_down)
        clock[0] += 61
        self._open_image()
        self.assertTrue(first.is_shut_down)
        self.assertFalse(self.cluster.connections[-1].is_shut_down)

    def _fail_with(self, error):
        with self.conn.ioctx():
            raise error


class ShutdownNeverRacesConnectTest(base.TestCase):
    """librados aborts the process (std::system_error: Invalid argument)
    when rados_shutdown and rados_connect run at once."""

    def setUp(self):
        super().setUp()
        self.cluster = fakes.FakeCluster()
        self.conn = connection.CephConnection(
            self.conf, self.cluster.rados, self.cluster.rbd)
        self.conn.shutdown_grace = lambda: 0
        self.conn.retired_quiet = lambda: 0
        self.running = []  # 'connect' / 'shutdown' calls in progress
        self.overlaps = []
        self.in_shutdown = threading.Event()
        self.finish_shutdown = threading.Event()
        test = self
        real_connect = fakes.FakeRados.connect

        def connect(rados, timeout=0):
            test._enter('connect')
            try:
                return real_connect(rados, timeout)
            finally:
                test.running.remove('connect')

        def shutdown(rados):
            test._enter('shutdown')
            test.in_shutdown.set()
            test.finish_shutdown.wait(5)
            rados.is_shut_down = True
            test.running.remove('shutdown')
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeRados.connect', connect))
        self.useFixture(base.fixtures.MonkeyPatch(
            'tests.unit.fakes.FakeRados.shutdown', shutdown))

    def _enter(self, what):
        if self.running:
            self.overlaps.append((list(self.running), what))
        self.running.append(what)

    def test_a_new_connection_waits_for_the_retired_one_to_shut_down(self):
        self.assertRaises(exception.BackendUnavailable, self._fail_with,
                          self.cluster.rados.TimedOut('osd'))
        # Ceph answers on a new connection: the retired one shuts down.
        with self.conn.ioctx():
            pass
        self.assertTrue(self.in_shutdown.wait(5))
        # Another failure: the next operation must connect afresh while
        # the first shutdown still runs.
        self.assertRaises(exception.BackendUnavailable, self._fail_with,
                          self.cluster.rados.TimedOut('osd'))
        opened = threading.Event()

        def operation():
            with self.conn.ioctx():
                opened.set()
        thread = threading.Thread(target=operation)
        thread.start()
        self.assertFalse(opened.wait(0.3))  # connect() waits
        self.finish_shutdown.set()
        self.assertTrue(opened.wait(5))
        thread.join(5)
        self.assertEqual([], self.overlaps)
        self.assertTrue(self.cluster.connections[0].is_shut_down)
        self.assertFalse(self.cluster.connections[-1].is_shut_down)

    def _fail_with(self, error):
        with self.conn.ioctx():
            raise error
