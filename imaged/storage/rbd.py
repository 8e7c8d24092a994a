"""The Ceph RBD backend: one connection and the stores built on it.

``RBDDriver`` is what the rest of imaged holds: ``partials`` writes new
images (:mod:`imaged.storage.partial`), ``bases`` owns the shared base
images (:mod:`imaged.storage.bases`), ``disks`` the root disks
(:mod:`imaged.storage.disks`); all of them share one leased connection
(:mod:`imaged.storage.connection`). Only the ``storage`` package imports
librados and librbd; both are injectable so unit tests can pass fakes.
"""

from imaged import exception
from imaged.storage import bases
from imaged.storage import connection
from imaged.storage import disks
from imaged.storage import location as rbd_location
from imaged.storage import partial


class RBDDriver:
    """Root disks and base images in ``[rbd] pool``, made by ``host``."""

    def __init__(self, conf, host, rados_module=None, rbd_module=None):
        if rados_module is None or rbd_module is None:
            import rados
            import rbd
            rados_module = rados_module or rados
            rbd_module = rbd_module or rbd
        self.conf = conf
        self.host = host
        self.conn = connection.CephConnection(conf, rados_module, rbd_module)
        self.partials = partial.PartialWriter(self.conn, host)
        self.bases = bases.BaseImageStore(self.conn, self.partials, host)
        self.disks = disks.RootDiskStore(self.conn, self.partials)

    @property
    def pool(self):
        return self.conf.rbd.pool

    def fsid(self):
        return self.conn.fsid()

    def status(self):
        """``(fsid or None, problems)``: can root disks be made now?"""
        return self.conn.status()

    def remove_partial_disks(self):
        """Sweep the partial images this host left; see ``partial``."""
        return self.partials.sweep()

    def probe_location(self, url):
        """Whether we can clone ``url``.

        :returns: ``(RBDLocation, snapshot size, None)`` when we can, else
            ``(None, None, the reason why not)``.
        """
        try:
            loc = rbd_location.parse_rbd_location(url)
        except rbd_location.NotAnRBDLocation as e:
            return None, None, str(e)
        fsid = self.fsid()
        if loc.fsid != fsid:
            return None, None, 'is in cluster %s, not ours (%s)' % (
                loc.fsid, fsid)
        try:
            return loc, self._snapshot_size(loc), None
        except exception.ImagedException as e:
            return None, None, 'cannot be opened read-only: %s' % e

    def _snapshot_size(self, loc):
        rbd = self.conn.rbd
        with self.conn.ioctx(loc.pool, loc.image) as ioctx:
            with rbd.Image(ioctx, loc.image, snapshot=loc.snapshot,
                           read_only=True) as image:
                return image.size()
