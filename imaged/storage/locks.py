"""Cluster-wide locks: rados locks with a lease, and waking their waiters.

Every host sharing a pool coordinates through small rados objects in it
(``imaged.lock.*``). A :class:`RadosLock` is one rados lock on such an
object, exclusive or shared (rados refuses an exclusive lock while shared
ones are held, and shared ones while an exclusive one is held), taken with
a lease of ``duration`` seconds: a holder that dies loses it when the lease
runs out, and a live holder renews it in the background while it holds it.
A :class:`Waiter` from :class:`ObjectWatches` wakes as soon as a holder
notifies the object (rados watch/notify), instead of sleep-polling; waiters
still look again after a bounded wait, so a notification lost with a dead
holder only costs them the lease.
"""

import contextlib
import ctypes
import threading
import time
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


def check_leases(what):
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

    def __init__(self, conn, ioctx, key, name, desc, duration,
                 shared=False):
        self.conn, self.ioctx = conn, ioctx
        self.key, self.name, self.desc = key, name, desc
        self.duration, self.shared = duration, shared
        self.cookie = uuid.uuid4().hex
        self.held = False
        self.lost = False  # another holder took it while we held it
        self._expires = 0.0  # monotonic end of the lease we last had
        self._stop = threading.Event()
        self._renewer = None

    def lease_valid(self):
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

    def try_acquire(self):
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

    def acquire(self, timeout, what, wake=None):
        """Take the lock, waiting at most ``timeout`` seconds.

        :param wake: a :class:`Waiter` on ``key`` whose notifications
            end a wait early; without it, waits back off from 50 ms to 1 s.
        :raises Timeout: naming ``what``.
        """
        timeout = max(timeout, 0)
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

    def release(self):
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


# Watches whose close failed: kept for the process's life (see
# _Watched.close); a few objects per Ceph outage.
_UNCLOSED = []
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

    def __init__(self, conn):
        self.conn = conn
        self._lock = threading.Lock()
        self._watched = {}  # (pool, key) -> _Watched

    @contextlib.contextmanager
    def watch(self, key, pool=None):
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

    def renew(self, waiter):
        """Watch ``waiter``'s key anew after its watch broke."""
        with self._lock:
            watched = self._watched.get(waiter.slot)
        if watched is not None:
            watched.ensure()

    def watched(self):
        """Keys watched now, with their number of waiters."""
        with self._lock:
            return {slot: len(w.waiters) for slot, w in self._watched.items()}

    def close(self):
        """Close every watch (the process stops)."""
        with self._lock:
            watched, self._watched = list(self._watched.values()), {}
        for w in watched:
            w.close()


class Waiter:
    """One caller waiting for notifications on a watched key."""

    def __init__(self, watches, slot):
        self._watches = watches
        self.slot = slot
        self.event = threading.Event()

    @property
    def key(self):
        return self.slot[1]

    def wait(self, timeout):
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


def notify(conn, ioctx, key, message=''):
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

    def __init__(self, conn, key, host, duration):
        self.conn, self.key, self.host = conn, key, host
        self.duration = duration
        self.cookie = uuid.uuid4().hex  # this process's, for its lifetime
        self._held = False

    def held(self):
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

    def release(self):
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
