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

"""The Ceph connection every storage operation shares.

librados forbids shutting a connection down while I/O contexts, images or
aio writes still use it. So operations take a *lease* on the connection
for as long as they use it; an error that says the cluster is unreachable
only retires the connection (the next operation connects afresh), and a
retired connection is shut down once its last lease is returned. Nothing
else ever shuts a connection down.

A retired connection is shut down by a thread of its own, after a grace
period (``[rbd] connect_timeout``: librbd may still finish operations that
timed out on our side, and their callbacks, after its call returned), and
never while another connection is being made or shut down: librados cannot
run ``rados_connect`` and ``rados_shutdown`` at the same time in one process
(Ceph's own CLI stopped shutting down after timeouts for that reason, Ceph
tracker 44526); when they raced, the worker died of SIGABRT in librados
("std::system_error: Invalid argument", a destroyed mutex).

A connection is trusted once an OSD has answered it: librados can hand out
a connection, made while an OSD was down, whose operations keep timing out
after the OSD is back. So the first operation on a new connection reads
one small object first (bounded by ``rados_osd_op_timeout``); if that times
out, the connection is retired and the operation gets a fresh one.

This is the only module that connects to Ceph, and the only one that knows
imaged's Ceph user, keyring and timeouts: qemu-img reaches RBD images
through :meth:`CephConnection.qemu_image`'s ``rbd:`` names. The ``rados``
and ``rbd`` modules are injectable so unit tests can pass small fakes.
"""

import contextlib
import errno
import re
import threading
import time
from typing import Any, Iterator, NamedTuple

from oslo_log import log as logging

from imaged import exception
from imaged.i18n import _

LOG = logging.getLogger(__name__)

# What librados reports when monitors or OSDs do not answer in time.
_UNREACHABLE_ERRNOS = (errno.ETIMEDOUT, errno.ESHUTDOWN, errno.ENOTCONN,
                       errno.EINTR)
# Read (stat) by the first operation on a new connection; every RBD pool
# has it once it holds an image, and ENOENT is an OSD's answer too.
PROBE_OBJECT = 'rbd_directory'


class QemuImage(NamedTuple):
    """An RBD image (at ``snapshot``, if any) as qemu-img opens it."""
    pool: str
    name: str
    snapshot: str | None
    filename: str  # qemu's ``rbd:`` name, as imaged's user


def _qemu_escape(value):
    # qemu splits an rbd: name at ':', '/' and '@' unless backslashed.
    return re.sub(r'([\\:/@])', r'\\\1', str(value))


class Lease:
    """One connected cluster handle and the number of operations using it."""

    def __init__(self, conn: 'CephConnection', cluster: Any) -> None:
        self.conn = conn
        self.cluster = cluster
        self.users = 0
        self.retired = False
        self.proven = False  # an OSD has answered an operation on it


class CephConnection:
    """Leases on one Ceph connection; typed errors for everything Ceph."""

    def __init__(self, conf: Any, rados_module: Any,
                 rbd_module: Any) -> None:
        self.conf = conf
        self.rados = rados_module
        self.rbd = rbd_module
        self._current: Lease | None = None
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        # Held while librados makes or shuts down a connection: those must
        # never run at once.
        self._lifecycle_lock = threading.Lock()
        self._fsid: str | None = None
        self._unreachable = False
        # When an OSD last answered after a failure (None: not since).
        self._reachable_since: float | None = None
        # Retired connections nobody uses, not yet shut down (see _park).
        self._retired: list[Any] = []

    def shutdown_grace(self) -> float:
        """Seconds a retired connection lives on after its last lease."""
        return self.conf.rbd.connect_timeout

    def retired_quiet(self) -> float:
        """Seconds Ceph must have answered again before a retired
        connection is shut down."""
        return max(6 * self.conf.rbd.connect_timeout, 60)

    @property
    def pool(self) -> str:
        return self.conf.rbd.pool

    def _timeouts(self):
        # Ceph's timeouts, so that a stalled cluster fails an operation
        # instead of hanging it.
        timeout = str(self.conf.rbd.connect_timeout)
        return {'client_mount_timeout': timeout,
                'rados_mon_op_timeout': timeout,
                'rados_osd_op_timeout': timeout}

    def qemu_image(self, pool: str, name: str,
                   snapshot: str | None = None) -> QemuImage:
        """Image ``name`` in ``pool`` (at ``snapshot``) as qemu-img opens
        it: as imaged's user, with Ceph's timeouts."""
        rbd = self.conf.rbd
        options = [('id', rbd.user), ('conf', rbd.ceph_conf)]
        if rbd.keyring:
            options.append(('keyring', rbd.keyring))
        options += list(self._timeouts().items())
        at = '@' + _qemu_escape(snapshot) if snapshot else ''
        filename = 'rbd:%s/%s%s%s' % (
            _qemu_escape(pool), _qemu_escape(name), at, ''.join(
                ':%s=%s' % (key, _qemu_escape(value))
                for key, value in options))
        return QemuImage(pool, name, snapshot, filename)

    def _connect(self):
        extra = dict(self._timeouts(),
                     # Imports write whole 4 MiB objects once: a write-back
                     # cache would only copy them and hold memory.
                     rbd_cache='false',
                     # Clones whose parents can be deleted (to the trash)
                     # while they live; see storage.trash.
                     rbd_default_clone_format='2')
        if self.conf.rbd.keyring:
            extra['keyring'] = self.conf.rbd.keyring
        # A retired connection still shutting down: wait for it (bounded
        # like connect() itself; a shutdown that hangs means Ceph does not
        # answer, and this call gets a typed error, not a crash).
        if not self._lifecycle_lock.acquire(
                timeout=self.conf.rbd.connect_timeout):
            raise exception.BackendUnavailable(
                backend='Ceph', reason=_('a previous connection is still '
                                         'shutting down'))
        try:
            cluster = self.rados.Rados(rados_id=self.conf.rbd.user,
                                       conffile=self.conf.rbd.ceph_conf,
                                       conf=extra)
            try:
                cluster.connect(timeout=self.conf.rbd.connect_timeout)
            except self.rados.Error as e:
                _shutdown_quietly(cluster)
                raise exception.BackendUnavailable(
                    backend='Ceph', reason=_('cannot connect with %(conf)s: '
                                             '%(err)s') %
                    {'conf': self.conf.rbd.ceph_conf, 'err': e})
            return cluster
        finally:
            self._lifecycle_lock.release()

    def acquire(self) -> Lease:
        """A :class:`Lease`; return it with ``release``."""
        self._reap_if_due()
        lease = self.acquire_unproven()
        if lease.proven:
            return lease
        try:
            error = self.probe(lease)
        except BaseException as e:
            self.release(lease, e)
            raise
        if error is None:
            return lease
        LOG.warning('A Ceph connection does not reach the OSDs (%s); '
                    'connecting afresh', error)
        self.release(lease, exception.BackendUnavailable(
            backend='Ceph', reason=str(error)))
        return self.acquire_unproven()  # probed at its next use

    def acquire_unproven(self) -> Lease:
        """A :class:`Lease` no OSD may have answered yet (see
        :meth:`probe`)."""
        # One thread connects at a time; connect() is bounded by
        # connect_timeout, so so is this wait.
        with self._connect_lock:
            with self._lock:
                lease = self._current
                if lease is not None:
                    lease.users += 1
                    return lease
            lease = Lease(self, self._connect())
            with self._lock:
                self._current = lease
                lease.users += 1
                return lease

    def probe(self, lease: Lease) -> BaseException | None:
        """None if an OSD answers a read on this connection, else the error
        that says Ceph is unreachable."""
        try:
            ioctx = lease.cluster.open_ioctx(self.pool)
        except self.rados.Error as e:
            return e if self.is_unreachable(e) else None
        try:
            ioctx.stat(PROBE_OBJECT)
        except self.rados.ObjectNotFound:
            pass  # the answer came from an OSD all the same
        except self.rados.Error as e:
            return e if self.is_unreachable(e) else None
        finally:
            ioctx.close()
        lease.proven = True
        with self._lock:
            self._unreachable = False
            if self._reachable_since is None:
                self._reachable_since = time.monotonic()
        self._reap_if_due()
        return None

    def release(self, lease: Lease,
                error: BaseException | None = None) -> None:
        """Return a lease; ``error`` saying Ceph is unreachable retires it."""
        if isinstance(error, exception.BackendUnavailable):
            self._retire(lease)
        with self._lock:
            lease.users -= 1
            done = lease.retired and lease.users == 0
        if done:
            self._park(lease.cluster)

    # A retired connection can still carry librbd state with operations in
    # flight: an image's header watch re-registering after an OSD came
    # back, a write that timed out. Shutting the connection down then
    # aborts the process inside librbd ("AsyncOpTracker::~AsyncOpTracker:
    # FAILED ceph_assert(m_pending_ops == 0)", from a librados thread; seen
    # in the soak ~20 s after an OSD restart). So a retired connection is
    # kept while Ceph does not answer, and shut down only once Ceph has
    # answered again for retired_quiet() seconds: by then what was in
    # flight has finished. A few idle connections per outage is the cost.

    def _park(self, cluster):
        with self._lock:
            self._retired.append(cluster)
        self._reap_if_due()

    def _reap_if_due(self):
        with self._lock:
            since = self._reachable_since
            if not self._retired or since is None or \
                    time.monotonic() - since < self.retired_quiet():
                return
            clusters, self._retired = self._retired, []
        for cluster in clusters:
            _shutdown_in_background(cluster, self._lifecycle_lock,
                                    self.shutdown_grace())

    def seems_unreachable(self) -> bool:
        """Whether the last word from Ceph was "unreachable": cleanup that
        can wait (releasing a leased lock, closing a watch, a notification)
        is then skipped instead of waiting out another operation timeout.
        """
        return self._unreachable

    def _retire(self, lease):
        with self._lock:
            if lease.retired:
                # A connection retired before, still used by a long-lived
                # holder (a watch), says nothing of the current one: taken
                # for "Ceph is unreachable", it left the current connection
                # marked so for good (no probe would clear it), and every
                # lock release was then left to its lease. In a storm that
                # kept the base's lock taken and the builder out of it.
                return
            lease.retired = True
            self._unreachable = True
            self._reachable_since = None
            if self._current is lease:
                self._current = None
        LOG.warning('Ceph connection retired after an error; the next '
                    'operation connects afresh')

    @contextlib.contextmanager
    def lease(self) -> Iterator[Any]:
        """The connected cluster handle, for as long as the block runs."""
        lease = self.acquire()
        error = None
        try:
            yield lease.cluster
        except BaseException as e:
            error = e
            raise
        finally:
            self.release(lease, error)

    def open_ioctx(self, cluster: Any, pool: str) -> Any:
        """``cluster.open_ioctx(pool)`` with typed errors."""
        with self.typed_errors(pool, pool):
            try:
                return cluster.open_ioctx(pool)
            except self.rados.ObjectNotFound:
                raise exception.BackendUnavailable(
                    backend='Ceph', reason=_('pool %s does not exist') % pool)

    @contextlib.contextmanager
    def ioctx(self, pool: str | None = None,
              name: str | None = None) -> Iterator[Any]:
        """An I/O context on ``pool``; Ceph errors become typed errors."""
        pool = pool or self.pool
        with self.lease() as cluster:
            ioctx = self.open_ioctx(cluster, pool)
            try:
                with self.typed_errors(name or pool, pool):
                    yield ioctx
            finally:
                ioctx.close()

    def is_unreachable(self, error: BaseException) -> bool:
        return isinstance(error, (self.rados.TimedOut, self.rbd.Timeout,
                                  self.rados.ConnectionShutdown)) or \
            getattr(error, 'errno', None) in _UNREACHABLE_ERRNOS

    @contextlib.contextmanager
    def typed_errors(self, name: str,
                     pool: str | None = None) -> Iterator[None]:
        """Ceph errors inside become imaged's typed errors."""
        pool = pool or self.pool
        try:
            yield
        except self.rbd.ImageExists:
            raise exception.DiskExists(name=name, pool=pool)
        except (self.rados.Error, self.rbd.Error) as e:
            if self.is_unreachable(e):
                raise exception.BackendUnavailable(
                    backend='Ceph', reason=_('operation on %(name)s in pool '
                                             '%(pool)s failed: %(err)s') %
                    {'name': name, 'pool': pool, 'err': e})
            if isinstance(e, (self.rbd.NoSpace, self.rbd.DiskQuotaExceeded)):
                reason = _('no space: %s') % e
            elif isinstance(e, self.rbd.PermissionError):
                reason = _('permission denied: %s') % e
            else:
                reason = str(e)
            raise exception.StorageError(name=name, pool=pool, reason=reason)

    def fsid(self) -> str:
        if self._fsid is None:
            with self.lease() as cluster:
                with self.typed_errors('the cluster'):
                    self._fsid = cluster.get_fsid()
        return self._fsid


def _shutdown_quietly(cluster):
    try:
        cluster.shutdown()
    except Exception:  # already broken; nothing more to release
        LOG.debug('Ignoring error shutting down a Ceph connection',
                  exc_info=True)


def _shutdown_later(cluster, lock, grace):
    time.sleep(grace)
    with lock:
        _shutdown_quietly(cluster)


def _shutdown_in_background(cluster, lock, grace):
    # shutdown() of a connection to a stalled cluster can block; nobody
    # waits for it. ``lock`` keeps it apart from connect() and from other
    # shutdowns.
    threading.Thread(target=_shutdown_later, args=(cluster, lock, grace),
                     name='ceph-shutdown', daemon=True).start()
