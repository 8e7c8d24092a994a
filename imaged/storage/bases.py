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
copy-on-write clones of its protected snapshot ``snap``. This module is the
only one that knows those names and owns the whole life of a base:

* made as a partial image whose metadata says what it is (image id, maker,
  time, ``imaged.complete = true``) and renamed when complete;
* complete only with its snapshot present and protected and that flag set;
  only a complete base is cloned;
* a host records its last use of a base (``imaged.used.<host>``) at most
  once per ``rbd_base_min_age / 4`` (at most an hour), not at every clone;
* removed by the cleanup only when ours, without clones, and unused by
  every host for the minimum age; purged (its image deleted in Glance)
  whatever its clones: a base that still has clones (format 2) goes to the
  RBD trash, and its trash entry is removed once the last clone is gone
  (:mod:`imaged.storage.trash`). Removal clears the flag first, so a kill
  half-way leaves a base that any host knows to remove and rebuild. Images
  without imaged's metadata are never touched.

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
import datetime
import json
import threading
import time
import uuid

from oslo_log import log as logging

from imaged import exception
from imaged.i18n import _
from imaged.storage import location as rbd_location
from imaged.storage import locks
from imaged.storage import partial
from imaged.storage import trash as rbd_trash
from imaged.storage import watches as rados_watches

LOG = logging.getLogger(__name__)

SNAPSHOT = 'snap'
_SUFFIX = '_base'
LOCK_NAME = 'imaged-base'
BUILD_LOCK_NAME = 'imaged-build'
BUILD_XATTR = 'imaged.build'
BUILD_ERROR_XATTR = 'imaged.build_error'
# Last use is written at most this often per host and base.
MAX_USE_RECORD_INTERVAL = 3600
# Builds one call makes before it gives up (a cleanup may win a race with
# a new base, not three).
MAX_BUILDS = 3
# A build refused for the image itself answers the calls of the next
# seconds too (a boot storm's stragglers), instead of each downloading it.
REFUSALS = ('ImageUnacceptable',)
REFUSAL_TTL = 60

# RBD image metadata of a base image.
IMAGE_ID_KEY = 'imaged.image_id'
MADE_BY_KEY = 'imaged.made_by'
MADE_AT_KEY = 'imaged.made_at'
COMPLETE_KEY = 'imaged.complete'
USED_PREFIX = 'imaged.used.'

MISSING, COMPLETE, BROKEN, FOREIGN = 'missing', 'complete', 'broken', \
    'foreign'


def base_name(image_id):
    return image_id + _SUFFIX


def lock_object(image_id):
    return 'imaged.lock.' + image_id


def _iso(ts):
    return datetime.datetime.fromtimestamp(
        ts, datetime.timezone.utc).isoformat()


def _timestamp(text):
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return 0.0


class _State:
    """What a base looks like in the pool."""

    def __init__(self, kind, size=None, metadata=None, children=0):
        self.kind, self.size, self.children = kind, size, children
        self.metadata = metadata or {}

    def last_used(self):
        times = [_timestamp(v) for k, v in self.metadata.items()
                 if k.startswith(USED_PREFIX) or k == MADE_AT_KEY]
        return max(times, default=0.0)


class BaseImageStore:
    """The base images of ``[rbd] pool``."""

    def __init__(self, conn, writer, host, trash=None):
        self.conn = conn
        self.writer = writer
        self.host = host
        self.trash = trash or rbd_trash.Trash(conn)
        # One watch per lock object in this process, whatever its waiters.
        self.watches = rados_watches.ObjectWatches(conn)
        self._used = {}  # image id -> when this host last recorded its use
        self._used_lock = threading.Lock()

    @property
    def pool(self):
        return self.conn.pool

    # -- the locks ------------------------------------------------------------

    def _lock(self, ioctx, image_id, name=LOCK_NAME, shared=False):
        duration = self.conn.conf.rbd.base_lock_duration
        return locks.RadosLock(self.conn, ioctx, lock_object(image_id), name,
                               self.host, duration, shared=shared)

    def _what(self, image_id):
        return _('the lock on the base image of %(id)s in pool %(pool)s') % {
            'id': image_id, 'pool': self.pool}

    @contextlib.contextmanager
    def lock(self, image_id, timeout=None):
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
        with self.conn.ioctx(name=lock_object(image_id)) as ioctx:
            lock = self._lock(ioctx, image_id)
            try:
                if timeout == 0:
                    held = lock.try_acquire()
                else:
                    lock.acquire(timeout, self._what(image_id))
                    held = True
                yield held
            finally:
                lock.release()

    @contextlib.contextmanager
    def use(self, image_id, build, deadline=None):
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
        opts = self.conn.conf.rbd
        key = lock_object(image_id)
        made = False

        def remaining():
            if deadline is None:
                return opts.base_lock_timeout
            left = deadline.remaining()
            if left <= 0:
                raise exception.Timeout(what=self._what(image_id),
                                        seconds=0)
            return left

        with self.conn.ioctx(name=key) as ioctx, \
                contextlib.ExitStack() as stack:
            # Watched only once this call has to wait: a clone of a
            # complete base costs a shared lock and a look, nothing more.
            watch, before, first_miss = None, None, True

            def watching():
                return stack.enter_context(self.watches.watch(key))
            builds = 0
            while True:
                remaining()  # past the call's deadline: Timeout
                clone_lock = self._lock(ioctx, image_id, shared=True)
                if not clone_lock.try_acquire():  # a removal or repair
                    watch = watch or watching()
                    clone_lock.acquire(
                        min(opts.base_lock_timeout, remaining()),
                        self._what(image_id), wake=watch)
                try:
                    base, size = self._complete(ioctx, image_id)
                    if base is not None:
                        self._record_use(image_id)
                        yield base, size, made
                        return
                finally:
                    clone_lock.release()
                if watch is None:
                    watch = watching()
                    continue  # a build may have ended before we watched
                if first_miss:
                    # The failure of any build but one that had failed
                    # before this call came is this call's too: it came
                    # while that build ran. So is a recent failure that
                    # was the image's own fault.
                    first_miss = False
                    before = self._failed_build(ioctx, key)
                    if before is not None and \
                            self._recent_refusal(ioctx, key):
                        self._raise_failure_of(ioctx, key, before)
                else:
                    failed = self._failed_build(ioctx, key)
                    if failed is not None and failed != before:
                        self._raise_failure_of(ioctx, key, failed)
                if builds == MAX_BUILDS:
                    raise exception.StorageError(
                        name=base_name(image_id), pool=self.pool,
                        reason=_('its base image was gone each time it was '
                                 'made'))
                builder = self._lock(ioctx, image_id, name=BUILD_LOCK_NAME)
                if builder.try_acquire():
                    builds += 1
                    try:
                        made = self._build(ioctx, image_id, build) or made
                    finally:
                        builder.release()
                    continue
                LOG.debug('Waiting for the base image of %s, built by %s',
                          image_id, self._read_json(ioctx, key, BUILD_XATTR)
                          .get('host', 'another call'))
                watch.wait(min(remaining(), opts.base_lock_duration / 2.0))

    def _build(self, ioctx, image_id, build):
        """With the build lock held: make the base, tell the waiters.

        :returns: whether this call made it.
        """
        key = lock_object(image_id)
        build_id = uuid.uuid4().hex
        with self.conn.typed_errors(key):
            ioctx.set_xattr(key, BUILD_XATTR, json.dumps(
                {'id': build_id, 'host': self.host,
                 'at': _iso(time.time())}).encode())
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
            self._record_failure(ioctx, key, build_id, e)
            raise
        finally:
            locks.notify(self.conn, ioctx, key)
        return True

    # -- a build that outlives its call (imaged.imagecache.lazy) -------------

    @contextlib.contextmanager
    def detached_build(self, image_id):
        """This thread builds the base of ``image_id`` for the pool, if no
        host does, no complete base exists and no build refused the image:
        yields True, else False.

        Calls of every host wait for it in :meth:`use` as for any build; a
        typed error out of the block is theirs too. Held by the thread that
        entered it (the locks are per thread).
        """
        key = lock_object(image_id)
        with self.conn.ioctx(name=key) as ioctx:
            builder = self._lock(ioctx, image_id, name=BUILD_LOCK_NAME)
            if not builder.try_acquire():
                yield False
                return
            build_id = uuid.uuid4().hex
            try:
                if self._ever_refused(ioctx, key):
                    yield False  # only a checked download may have it
                    return
                with self.conn.typed_errors(key):
                    ioctx.set_xattr(key, BUILD_XATTR, json.dumps(
                        {'id': build_id, 'host': self.host,
                         'at': _iso(time.time())}).encode())
                with self.lock(image_id):
                    base, _size = self.prepare(image_id)
                if base is not None:
                    yield False
                    return
                try:
                    yield True
                except exception.ImagedException as e:
                    self._record_failure(ioctx, key, build_id, e)
                    raise
                finally:
                    locks.notify(self.conn, ioctx, key)
            finally:
                builder.release()

    def _ever_refused(self, ioctx, key):
        """Whether the last build failed for the image itself (its bytes,
        its format), however long ago."""
        if self._failed_build(ioctx, key) is None:
            return False
        cls = getattr(exception, str(self._read_json(
            ioctx, key, BUILD_ERROR_XATTR).get('class')), None)
        return isinstance(cls, type) and \
            issubclass(cls, exception.ImageUnacceptable)

    def publish(self, part, image_id):
        """With :meth:`detached_build` held: the finished partial image
        ``part`` (its snapshot protected) becomes the complete base."""
        name = base_name(image_id)
        rbd = self.conn.rbd
        with self.conn.ioctx(name=name) as ioctx:
            with rbd.Image(ioctx, part) as image:
                for key, value in sorted(
                        self.final_image(image_id).metadata.items()):
                    image.metadata_set(key, value)
            locks.check_leases(_('renaming %(part)s to %(name)s') % {
                'part': part, 'name': name})
            rbd.RBD().rename(ioctx, part, name)

    def _recent_refusal(self, ioctx, key):
        """Whether the last build failed, less than ``REFUSAL_TTL`` seconds
        ago, for the image itself (not Glance, Ceph or this host): a caller
        that comes just after gets the same answer, not another download.
        """
        record = self._read_json(ioctx, key, BUILD_ERROR_XATTR)
        at = record.get('at')
        return record.get('class') in REFUSALS and \
            isinstance(at, (int, float)) and \
            0 <= time.time() - at < REFUSAL_TTL

    def _record_failure(self, ioctx, key, build_id, error):
        if self.conn.seems_unreachable():
            return  # the waiters take over when the lease runs out
        record = {'build': build_id, 'class': type(error).__name__,
                  'message': str(error), 'kwargs': error.kwargs,
                  'at': time.time()}
        try:
            ioctx.set_xattr(key, BUILD_ERROR_XATTR,
                            json.dumps(record, default=str).encode())
        except self.conn.rados.Error as e:
            LOG.warning('Could not record the failed build of %s: %s; its '
                        'waiters build again', key, e)

    def _failed_build(self, ioctx, key):
        """The id of the last build, if it failed; else None."""
        build_id = self._read_json(ioctx, key, BUILD_XATTR).get('id')
        record = self._read_json(ioctx, key, BUILD_ERROR_XATTR)
        if build_id is not None and record.get('build') == build_id:
            return build_id
        return None

    def _raise_failure_of(self, ioctx, key, build_id):
        """Raise the typed error that build ``build_id`` failed with."""
        record = self._read_json(ioctx, key, BUILD_ERROR_XATTR)
        if record.get('build') != build_id:
            return
        cls = getattr(exception, str(record.get('class')), None)
        if not (isinstance(cls, type) and
                issubclass(cls, exception.ImagedException)):
            cls = exception.ImageDownloadFailed
        kwargs = record.get('kwargs')
        raise cls(record.get('message'),
                  **(kwargs if isinstance(kwargs, dict) else {}))

    def _read_json(self, ioctx, key, xattr):
        rados = self.conn.rados
        try:
            with self.conn.typed_errors(key):
                try:
                    value = ioctx.get_xattr(key, xattr)
                except (rados.NoData, rados.ObjectNotFound):
                    return {}
            found = json.loads(value)
        except (ValueError, TypeError):
            return {}
        return found if isinstance(found, dict) else {}

    # -- state --------------------------------------------------------------

    def _state(self, ioctx, image_id, children=True):
        """What the base looks like; its clones counted if ``children``."""
        rbd = self.conn.rbd
        count_children = children
        try:
            with rbd.Image(ioctx, base_name(image_id),
                           read_only=True) as image:
                metadata = {k: v for k, v in image.metadata_list()
                            if k.startswith('imaged.')}
                snaps = {s['name'] for s in image.list_snaps()}
                protected = SNAPSHOT in snaps and \
                    image.is_protected_snap(SNAPSHOT)
                children = 0
                size = image.size()
                if SNAPSHOT in snaps:
                    image.set_snap(SNAPSHOT)
                    if count_children:
                        children = len(list(image.list_children()))
                    size = image.size()
        except rbd.ImageNotFound:
            return _State(MISSING)
        if not metadata:
            return _State(FOREIGN, size)
        # Uses are recorded on the lock object (older agents: in the
        # image's metadata; both count).
        metadata.update(self._uses(ioctx, image_id))
        complete = metadata.get(COMPLETE_KEY)
        if protected and (complete == 'true' or complete is None and
                          IMAGE_ID_KEY not in metadata):
            # (No flag and no image id: made before imaged kept them.)
            return _State(COMPLETE, size, metadata, children)
        return _State(BROKEN, size, metadata, children)

    def _uses(self, ioctx, image_id):
        """``{USED_PREFIX + host: when}`` recorded on the lock object."""
        try:
            return {name: value.decode('ascii', 'replace')
                    for name, value in ioctx.get_xattrs(lock_object(image_id))
                    if name.startswith(USED_PREFIX)}
        except self.conn.rados.ObjectNotFound:
            return {}

    def location(self, image_id):
        """``(location, size)`` of a complete base's snapshot, or Nones."""
        with self.conn.ioctx(name=base_name(image_id)) as ioctx:
            return self._complete(ioctx, image_id)

    def _complete(self, ioctx, image_id):
        """``(location, size)`` of a complete base, else Nones.

        :raises ForeignBaseImage: the name is taken by an image not ours.
        """
        name = base_name(image_id)
        with self.conn.typed_errors(name):
            state = self._state(ioctx, image_id, children=False)
        if state.kind == FOREIGN:
            raise exception.ForeignBaseImage(name=name, pool=self.pool)
        if state.kind != COMPLETE:
            return None, None
        return self._location(image_id), state.size

    def _location(self, image_id):
        return rbd_location.RBDLocation(self.conn.fsid(), self.pool,
                                        base_name(image_id), SNAPSHOT)

    def final_image(self, image_id):
        """What a new base of ``image_id`` becomes once complete."""
        return partial.FinalImage(
            name=base_name(image_id), min_size=0, snapshot=SNAPSHOT,
            metadata={IMAGE_ID_KEY: image_id, MADE_BY_KEY: self.host,
                      MADE_AT_KEY: _iso(time.time()), COMPLETE_KEY: 'true'})

    def prepare(self, image_id):
        """With the lock held: the complete base's ``(location, size)``,
        or Nones once a broken one is out of the way (or repaired).

        :raises ForeignBaseImage: the name is taken by an image not ours.
        """
        name = base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            state = self._state(ioctx, image_id)
            if state.kind == FOREIGN:
                raise exception.ForeignBaseImage(name=name, pool=self.pool)
            if state.kind == BROKEN:
                if state.children:
                    LOG.warning('Repairing base image %s/%s (it has %d '
                                'clones)', self.pool, name, state.children)
                    self._repair(ioctx, name, image_id)
                    state = self._state(ioctx, image_id)
                else:
                    LOG.warning('Removing incomplete base image %s/%s to '
                                'make it again', self.pool, name)
                    self._remove(ioctx, name)
                    return None, None
        if state.kind != COMPLETE:
            return None, None
        return self._location(image_id), state.size

    def _repair(self, ioctx, name, image_id):
        with self.conn.rbd.Image(ioctx, name) as image:
            if not image.is_protected_snap(SNAPSHOT):
                image.protect_snap(SNAPSHOT)
            image.metadata_set(IMAGE_ID_KEY, image_id)
            image.metadata_set(COMPLETE_KEY, 'true')

    def _record_use(self, image_id):
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
        key = lock_object(image_id)
        try:
            with self.conn.ioctx(name=key) as ioctx:
                ioctx.set_xattr(key, USED_PREFIX + self.host,
                                _iso(time.time()).encode())
        except BaseException:
            with self._used_lock:
                self._used.pop(image_id, None)
            raise

    # -- listing and removal ----------------------------------------------

    def image_ids(self):
        """Image ids that have a base image in the pool (ours or not)."""
        with self.conn.ioctx() as ioctx:
            return [name[:-len(_SUFFIX)]
                    for name in self.conn.rbd.RBD().list(ioctx)
                    if name.endswith(_SUFFIX)]

    def remove_if_unused(self, image_id, min_age, now=None, deleted=False):
        """With the lock held: remove our base if no clone and no host used
        it for ``min_age`` seconds (None: whatever its age). With
        ``deleted`` (the image is gone from Glance: no new clone will ever
        want it) whatever its clones: a base with clones goes to the RBD
        trash.

        :returns: whether it was removed (or moved to the trash).
        """
        now = time.time() if now is None else now
        name = base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            state = self._state(ioctx, image_id)
            if state.kind in (MISSING, FOREIGN):
                return False
            if state.children and not deleted:
                return False
            if min_age is not None and now - state.last_used() < min_age:
                return False
            if state.children:
                self._trash(ioctx, name)
            else:
                self._remove(ioctx, name)
            # Last, still under the lock: a waiter makes it anew.
            try:
                ioctx.remove_object(lock_object(image_id))
            except self.conn.rados.ObjectNotFound:
                pass
        LOG.info('Removed base image %s/%s', self.pool, name)
        return True

    def unused(self, min_age, now=None):
        """Image ids of our bases without clones, unused for ``min_age``.

        Read without the lock: :meth:`remove_if_unused` checks again.
        """
        now = time.time() if now is None else now
        found = []
        with self.conn.ioctx() as ioctx:
            for image_id in self.image_ids():
                state = self._state(ioctx, image_id)
                if state.kind in (COMPLETE, BROKEN) and not state.children \
                        and now - state.last_used() >= min_age:
                    found.append(image_id)
        return found

    def _trash(self, ioctx, name):
        """Clear the complete flag, then move the base, whose snapshot
        still has clones, to the trash."""
        rbd = self.conn.rbd
        with rbd.Image(ioctx, name) as image:
            image.metadata_set(COMPLETE_KEY, 'false')
        try:
            if rbd_trash.move_to_trash(rbd, ioctx, name, SNAPSHOT):
                LOG.info('Moved base image %s/%s, which still has clones, '
                         'to the RBD trash', self.pool, name)
        except rbd.ImageBusy:  # clones of format 1: it must stay
            with rbd.Image(ioctx, name) as image:
                if SNAPSHOT in {s['name'] for s in image.list_snaps()} and \
                        not image.is_protected_snap(SNAPSHOT):
                    image.protect_snap(SNAPSHOT)
                image.metadata_set(COMPLETE_KEY, 'true')
            raise

    def purge_trash(self):
        """Remove the trash entries of our bases whose last clone is
        gone. :returns: their names."""
        return self.trash.purge(self.pool, lambda n: n.endswith(_SUFFIX))

    def _remove(self, ioctx, name):
        """Clear the complete flag, then remove snapshot and image."""
        rbd = self.conn.rbd
        try:
            with rbd.Image(ioctx, name) as image:
                image.metadata_set(COMPLETE_KEY, 'false')
            partial.remove_image(rbd, ioctx, name)
        except rbd.ImageNotFound:
            return
        except rbd.ImageBusy:  # a clone after all: it stays complete
            with rbd.Image(ioctx, name) as image:
                image.metadata_set(COMPLETE_KEY, 'true')
            raise
