"""Base images in Ceph: one per image id, shared by every host of the pool.

A base image ``<image_id>_base`` holds an image's raw bytes; root disks are
copy-on-write clones of its protected snapshot ``snap``. This module is the
only one that knows those names and owns the whole life of a base: how it is
made (a partial image, renamed when complete), how it is known complete, who
used it last, and when it may go.
"""

import datetime

from oslo_concurrency import lockutils
from oslo_log import log as logging

from imaged.storage import location as rbd_location
from imaged.storage import partial

LOG = logging.getLogger(__name__)

SNAPSHOT = 'snap'
_SUFFIX = '_base'

# RBD image metadata of a base image.
IMAGE_ID_KEY = 'imaged.image_id'
MADE_BY_KEY = 'imaged.made_by'
MADE_AT_KEY = 'imaged.made_at'
COMPLETE_KEY = 'imaged.complete'


def base_name(image_id):
    return image_id + _SUFFIX


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class BaseImageStore:
    """The base images of ``[rbd] pool``."""

    def __init__(self, conn, writer, host):
        self.conn = conn
        self.writer = writer
        self.host = host

    @property
    def pool(self):
        return self.conn.pool

    def lock(self, image_id):
        """Held while a base is checked, made, cloned or removed."""
        return lockutils.lock(
            'rbd-base-%s' % image_id, lock_file_prefix='imaged-',
            external=True,
            lock_path=self.conn.conf.oslo_concurrency.lock_path)

    def partial_spec(self, image_id):
        """What a new base of ``image_id`` becomes once complete."""
        return partial.PartialSpec(
            name=base_name(image_id), min_size=0, snapshot=SNAPSHOT,
            metadata={IMAGE_ID_KEY: image_id, MADE_BY_KEY: self.host,
                      MADE_AT_KEY: _now(), COMPLETE_KEY: 'true'})

    def location(self, image_id):
        """``(location, size)`` of a complete base's snapshot, or Nones."""
        name = base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            try:
                with self.conn.rbd.Image(ioctx, name, snapshot=SNAPSHOT,
                                         read_only=True) as snap:
                    size = snap.size()
            except self.conn.rbd.ImageNotFound:
                return None, None
        return rbd_location.RBDLocation(self.conn.fsid(), self.pool, name,
                                        SNAPSHOT), size

    def image_ids(self):
        """Image ids that have a base image in the pool."""
        with self.conn.ioctx() as ioctx:
            return [name[:-len(_SUFFIX)]
                    for name in self.conn.rbd.RBD().list(ioctx)
                    if name.endswith(_SUFFIX)]

    def remove_unless_cloned(self, image_id):
        """Remove the base image of ``image_id`` if no disk is cloned from it.

        :returns: whether it was removed.
        """
        rbd = self.conn.rbd
        name = base_name(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            try:
                with rbd.Image(ioctx, name, snapshot=SNAPSHOT,
                               read_only=True) as snap:
                    if list(snap.list_children()):
                        return False
                partial.remove_image(rbd, ioctx, name)
            except rbd.ImageNotFound:
                return False
            except rbd.ImageBusy:  # a clone appeared meanwhile
                return False
        return True
