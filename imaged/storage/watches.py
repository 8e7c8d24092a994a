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

"""Waking the waiters of a rados object: one watch per object per process.

A holder of a lock in :mod:`imaged.storage.locks` notifies the lock's
object when what others wait for changed (a base built or failed); a
:class:`Waiter` from :class:`ObjectWatches` wakes then, instead of
sleep-polling, and still looks again after a bounded wait, so a
notification lost with a dead holder only costs the lease.
"""

import contextlib
import ctypes
import threading
from typing import Any, Iterator

from oslo_log import log as logging

from imaged import exception

LOG = logging.getLogger(__name__)


# Watches whose close failed: kept for the process's life (see
# _Watched.close); a few objects per Ceph outage.
_UNCLOSED: list = []
_UNCLOSED_LOCK = threading.Lock()


class ObjectWatches:
    """One rados watch per object in this process; its waiters woken in
    Python.

    A boot storm of a new image puts every caller of the image on one host
    in a wait for its base. With a watch (and an I/O context) per waiter,
    one notification woke 16 watches at once, and all 16 were closed and
    made again together, while librados still delivered (and acknowledged)
    notifications on the others: the worker died inside librados, now and
    then, of SIGSEGV or SIGABRT (issue 24; tools/repro/watch_storm.py).
    Here a key has one watch whatever its waiters; it is made by the first
    waiter, closed by the last one to leave, and its callback only sets
    Python events.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self._watched: dict[tuple[str, str], Any] = {}  # -> _Watched

    @contextlib.contextmanager
    def watch(self, key: str, pool: str | None = None) -> Iterator['Waiter']:
        """A :class:`Waiter` on ``key`` for as long as the block runs.

        Made before the waiter looks at what it waits for, so no
        notification in between is missed; the object is created if need
        be.
        """
        pool = pool or self.conn.pool
        waiter = Waiter(self, (pool, key))
        self._join(waiter)
        try:
            yield waiter
        finally:
            self._leave(waiter)

    def _join(self, waiter):
        with self._lock:
            watched = self._watched.get(waiter.slot)
            if watched is None:
                watched = self._watched[waiter.slot] = _Watched(
                    self.conn, *waiter.slot)
            watched.waiters.add(waiter)
        # Outside the registry lock: the first waiter of a key makes its
        # watch (one rados call); the others wait for it here.
        try:
            watched.ensure()
        except BaseException:
            self._leave(waiter)
            raise

    def _leave(self, waiter):
        with self._lock:
            watched = self._watched.get(waiter.slot)
            if watched is None or waiter not in watched.waiters:
                return
            watched.waiters.discard(waiter)
            if watched.waiters:
                return
            del self._watched[waiter.slot]
        watched.close()

    def renew(self, waiter: 'Waiter') -> None:
        """Watch ``waiter``'s key anew after its watch broke."""
        with self._lock:
            watched = self._watched.get(waiter.slot)
        if watched is not None:
            watched.ensure()

    def watched(self) -> dict[tuple[str, str], int]:
        """Keys watched now, with their number of waiters."""
        with self._lock:
            return {slot: len(w.waiters) for slot, w in self._watched.items()}

    def close(self) -> None:
        """Close every watch (the process stops)."""
        with self._lock:
            watched, self._watched = list(self._watched.values()), {}
        for w in watched:
            w.close()


class Waiter:
    """One caller waiting for notifications on a watched key."""

    def __init__(self, watches: ObjectWatches, slot: Any) -> None:
        self._watches = watches
        self.slot = slot
        self.event = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Wait for a notification, at most ``timeout`` seconds."""
        self._watches.renew(self)  # a broken watch is made again first
        woke = self.event.wait(max(timeout, 0))
        self.event.clear()
        return woke


class _Watched:
    """The rados watch on one object, on an I/O context of its own and a
    lease on the connection that both live as long as the watch; made
    again on the current connection once that one is retired."""

    def __init__(self, conn, pool, key):
        self.conn, self.pool, self.key = conn, pool, key
        self.waiters = set()
        self._lock = threading.Lock()
        self._lease = self._ioctx = self._watch = None
        self._broken = False

    def ensure(self):
        with self._lock:
            if self._watch is not None and not self._broken and \
                    not self._lease.retired:
                return
            self._close_locked()
            self._open_locked()

    def _open_locked(self):
        conn = self.conn
        lease = conn.acquire()
        try:
            ioctx = conn.open_ioctx(lease.cluster, self.pool)
        except BaseException as e:
            conn.release(lease, e)
            raise
        try:
            with conn.typed_errors(self.key, self.pool):
                try:
                    watch = ioctx.watch(self.key, self._notified,
                                        self._error)
                except conn.rados.ObjectNotFound:
                    ioctx.set_xattr(self.key, 'imaged.lock', b'1')
                    watch = ioctx.watch(self.key, self._notified,
                                        self._error)
        except BaseException as e:
            ioctx.close()
            conn.release(lease, e)
            raise
        self._lease, self._ioctx, self._watch = lease, ioctx, watch
        self._broken = False

    # librados calls these on its own threads: they take whatever it
    # passes (the error callback gets the watch id and the error) and
    # never raise, which would end the process.
    def _notified(self, *args):
        for waiter in list(self.waiters):
            waiter.event.set()

    def _error(self, *args):
        # The object was removed (with its base), or the session broke:
        # every waiter looks again now, and the next wait watches anew.
        self._broken = True
        self._notified()

    def close(self):
        with self._lock:
            self._close_locked()

    def _close_locked(self):
        watch, ioctx, lease = self._watch, self._ioctx, self._lease
        self._watch = self._ioctx = self._lease = None
        if watch is None:
            return
        error = None
        if self.conn.seems_unreachable():
            # An unwatch would wait out the operation timeout; the watch
            # goes with the connection, once it is shut down.
            keep = True
        else:
            keep = False
            try:
                watch.close()  # unwatch, then librados' watch_flush
            except self.conn.rados.Error as e:
                # librados cancelled the watch already and only waited for
                # the OSD's answer; but the binding's Watch would unwatch
                # again when freed, on librados memory that is gone (the
                # worker died of SIGSEGV when an OSD was down). So it is
                # never freed.
                LOG.warning('Closing the watch on %s: %s; keeping it',
                            self.key, e)
                keep, error = True, e
        if keep:
            _keep_forever(watch, ioctx)
        else:
            ioctx.close()
        self.conn.release(lease, _unreachable_or_none(self.conn, error))


def _keep_forever(watch, ioctx):
    """Never free ``watch``: librados may have freed the watch (its cookie)
    already, and the binding's Watch would unwatch it again when freed,
    even at the interpreter's exit (SIGABRT or SIGSEGV in librados, shown
    by blocklisting a client mid-watch). A reference of its own that
    nothing holds keeps it from the collector for good."""
    with _UNCLOSED_LOCK:
        _UNCLOSED.append((watch, ioctx))
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(watch))


def _unreachable_or_none(conn, error):
    if error is not None and conn.is_unreachable(error):
        return exception.BackendUnavailable(backend='Ceph', reason=str(error))
    return None
