"""Cluster-wide locks and their wake-ups, on the fakes."""

from imaged.storage import connection
from imaged.storage import locks
from tests import base
from tests.unit import fakes


class ChangeWatchTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.cluster = fakes.FakeCluster()
        self.conn = connection.CephConnection(self.conf, self.cluster.rados,
                                              self.cluster.rbd)

    def test_a_broken_watch_wakes_the_waiter_and_is_made_anew(self):
        with self.conn.ioctx() as ioctx:
            with locks.ChangeWatch(self.conn, ioctx, 'obj') as watch:
                [first] = self.cluster.watches[('vms', 'obj')]
                # librados passes the watch id and the error: the callback
                # must take them and never raise (it would end the process).
                first.break_()
                self.assertTrue(watch.wait(5))
                [second] = self.cluster.watches[('vms', 'obj')]
                self.assertIsNot(first, second)
                locks.notify(self.conn, ioctx, 'obj')
                self.assertTrue(watch.wait(5))
                self.assertFalse(watch.wait(0.01))
            self.assertEqual([], self.cluster.watches[('vms', 'obj')])

    def test_the_object_is_made_if_it_is_missing(self):
        with self.conn.ioctx() as ioctx:
            with locks.ChangeWatch(self.conn, ioctx, 'new-obj'):
                self.assertIn(('vms', 'new-obj'), self.cluster.objects)

    def test_a_watch_whose_close_failed_is_never_freed(self):
        # Freed, the binding's Watch unwatches again on memory librados
        # released: the worker died of SIGSEGV.
        with self.conn.ioctx() as ioctx:
            watch = locks.ChangeWatch(self.conn, ioctx, 'obj')
            [registered] = self.cluster.watches[('vms', 'obj')]

            def timed_out():
                raise self.cluster.rados.TimedOut('unwatch error')
            registered.close = timed_out
            watch.close()
            self.assertIn(registered, locks._UNCLOSED)
        locks._UNCLOSED.remove(registered)
