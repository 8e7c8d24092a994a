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

"""Base images in Ceph: one per image id, shared by every host of the pool.

A base image ``<image_id>_base`` holds an image's raw bytes; root disks are
copy-on-write clones of its protected snapshot ``snap``. This module and
the two it alone uses own the whole life of a base: what it looks like
(:mod:`imaged.storage.base_state`), what a build tells its waiters
(:mod:`imaged.storage.base_builds`), and here when each step happens:

* a host records its last use of a base at most once per
  ``rbd_base_min_age / 4`` (at most an hour), not at every clone;
* removed by the cleanup only when ours, without clones, and unused by
  every host for the minimum age; purged (its image deleted in Glance)
  whatever its clones, to the RBD trash, whose entry is removed once the
  last clone is gone.

The protocol, on the rados object ``imaged.lock.<image_id>`` in the pool
(every lock there is leased for ``[rbd] base_lock_duration`` seconds and
renewed while held, so a dead holder's lock runs out by itself):

``imaged-base``, shared
    held by every call that checks a complete base and clones it: clones of
    a complete base never wait for each other.
``imaged-base``, exclusive
    held to repair or remove a base: never while a clone is being made, and
    no clone starts while it is held.
``imaged-build``, exclusive
    held by the one host, anywhere in the pool, that makes a missing base.
    Its xattr ``imaged.build`` names the build (id, host, start). Every
    other call that needs the base watches the object and waits: the
    builder notifies it when the base is complete or the build failed. A
    failed build leaves its typed error in the xattr ``imaged.build_error``,
    and the calls that waited for that build get that error instead of
    downloading again. A builder that dies loses its lease and the first
    waiter to look again takes over.

So an image is downloaded once per pool, however many hosts need it at
once; and a cleanup never removes a base between a host's check and its
clone.
"""

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

from oslo_log import log as logging
import tenacity

from imaged import exception
from imaged.i18n import _
from imaged.storage import base_builds
from imaged.storage import base_state
from imaged.storage import connection
from imaged.storage import location as rbd_location
from imaged.storage import locks
from imaged.storage import partial
from imaged.storage import trash as rbd_trash
from imaged.storage import watches as rados_watches

LOG = logging.getLogger(__name__)

LOCK_NAME = 'imaged-base'
# Last use is written at most this often per host and base.
MAX_USE_RECORD_INTERVAL = 3600
# A base's ``(location, size)``, or Nones.
Found = tuple[rbd_location.RBDLocation | None, int | None]


class BaseImageStore:
    """The base images of ``[rbd] pool``."""

    def __init__(self, conn: connection.CephConnection,
                 writer: partial.PartialWriter, host: str,
                 trash: rbd_trash.Trash | None = None) -> None:
        self.conn = conn
        self.writer = writer
        self.host = host
        self.trash = trash or rbd_trash.Trash(conn)
        # One watch per lock object in this process, whatever its waiters.
        self.watches = rados_watches.ObjectWatches(conn)
        # Image id -> when this host last recorded its use.
        self._used: dict[str, float] = {}
        self._used_lock = threading.Lock()

    @property
    def pool(self) -> str:
        return self.conn.pool

    # -- the locks ------------------------------------------------------------

    def lock_for(self, ioctx: Any, image_id: str, name: str = LOCK_NAME,
                 shared: bool = False) -> locks.RadosLock:
        duration = self.conn.conf.rbd.base_lock_duration
        return locks.RadosLock(self.conn, ioctx,
                               base_state.lock_object(image_id), name,
                               self.host, duration, shared=shared)

    def what(self, image_id: str) -> str:
        return _('the lock on the base image of %(id)s in pool %(pool)s') % {
            'id': image_id, 'pool': self.pool}

    @contextlib.contextmanager
    def lock(self, image_id: str,
             timeout: float | None = None) -> Iterator[bool]:
        """Held (exclusive) while a base is repaired or removed; no clone is
        made meanwhile.

        :param timeout: seconds to wait for it (default ``[rbd]
            base_lock_timeout``); 0: only if nobody holds it.
        :returns: (as the block's value) whether it is held: False only
            with ``timeout=0`` and the lock taken.
        :raises Timeout: after ``timeout`` seconds.
        """
        if timeout is None:
            timeout = self.conn.conf.rbd.base_lock_timeout
        with self.conn.ioctx(name=base_state.lock_object(image_id)) as ioctx:
            lock = self.lock_for(ioctx, image_id)
            try:
                if timeout == 0:
                    held = lock.try_acquire()
                else:
                    lock.acquire(timeout, self.what(image_id))
                    held = True
                yield held
            finally:
                lock.release()

    @contextlib.contextmanager
    def use(self, image_id: str, build: Callable[[], Any],
            deadline: Any = None) -> Iterator[
                tuple[rbd_location.RBDLocation, int, bool]]:
        """The complete base of ``image_id``, made first if no host has it.

        While the block runs the base is locked shared: it is never removed
        meanwhile, and other calls clone it too.

        :param build: makes the base (``final_image`` into a partial image,
            committed); called by one host of the pool at a time.
        :param deadline: has ``remaining()``: how long this call may wait
            (default ``[rbd] base_lock_timeout`` for each wait).
        :returns: (as the block's value) ``(location, size, made)``, made
            being whether this call built it.
        :raises: the typed error of the build this call waited for;
            ForeignBaseImage; Timeout.
        """
        key = base_state.lock_object(image_id)
        with self.conn.ioctx(name=key) as ioctx, \
                contextlib.ExitStack() as stack:
            # Watched only once this call has to wait: a clone of a
            # complete base costs a shared lock and a look, nothing more.
            look = base_builds.WaitForBase(
                self, ioctx, image_id, build, deadline,
                lambda: stack.enter_context(self.watches.watch(key)))
            # Look again at once after a build (or once watching), else
            # when the builder notifies, at least every half lease.
            found: Any = tenacity.Retrying(
                retry=tenacity.retry_if_result(lambda found: found is None),
                wait=lambda retry_state: look.pause,
                sleep=look.wait_for_builder,
                stop=tenacity.stop_never)(look)
            clone_lock, base, size = found
            try:
                yield base, size, look.made
            finally:
                clone_lock.release()

    def build(self, ioctx: Any, image_id: str,
              build: Callable[[], Any]) -> bool:
        """With the build lock held: make the base, tell the waiters.

        :returns: whether this call made it.
        """
        key = base_state.lock_object(image_id)
        build_id = base_builds.record_start(self.conn, ioctx, key, self.host)
        with self.lock(image_id):  # a broken one goes, or is repaired
            base, _size = self.prepare(image_id)
        if base is not None:
            locks.notify(self.conn, ioctx, key)
            return False
        try:
            build()
        except exception.DiskExists:
            LOG.info('Base image of %s was made by another agent', image_id)
        except exception.ImagedException as e:
            base_builds.record_failure(self.conn, ioctx, key, build_id, e)
            raise
        finally:
            locks.notify(self.conn, ioctx, key)
        return True

    # -- a build that outlives its call (imaged.imagecache.lazy) -------------

    @contextlib.contextmanager
    def detached_build(self, image_id: str) -> Iterator[bool]:
        """Yields True if this thread now builds the base for the pool (no
        host does, none is complete, no build refused the image): calls of
        every host wait for it in :meth:`use`, and share its typed error."""
        key = base_state.lock_object(image_id)
        with self.conn.ioctx(name=key) as ioctx:
            builder = self.lock_for(ioctx, image_id,
                                    name=base_builds.BUILD_LOCK_NAME)
            if not builder.try_acquire():
                yield False
                return
            try:
                if base_builds.ever_refused(self.conn, ioctx, key):
                    yield False  # only a checked download may have it
                    return
                build_id = base_builds.record_start(self.conn, ioctx, key,
                                                    self.host)
                with self.lock(image_id):
                    base, _size = self.prepare(image_id)
                if base is not None:
                    yield False
                    return
                try:
                    yield True
                except exception.ImagedException as e:
                    base_builds.record_failure(self.conn, ioctx, key,
                                               build_id, e)
                    raise
                finally:
                    locks.notify(self.conn, ioctx, key)
            finally:
                builder.release()

    def publish(self, part: str, image_id: str) -> None:
        """With :meth:`detached_build` held: the finished ``part`` (its
        snapshot protected) becomes the complete base."""
        name = base_state.base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            with self.conn.rbd.Image(ioctx, part) as image:
                for key, value in sorted(
                        self.final_image(image_id).metadata.items()):
                    image.metadata_set(key, value)
            locks.check_leases(_('renaming %(part)s to %(name)s') % {
                'part': part, 'name': name})
            self.conn.rbd.RBD().rename(ioctx, part, name)

    # -- state --------------------------------------------------------------

    def location(self, image_id: str) -> Found:
        """``(location, size)`` of a complete base's snapshot, or Nones."""
        with self.conn.ioctx(name=base_state.base_name(image_id)) as ioctx:
            return self.complete(ioctx, image_id)

    def complete(self, ioctx: Any, image_id: str) -> Found:
        """``(location, size)`` of a complete base, else Nones.

        :raises ForeignBaseImage: the name is taken by an image not ours.
        """
        name = base_state.base_name(image_id)
        with self.conn.typed_errors(name):
            state = base_state.read_state(self.conn, ioctx, image_id,
                                          count_children=False)
        if state.kind == base_state.FOREIGN:
            raise exception.ForeignBaseImage(name=name, pool=self.pool)
        if state.kind != base_state.COMPLETE:
            return None, None
        return self._location(image_id), state.size

    def _location(self, image_id):
        return rbd_location.RBDLocation(self.conn.fsid(), self.pool,
                                        base_state.base_name(image_id),
                                        base_state.SNAPSHOT)

    def final_image(self, image_id: str) -> partial.FinalImage:
        """What a new base of ``image_id`` becomes once complete."""
        return partial.FinalImage(
            name=base_state.base_name(image_id), min_size=0,
            snapshot=base_state.SNAPSHOT,
            metadata=base_state.new_metadata(image_id, self.host))

    def prepare(self, image_id: str) -> Found:
        """With the lock held: the complete base's ``(location, size)``,
        or Nones once a broken one is out of the way (or repaired).

        :raises ForeignBaseImage: the name is taken by an image not ours.
        """
        name = base_state.base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            state = base_state.read_state(self.conn, ioctx, image_id)
            if state.kind == base_state.FOREIGN:
                raise exception.ForeignBaseImage(name=name, pool=self.pool)
            if state.kind == base_state.BROKEN:
                if state.children:
                    LOG.warning('Repairing base image %s/%s (it has %d '
                                'clones)', self.pool, name, state.children)
                    base_state.repair(self.conn, ioctx, name, image_id)
                    state = base_state.read_state(self.conn, ioctx, image_id)
                else:
                    LOG.warning('Removing incomplete base image %s/%s to '
                                'make it again', self.pool, name)
                    base_state.remove(self.conn, ioctx, name)
                    return None, None
        if state.kind != base_state.COMPLETE:
            return None, None
        return self._location(image_id), state.size

    def record_use(self, image_id: str) -> None:
        """With the base locked: note that this host uses it, at most once
        per interval (half a cleanup's patience never runs out unseen)."""
        interval = min(MAX_USE_RECORD_INTERVAL,
                       self.conn.conf.image_cache.rbd_base_min_age / 4.0)
        now = time.monotonic()
        with self._used_lock:
            last = self._used.get(image_id)
            if last is not None and now - last < interval:
                return
            self._used[image_id] = now
        # On the lock object, with librados alone: a read-write open of the
        # base by many hosts at once (image metadata) hands its exclusive
        # lock around through notifications, and librbd aborted the process
        # when the image closed with one in flight
        # (ImageWatcher: ~AsyncOpTracker: ceph_assert(m_pending_ops == 0)).
        key = base_state.lock_object(image_id)
        try:
            with self.conn.ioctx(name=key) as ioctx:
                ioctx.set_xattr(key, base_state.USED_PREFIX + self.host,
                                base_state.iso(time.time()).encode())
        except BaseException:
            with self._used_lock:
                self._used.pop(image_id, None)
            raise

    # -- listing and removal ----------------------------------------------

    def image_ids(self) -> list[str]:
        """Image ids that have a base image in the pool (ours or not)."""
        with self.conn.ioctx() as ioctx:
            return [name[:-len(base_state.SUFFIX)]
                    for name in self.conn.rbd.RBD().list(ioctx)
                    if name.endswith(base_state.SUFFIX)]

    def remove_if_unused(self, image_id: str, min_age: float | None,
                         now: float | None = None,
                         deleted: bool = False) -> bool:
        """With the lock held: remove our base if no clone and no host used
        it for ``min_age`` seconds (None: whatever its age). With
        ``deleted`` (the image is gone from Glance: no new clone will ever
        want it) whatever its clones: a base with clones goes to the RBD
        trash.

        :returns: whether it was removed (or moved to the trash).
        """
        now = time.time() if now is None else now
        name = base_state.base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            state = base_state.read_state(self.conn, ioctx, image_id)
            if state.kind in (base_state.MISSING, base_state.FOREIGN):
                return False
            if state.children and not deleted:
                return False
            if min_age is not None and now - state.last_used() < min_age:
                return False
            if state.children:
                base_state.trash(self.conn, ioctx, name)
            else:
                base_state.remove(self.conn, ioctx, name)
            # Last, still under the lock: a waiter makes it anew.
            try:
                ioctx.remove_object(base_state.lock_object(image_id))
            except self.conn.rados.ObjectNotFound:
                pass
        LOG.info('Removed base image %s/%s', self.pool, name)
        return True

    def unused(self, min_age: float, now: float | None = None) -> list[str]:
        """Image ids of our bases without clones, unused for ``min_age``.

        Read without the lock: :meth:`remove_if_unused` checks again.
        """
        now = time.time() if now is None else now
        found = []
        with self.conn.ioctx() as ioctx:
            for image_id in self.image_ids():
                state = base_state.read_state(self.conn, ioctx, image_id)
                if state.kind in (base_state.COMPLETE, base_state.BROKEN) \
                        and not state.children \
                        and now - state.last_used() >= min_age:
                    found.append(image_id)
        return found

    def purge_trash(self) -> list[str]:
        """Remove the trash entries of our bases whose last clone is
        gone. :returns: their names."""
        return self.trash.purge(self.pool,
                                lambda n: n.endswith(base_state.SUFFIX))
