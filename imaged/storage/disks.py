"""Root disks ``<instance_uuid>_disk`` in ``[rbd] pool``.

A disk's name is global to the pool, and any host may be asked to create or
delete it: creates and deletes of one disk hold a cluster-wide lock (a rados
exclusive lock with a lease on ``imaged.lock.<name>``), so two creates on
two hosts make one disk (the second finds it ``existing``) and a delete
never runs beside a create that would make the disk again after it.
"""

import contextlib

from oslo_log import log as logging
import tenacity

from imaged import exception
from imaged.i18n import _
from imaged.storage import location as rbd_location
from imaged.storage import locks
from imaged.storage import partial
from imaged.storage import trash as rbd_trash

LOG = logging.getLogger(__name__)

# RBD image metadata of a root disk: the Glance image it was made from.
IMAGE_ID_KEY = 'imaged.image_id'
LOCK_NAME = 'imaged-disk'


def disk_name(instance_uuid):
    return '%s_disk' % instance_uuid


class RootDiskStore:
    """Inspects and removes root disks; new ones come from the writer."""

    def __init__(self, conn, writer, trash=None):
        self.conn = conn
        self.writer = writer
        self.trash = trash or rbd_trash.Trash(conn)

    @property
    def pool(self):
        return self.conn.pool

    @staticmethod
    def lock_object(name):
        return 'imaged.lock.' + name

    @contextlib.contextmanager
    def lock(self, name, timeout):
        """Held, pool-wide, while disk ``name`` is created or deleted.

        :raises RootDiskBusy: another call, on any host, held it for
            ``timeout`` seconds.
        """
        key = self.lock_object(name)
        with self.conn.ioctx(name=key) as ioctx:
            lock = locks.RadosLock(
                self.conn, ioctx, key, LOCK_NAME, self.writer.host,
                self.conn.conf.rbd.base_lock_duration)
            try:
                lock.acquire(timeout, key)
            except exception.Timeout:
                raise exception.RootDiskBusy(
                    name=name, pool=self.pool,
                    reason=_('another call for it, on this host or '
                             'another, is still running'))
            try:
                yield
            finally:
                lock.release()

    def forget_lock(self, name):
        """With the lock held, once the disk is gone: remove its object."""
        with self.conn.ioctx(name=name) as ioctx:
            try:
                ioctx.remove_object(self.lock_object(name))
            except self.conn.rados.ObjectNotFound:
                pass

    def final_image(self, name, size_bytes, image_id):
        """What a new disk ``name`` from ``image_id`` becomes."""
        return partial.FinalImage(name=name, min_size=size_bytes,
                                  snapshot=None,
                                  metadata={IMAGE_ID_KEY: image_id})

    def info(self, name):
        """``{'size_bytes', 'parent', 'image_id'}`` of a disk, or None.

        ``image_id`` is None for a disk made before imaged recorded it.
        """
        rbd = self.conn.rbd
        with self.conn.ioctx(name=name) as ioctx:
            try:
                with rbd.Image(ioctx, name, read_only=True) as image:
                    size = image.size()
                    try:
                        pool, parent, snap = image.parent_info()
                        parent_url = rbd_location.format_rbd_location(
                            self.conn.fsid(), pool, parent, snap)
                    except rbd.ImageNotFound:
                        parent_url = None
                    try:
                        image_id = image.metadata_get(IMAGE_ID_KEY)
                    except (KeyError, rbd.ImageNotFound):
                        image_id = None
            except rbd.ImageNotFound:
                return None
        return {'size_bytes': size, 'parent': parent_url,
                'image_id': image_id}

    def remove(self, name):
        """Remove a disk, retrying while it is open; then its parent's
        trash entry if the disk was its last clone (an image deleted in
        Glance, a purged base).

        :returns: whether a finished disk was there.
        """
        parent = self.parent(name)
        removed = self._remove(name)
        if removed and parent is not None:
            self.trash.remove_if_unused(*parent)
        return removed

    def parent(self, name):
        """``(pool, image id)`` of the disk's parent, or None."""
        rbd = self.conn.rbd
        with self.conn.ioctx(name=name) as ioctx:
            try:
                with rbd.Image(ioctx, name, read_only=True) as image:
                    return rbd_trash.parent_of(rbd, image)
            except rbd.ImageNotFound:
                return None

    def _remove(self, name):
        rbd = self.conn.rbd

        def busy(retry_state):
            raise exception.RootDiskBusy(
                name=name, pool=self.pool,
                reason=str(retry_state.outcome.exception()))

        def again(retry_state):
            LOG.debug('Disk %s/%s busy (%s); retrying', self.pool, name,
                      retry_state.outcome.exception())
        with self.conn.ioctx(name=name) as ioctx:
            for attempt in tenacity.Retrying(
                    retry=tenacity.retry_if_exception_type(
                        (rbd.ImageBusy, rbd.ImageHasSnapshots)),
                    stop=tenacity.stop_before_delay(
                        self.conn.conf.rbd.delete_busy_timeout),
                    wait=tenacity.wait_exponential(multiplier=0.5, max=5),
                    before_sleep=again, retry_error_callback=busy):
                with attempt:
                    try:
                        rbd.RBD().remove(ioctx, name)
                        return True
                    except rbd.ImageNotFound:
                        return False
