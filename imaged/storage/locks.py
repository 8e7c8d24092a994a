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

"""Cluster-wide locks: rados locks with a lease, and waking their waiters.

Every host sharing a pool coordinates through small rados objects in it
(``imaged.lock.*``). A :class:`RadosLock` is one rados lock on such an
object, exclusive or shared (rados refuses an exclusive lock while shared
ones are held, and shared ones while an exclusive one is held), taken with
a lease of ``duration`` seconds: a holder that dies loses it when the lease
runs out, and a live holder renews it in the background while it holds it.
A waiter of :mod:`imaged.storage.watches` wakes as soon as a holder
calls :func:`notify` on the object (rados watch/notify).
"""

import contextlib
import threading
import time
from typing import Any
import uuid

from oslo_log import log as logging
import tenacity

from imaged import exception

LOG = logging.getLogger(__name__)

# librados' LIBRADOS_LOCK_FLAG_MAY_RENEW: take the lock, or renew ours.
LOCK_FLAG_MAY_RENEW = 1
# Tag every shared holder of a lock uses (rados wants one tag per lock).
SHARED_TAG = 'imaged'
# A notification waits this long for its watchers' acknowledgements: a
# dead watcher must not hold up the notifier. librados sends it in whole
# seconds: 500 ms was sent as 0, which the OSD takes for its default, 30 s.
NOTIFY_TIMEOUT_MS = 1000


# The RadosLocks each thread holds now (see check_leases).
_HELD = threading.local()


def _held_here():
    if not hasattr(_HELD, 'locks'):
        _HELD.locks = []
    return _HELD.locks


def held_exclusive():
    """``[[key, lock name], ...]``: the exclusive locks this thread holds.

    Work done under them (a partial image being written) is recorded with
    them, so that the pool's cleanup host can tell a dead writer's
    leftover by the lease in Ceph (:func:`all_free`), not by clocks.
    """
    return [[lock.key, lock.name] for lock in _held_here()
            if not lock.shared and lock.held]


@contextlib.contextmanager
def all_free(conn, ioctx, guards, duration):
    """Take every lock of ``guards`` (from :func:`held_exclusive`) that
    nobody holds, for the block; yields whether all were free: then
    whoever held them (a writer that died, or lost its lease) has no lease
    left in Ceph. A lock object that no longer exists is free (taking its
    lock would make it again)."""
    taken, free = [], True
    try:
        for key, name in guards:
            with conn.typed_errors(key):
                try:
                    ioctx.stat(key)
                except conn.rados.ObjectNotFound:
                    continue
            lock = RadosLock(conn, ioctx, key, name,
                             'imaged: sweeping what it guarded', duration)
            if not lock.try_acquire():
                free = False
                break
            taken.append(lock)
        yield free
    finally:
        for lock in reversed(taken):
            lock.release()


def check_leases(what: str) -> None:
    """Before a commit: every lock this thread holds still has its lease.

    A holder whose lease ran out (its host paused, or lost the lock's OSD
    for longer than the lease) may no longer be the only one at work:
    another host may have taken the lock. So it stops before it commits,
    renames or clears a marker.

    :raises LeaseLost: naming the lock and ``what`` was about to happen.
    """
    for lock in list(_held_here()):
        if not lock.lease_valid():
            LOG.warning('Lease of %s on %s/%s ran out before %s: stopping',
                        lock.name, lock.conn.pool, lock.key, what)
            raise exception.LeaseLost(name=lock.key, pool=lock.conn.pool,
                                      what=what)


class RadosLock:
    """One rados lock on ``key``, leased and renewed while held.

    :param ioctx: an I/O context the caller keeps open while the lock may
        be held (the renewal uses it).
    :param shared: a shared lock (else exclusive).
    """

    def __init__(self, conn: Any, ioctx: Any, key: str, name: str, desc: str,
                 duration: float, shared: bool = False) -> None:
        self.conn, self.ioctx = conn, ioctx
        self.key, self.name, self.desc = key, name, desc
        self.duration, self.shared = duration, shared
        self.cookie = uuid.uuid4().hex
        self.held = False
        self.lost = False  # another holder took it while we held it
        self._expires = 0.0  # monotonic end of the lease we last had
        self._stop = threading.Event()
        self._renewer = None

    def lease_valid(self) -> bool:
        """Whether this holder still holds the lock with time left on its
        lease, by this host's clock (a second of margin)."""
        return self.held and not self.lost and \
            time.monotonic() < self._expires - 1.0

    def _lock(self, flags=0, ioctx=None):
        asked = time.monotonic()  # the lease runs from no later than this
        self._lock_once(flags, ioctx or self.ioctx)
        self._expires = asked + self.duration

    def _lock_once(self, flags, ioctx):
        if self.shared:
            ioctx.lock_shared(self.key, self.name, self.cookie, SHARED_TAG,
                              desc=self.desc, duration=self.duration,
                              flags=flags)
        else:
            ioctx.lock_exclusive(self.key, self.name, self.cookie,
                                 desc=self.desc, duration=self.duration,
                                 flags=flags)

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it against us: True if taken."""
        rados = self.conn.rados
        with self.conn.typed_errors(self.key):
            try:
                self._lock()
            except (rados.ObjectBusy, rados.ObjectExists):
                return False
        try:
            with self.conn.typed_errors(self.key):
                self._start_renewal()
        except BaseException:
            # No renewal, so no lock: give it back (else its lease does).
            with contextlib.suppress(rados.Error):
                self.ioctx.unlock(self.key, self.name, self.cookie)
            raise
        self.held = True
        self.lost = False
        _held_here().append(self)
        return True

    def acquire(self, timeout: float, what: str,
                wake: Any = None) -> None:
        """Take the lock, waiting at most ``timeout`` seconds.

        :param wake: a ``watches.Waiter`` on ``key`` whose notifications
            end a wait early; without it, waits back off from 50 ms to 1 s.
        :raises Timeout: naming ``what``.
        """
        timeout = max(timeout, 0)
        wait: Any
        sleep: Any
        if wake is not None:
            # A notification ends the wait; a lease that ran out does not
            # notify, so look again at least every half lease.
            wait = tenacity.wait_fixed(self.duration / 2.0)
            sleep = wake.wait
        else:
            wait = tenacity.wait_exponential(multiplier=0.05, max=1.0)
            sleep = time.sleep

        def until_deadline(retry_state):
            left = timeout - retry_state.seconds_since_start
            return max(min(wait(retry_state), left), 0)

        def timed_out(retry_state):
            raise exception.Timeout(what=what, seconds=round(timeout, 1))
        tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda taken: not taken),
            stop=tenacity.stop_after_delay(timeout), wait=until_deadline,
            sleep=sleep, retry_error_callback=timed_out)(self.try_acquire)

    def _start_renewal(self):
        self._stop.clear()
        # The renewal has an I/O context of its own, which it closes: a
        # release while Ceph does not answer leaves the renewal to end by
        # itself, and the caller closes its own context meanwhile (with a
        # shared one, a renewal already past the binding's "open" check
        # used the freed context).
        ioctx = self.ioctx.dup()
        self._renewer = threading.Thread(
            target=self._renew, args=(ioctx,), name='renew-%s' % self.key,
            daemon=True)
        self._renewer.start()

    def _renew(self, ioctx):
        try:
            self._renew_until_stopped(ioctx)
        finally:
            ioctx.close()

    def _renew_until_stopped(self, ioctx):
        rados = self.conn.rados
        while not self._stop.wait(self.duration / 3.0):
            try:
                self._lock(LOCK_FLAG_MAY_RENEW, ioctx)
            except (rados.ObjectBusy, rados.ObjectExists):
                # Our lease ran out and someone else holds the lock now.
                self.lost = True
                LOG.warning('Lost the lease of %s on %s/%s', self.name,
                            self.conn.pool, self.key)
                return
            except rados.Error as e:
                # The lease still runs; try again before it ends.
                LOG.warning('Could not renew %s on %s/%s: %s', self.name,
                            self.conn.pool, self.key, e)

    def release(self) -> None:
        """Release the lock (its lease runs out by itself if that fails, or
        if Ceph does not answer now: then nothing waits for it)."""
        self._stop.set()
        held_here = _held_here()
        if self in held_here:
            held_here.remove(self)
        if self.conn.seems_unreachable():
            self._renewer = None
            if self.held:
                self.held = False
                LOG.debug('Leaving %s on %s to its lease: Ceph does not '
                          'answer', self.name, self.key)
            return
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if not self.held:
            return
        self.held = False
        rados = self.conn.rados
        try:
            self.ioctx.unlock(self.key, self.name, self.cookie)
        except rados.ObjectNotFound:  # removed, or the lease ran out
            pass
        except rados.Error as e:
            LOG.warning('Could not release %s on %s/%s: %s', self.name,
                        self.conn.pool, self.key, e)


def notify(conn: Any, ioctx: Any, key: str, message: str = '') -> None:
    """Wake every watch on ``key``; best effort."""
    if conn.seems_unreachable():
        return  # the waiters look again when their wait ends
    try:
        ioctx.notify(key, message, NOTIFY_TIMEOUT_MS)
    except conn.rados.Error as e:
        LOG.debug('Notifying %s: %s (its waiters look again when their '
                  'wait ends)', key, e)


class PoolRole:
    """A role that one host of the pool holds at a time, by lease.

    :meth:`held` is asked before each run of the role's work: it takes the
    role if nobody holds it, renews it if we do, and says no if another
    host does. A holder that stops asking (it died) loses the role after
    ``duration`` seconds, and the next host to ask takes it.
    """

    def __init__(self, conn: Any, key: str, host: str,
                 duration: float) -> None:
        self.conn, self.key, self.host = conn, key, host
        self.duration = duration
        self.cookie = uuid.uuid4().hex  # this process's, for its lifetime
        self._held = False

    def held(self) -> bool:
        rados = self.conn.rados
        with self.conn.ioctx(name=self.key) as ioctx:
            with self.conn.typed_errors(self.key):
                try:
                    ioctx.lock_exclusive(self.key, 'imaged-role', self.cookie,
                                         desc=self.host,
                                         duration=self.duration,
                                         flags=LOCK_FLAG_MAY_RENEW)
                except (rados.ObjectBusy, rados.ObjectExists):
                    held = False
                else:
                    held = True
        if held != self._held:
            LOG.info('This host %s the pool\'s %s role', 'now holds' if held
                     else 'does not hold', self.key)
            self._held = held
        return held

    def release(self) -> None:
        """Give the role up (a clean stop): another host takes it at once."""
        if not self._held:
            return
        self._held = False
        rados = self.conn.rados
        try:
            with self.conn.ioctx(name=self.key) as ioctx:
                ioctx.unlock(self.key, 'imaged-role', self.cookie)
        except (rados.Error, exception.ImagedException) as e:
            LOG.warning('Could not give up the pool\'s %s role (it runs out '
                        'by itself): %s', self.key, e)
