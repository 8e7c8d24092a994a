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

"""The Ceph RBD backend: one connection and the stores built on it.

``RBDDriver`` is what the rest of imaged holds: ``partials`` writes new
images (:mod:`imaged.storage.partial`), ``bases`` owns the shared base
images (:mod:`imaged.storage.bases`), ``disks`` the root disks
(:mod:`imaged.storage.disks`), ``disk_locks`` their pool-wide locks and
``incomplete_disks`` the markers of those being made; all of them share
one leased connection (:mod:`imaged.storage.connection`). Only the
``storage`` package imports librados and librbd; both are injectable so
unit tests can pass fakes.
"""

import time
from typing import Any

from oslo_log import log as logging
import tenacity

from imaged import exception
from imaged.storage import bases
from imaged.storage import cluster_status
from imaged.storage import connection
from imaged.storage import disk_locks
from imaged.storage import disk_markers
from imaged.storage import disks
from imaged.storage import flatten
from imaged.storage import lazy as rbd_lazy
from imaged.storage import location as rbd_location
from imaged.storage import locks
from imaged.storage import partial
from imaged.storage import snapshots
from imaged.storage import trash
from imaged.storage import verified

LOG = logging.getLogger(__name__)

# The object whose lock says which host does the pool-wide cleanup.
CLEANUP_ROLE_OBJECT = 'imaged.cleanup'

# A snapshot probe that times out is asked again, after 0.5 s, then 1 s.
PROBE_ATTEMPTS = 3
PROBE_RETRY_DELAY = 0.5
_pause = time.sleep  # tests replace it


class RBDDriver:
    """Root disks and base images in ``[rbd] pool``, made by ``host``."""

    def __init__(self, conf: Any, host: str, rados_module: Any = None,
                 rbd_module: Any = None) -> None:
        if rados_module is None or rbd_module is None:
            import rados
            import rbd
            rados_module = rados_module or rados
            rbd_module = rbd_module or rbd
        self.conf = conf
        self.host = host
        self.conn = connection.CephConnection(conf, rados_module, rbd_module)
        self.partials = partial.PartialWriter(self.conn, host)
        self.trash = trash.Trash(self.conn)
        self.flattener = flatten.Flattener(self.conn)
        self.snapshots = snapshots.SnapshotStore(self.conn, host,
                                                 self.flattener)
        self.bases = bases.BaseImageStore(self.conn, self.partials, host,
                                          self.trash)
        self.disk_locks = disk_locks.DiskLocks(self.conn, host)
        self.incomplete_disks = disk_markers.IncompleteDisks(
            self.conn, self.partials, self.disk_locks)
        self.disks = disks.RootDiskStore(self.conn, self.partials,
                                         self.incomplete_disks, self.trash)
        self.verified = verified.VerifiedSnapshots(self.conn, host)
        self.cluster_status = cluster_status.ClusterStatus(self.conn)
        self._cleanup_role: locks.PoolRole | None = None

    @property
    def pool(self) -> str:
        return self.conf.rbd.pool

    def fsid(self) -> str:
        return self.conn.fsid()

    def status(self) -> tuple[str | None, list[str]]:
        """``(fsid or None, problems)``: can root disks be made now?"""
        return self.cluster_status.status()

    def holds_cleanup_role(self, interval: float) -> bool:
        """Whether this host does the pool-wide cleanup now (one host of
        the pool at a time; see ``locks.PoolRole``).

        :param interval: seconds between the cleanup runs: the role lasts
            two of them, so a live holder keeps it and a dead one's moves.
        """
        if self._cleanup_role is None:
            self._cleanup_role = locks.PoolRole(
                self.conn, CLEANUP_ROLE_OBJECT, self.host, 0)
        self._cleanup_role.duration = int(2 * interval + 30)
        return self._cleanup_role.held()

    def remove_kept_lazy_bases(self) -> list[str]:
        """The lazy bases kept for clones that are gone (any host's)."""
        return rbd_lazy.remove_kept(self.conn, self.partials)

    def release_cleanup_role(self) -> None:
        if self._cleanup_role is not None:
            self._cleanup_role.release()

    def qemu_image(self, pool: str, name: str,
                   snapshot: str | None = None) -> connection.QemuImage:
        """Image ``name`` in ``pool`` as qemu-img opens it (a
        :class:`imaged.storage.connection.QemuImage`)."""
        return self.conn.qemu_image(pool, name, snapshot)

    def in_cluster(self, loc: rbd_location.RBDLocation) -> bool:
        """Whether the parsed ``rbd://`` location is in our cluster."""
        return loc.fsid == self.fsid()

    def snapshot_size(self, loc: rbd_location.RBDLocation) -> int | None:
        """The size of the snapshot ``loc`` names, or None if it is not
        there (no such pool, image or snapshot).

        A Ceph that does not answer is asked again, then the error is
        raised: only Ceph's own "not found" means "not cloneable".

        :raises: BackendUnavailable after ``PROBE_ATTEMPTS`` attempts that
            timed out; StorageError for any other Ceph error (permission
            denied on Glance's pool, above all).
        """
        def again(retry_state):
            LOG.warning('Probing snapshot %s/%s@%s failed (%s); asking Ceph '
                        'again', loc.pool, loc.image, loc.snapshot,
                        retry_state.outcome.exception())
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(
                exception.BackendUnavailable),
            stop=tenacity.stop_after_attempt(PROBE_ATTEMPTS),
            wait=tenacity.wait_incrementing(start=PROBE_RETRY_DELAY,
                                            increment=PROBE_RETRY_DELAY),
            sleep=lambda seconds: _pause(seconds), before_sleep=again,
            reraise=True)
        return retrying(self._snapshot_size, loc)

    def _snapshot_size(self, loc):
        rados, rbd = self.conn.rados, self.conn.rbd
        with self.conn.lease() as cluster:
            with self.conn.typed_errors(loc.image, loc.pool):
                try:
                    ioctx = cluster.open_ioctx(loc.pool)
                except rados.ObjectNotFound:
                    return None
                try:
                    with rbd.Image(ioctx, loc.image, snapshot=loc.snapshot,
                                   read_only=True) as image:
                        return image.size()
                except rbd.ImageNotFound:
                    return None
                finally:
                    ioctx.close()
