"""Base images in Ceph: one per image id, shared by every host of the pool.

A base image ``<image_id>_base`` holds an image's raw bytes; root disks are
copy-on-write clones of its protected snapshot ``snap``. This module is the
only one that knows those names and owns the whole life of a base:

* made as a partial image whose metadata says what it is (image id, maker,
  time, ``imaged.complete = true``) and renamed when complete;
* complete only with its snapshot present and protected and that flag set;
  only a complete base is cloned;
* every clone records the host's last use (``imaged.used.<host>``);
* checked, repaired, cloned and removed only under a Ceph-side lock (a
  rados exclusive lock with a lease, on ``imaged.lock.<image_id>``), so a
  host never removes a base another host is about to clone;
* removed only when ours, without clones, and unused by every host for the
  minimum age; removal clears the flag first, so a kill half-way leaves a
  base that any host knows to remove and rebuild. Images without imaged's
  metadata are never touched.
"""

import contextlib
import datetime
import time
import uuid

from oslo_log import log as logging

from imaged import exception
from imaged.i18n import _
from imaged.storage import location as rbd_location
from imaged.storage import partial

LOG = logging.getLogger(__name__)

SNAPSHOT = 'snap'
_SUFFIX = '_base'
LOCK_NAME = 'imaged-base'

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

    def __init__(self, conn, writer, host):
        self.conn = conn
        self.writer = writer
        self.host = host

    @property
    def pool(self):
        return self.conn.pool

    # -- the lock -----------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, image_id):
        """Held while a base is checked, repaired, cloned or removed.

        :raises Timeout: after ``[rbd] base_lock_timeout`` seconds.
        """
        rados, opts = self.conn.rados, self.conn.conf.rbd
        key, cookie = lock_object(image_id), uuid.uuid4().hex
        deadline = time.monotonic() + opts.base_lock_timeout
        delay = 0.05
        with self.conn.ioctx(name=key) as ioctx:
            while True:
                try:
                    ioctx.lock_exclusive(key, LOCK_NAME, cookie,
                                         desc=self.host,
                                         duration=opts.base_lock_duration)
                    break
                except (rados.ObjectBusy, rados.ObjectExists):
                    if time.monotonic() + delay > deadline:
                        raise exception.Timeout(
                            what=_('the lock on the base image of %(id)s in '
                                   'pool %(pool)s') %
                            {'id': image_id, 'pool': self.pool},
                            seconds=opts.base_lock_timeout)
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
            try:
                yield
            finally:
                try:
                    ioctx.unlock(key, LOCK_NAME, cookie)
                except rados.ObjectNotFound:  # removed with its base
                    pass
                except rados.Error as e:  # the lease runs out by itself
                    LOG.warning('Could not release the lock on %s: %s', key,
                                e)

    # -- state --------------------------------------------------------------

    def _state(self, ioctx, image_id):
        rbd = self.conn.rbd
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
                    children = len(list(image.list_children()))
                    size = image.size()
        except rbd.ImageNotFound:
            return _State(MISSING)
        if not metadata:
            return _State(FOREIGN, size)
        complete = metadata.get(COMPLETE_KEY)
        if protected and (complete == 'true' or complete is None and
                          IMAGE_ID_KEY not in metadata):
            # (No flag and no image id: made before imaged kept them.)
            return _State(COMPLETE, size, metadata, children)
        return _State(BROKEN, size, metadata, children)

    def location(self, image_id):
        """``(location, size)`` of a complete base's snapshot, or Nones."""
        with self.conn.ioctx(name=base_name(image_id)) as ioctx:
            state = self._state(ioctx, image_id)
        if state.kind != COMPLETE:
            return None, None
        return self._location(image_id), state.size

    def _location(self, image_id):
        return rbd_location.RBDLocation(self.conn.fsid(), self.pool,
                                        base_name(image_id), SNAPSHOT)

    def partial_spec(self, image_id):
        """What a new base of ``image_id`` becomes once complete."""
        return partial.PartialSpec(
            name=base_name(image_id), min_size=0, snapshot=SNAPSHOT,
            metadata={IMAGE_ID_KEY: image_id, MADE_BY_KEY: self.host,
                      MADE_AT_KEY: _iso(time.time()), COMPLETE_KEY: 'true'})

    def prepare(self, image_id):
        """With the lock held: the complete base's ``(location, size)``,
        or Nones once a broken one is out of the way (or repaired).

        :raises StorageError: the name is taken by an image not ours.
        """
        name = base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            state = self._state(ioctx, image_id)
            if state.kind == FOREIGN:
                raise exception.StorageError(
                    name=name, pool=self.pool,
                    reason=_('an image not made by imaged has the name of '
                             'the base image; imaged never touches it'))
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

    def record_use(self, image_id):
        """With the lock held: note that this host uses the base now."""
        name = base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            with self.conn.rbd.Image(ioctx, name) as image:
                image.metadata_set(USED_PREFIX + self.host, _iso(time.time()))

    # -- listing and removal ----------------------------------------------

    def image_ids(self):
        """Image ids that have a base image in the pool (ours or not)."""
        with self.conn.ioctx() as ioctx:
            return [name[:-len(_SUFFIX)]
                    for name in self.conn.rbd.RBD().list(ioctx)
                    if name.endswith(_SUFFIX)]

    def list(self):
        """``{'image_id', 'size_bytes', 'last_used', 'where'}`` of our
        complete bases (last use by any host)."""
        entries = []
        with self.conn.ioctx() as ioctx:
            for image_id in self.image_ids():
                state = self._state(ioctx, image_id)
                if state.kind == COMPLETE:
                    entries.append({'image_id': image_id,
                                    'size_bytes': state.size,
                                    'last_used': _iso(state.last_used()),
                                    'where': 'rbd'})
        return entries

    def remove_if_unused(self, image_id, min_age, now=None):
        """With the lock held: remove our base if no clone and no host used
        it for ``min_age`` seconds (None: whatever its age).

        :returns: whether it was removed.
        """
        now = time.time() if now is None else now
        name = base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            state = self._state(ioctx, image_id)
            if state.kind in (MISSING, FOREIGN) or state.children:
                return False
            if min_age is not None and now - state.last_used() < min_age:
                return False
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
