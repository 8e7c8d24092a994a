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

"""RBD side of a root disk's snapshot into Glance.

* a temporary snapshot of the disk (``imaged-snapshot-<image id>``), so
  that what is copied is one point in time whatever the guest writes;
* strategy ``clone``: a clone of it in Glance's pool under a partial name
  (:func:`imaged.storage.partial.partial_name`), flattened (no byte leaves
  Ceph, and the new image does not depend on the disk), given a protected
  snapshot ``snap`` and metadata saying whose it is, and only then renamed
  to the image id: an image under that name is always complete;
* strategy ``upload``: a file-like reader of the temporary snapshot.

Every step can be done again: a retry after a kill finds what the last
attempt left (a partial, the temporary snapshot, the finished image) and
goes on from there or removes it.
"""

import io

from oslo_log import log as logging
import tenacity

from imaged.storage import partial

LOG = logging.getLogger(__name__)

SNAPSHOT = 'snap'
SOURCE_KEY = 'imaged.snapshot_of'
IMAGE_ID_KEY = 'imaged.image_id'
READ_SIZE = 4 * 1024 * 1024
# Seconds a killed attempt's partial may stay watched by its dead client:
# twice the OSDs' default osd_client_watch_timeout.
DEAD_WATCH_GRACE = 60


# imaged's temporary snapshots of a root disk, one per snapshot call.
TEMPORARY_PREFIX = 'imaged-snapshot-'


def disk_snapshot_name(image_id):
    return TEMPORARY_PREFIX + image_id


class SnapshotStore:
    """Snapshots of root disks in ``[rbd] pool`` into other pools."""

    def __init__(self, conn, host, flattener):
        self.conn = conn
        self.host = host
        self.flattener = flattener

    def take(self, disk, image_id):
        """Take (again) the disk's temporary snapshot for ``image_id``."""
        snap = disk_snapshot_name(image_id)
        rbd = self.conn.rbd
        with self.conn.ioctx(name=disk) as ioctx:
            with rbd.Image(ioctx, disk) as image:
                if snap in {s['name'] for s in image.list_snaps()}:
                    image.remove_snap(snap)  # an older attempt's
                image.create_snap(snap)
        return snap

    def drop(self, disk, image_id):
        """Remove the disk's temporary snapshot for ``image_id``, if any."""
        snap = disk_snapshot_name(image_id)
        rbd = self.conn.rbd
        with self.conn.ioctx(name=disk) as ioctx:
            try:
                with rbd.Image(ioctx, disk) as image:
                    if snap in {s['name'] for s in image.list_snaps()}:
                        if image.is_protected_snap(snap):
                            image.unprotect_snap(snap)
                        image.remove_snap(snap)
            except rbd.ImageNotFound:
                pass

    def finished(self, pool, image_id, instance_uuid):
        """Whether ``pool/<image_id>`` is this disk's complete snapshot;
        None if there is no such image, False if it is someone else's."""
        rbd = self.conn.rbd
        with self.conn.ioctx(pool, image_id) as ioctx:
            try:
                with rbd.Image(ioctx, image_id, read_only=True) as image:
                    meta = dict(image.metadata_list())
                    snaps = {s['name'] for s in image.list_snaps()}
                    return meta.get(SOURCE_KEY) == instance_uuid and \
                        SNAPSHOT in snaps and \
                        image.is_protected_snap(SNAPSHOT)
            except rbd.ImageNotFound:
                return None

    def copy(self, disk, image_id, instance_uuid, pool, wait=None,
             progress=None):
        """Make ``pool/<image_id>@snap``: a flattened copy of the disk's
        temporary snapshot. ``take`` first."""
        conn, rbd = self.conn, self.conn.rbd
        part = partial.partial_name(image_id, self.host)
        with conn.ioctx(name=disk) as disk_ioctx, \
                conn.ioctx(pool, image_id) as ioctx:
            rbd.RBD().clone(disk_ioctx, disk, disk_snapshot_name(image_id),
                            ioctx, part)
            try:
                with rbd.Image(ioctx, part) as image:
                    image.metadata_set(partial.OWNER_KEY, self.host)
                self.flattener.flatten(part, pool=pool, wait=wait,
                                       progress=progress)
                with rbd.Image(ioctx, part) as image:
                    image.metadata_set(SOURCE_KEY, instance_uuid)
                    image.metadata_set(IMAGE_ID_KEY, image_id)
                    image.create_snap(SNAPSHOT)
                    image.protect_snap(SNAPSHOT)
                rbd.RBD().rename(ioctx, part, image_id)
            except BaseException:
                self._remove_quietly(ioctx, part)
                raise

    def remove(self, pool, image_id):
        """Remove ``pool/<image_id>`` (ours, never registered)."""
        with self.conn.ioctx(pool, image_id) as ioctx:
            try:
                partial.remove_image(self.conn.rbd, ioctx, image_id)
            except self.conn.rbd.ImageNotFound:
                pass

    def sweep(self, pool, image_id, wait=DEAD_WATCH_GRACE):
        """Remove this host's partial copies of ``image_id`` in ``pool``
        (a killed attempt's), waiting up to ``wait`` seconds for each to be
        free."""
        tag = partial.host_tag(self.host)
        with self.conn.ioctx(pool) as ioctx:
            for name in self.conn.rbd.RBD().list(ioctx):
                if name.startswith(image_id + '.') and \
                        partial.partial_owner_tag(name) == tag:
                    LOG.info('Removing %s/%s, left by an earlier attempt',
                             pool, name)
                    self._remove_when_unwatched(ioctx, name, wait)

    def _remove_when_unwatched(self, ioctx, name, wait):
        """Remove a killed attempt's partial. Its dead client's watch
        stays until the OSDs time it out (``osd_client_watch_timeout``,
        30 s by default); until then librbd answers "busy"."""
        wait = min(wait, max(DEAD_WATCH_GRACE,
                             self.conn.conf.rbd.delete_busy_timeout))
        rbd = self.conn.rbd
        try:
            for attempt in tenacity.Retrying(
                    retry=tenacity.retry_if_exception_type(rbd.ImageBusy),
                    stop=tenacity.stop_after_delay(wait),
                    wait=tenacity.wait_fixed(2), reraise=True):
                with attempt:
                    partial.remove_image(rbd, ioctx, name)
        except rbd.ImageNotFound:
            pass
        except Exception:
            LOG.warning('Could not remove %s; the next attempt does', name,
                        exc_info=True)

    def _remove_quietly(self, ioctx, name):
        try:
            partial.remove_image(self.conn.rbd, ioctx, name)
        except Exception:
            LOG.warning('Could not remove %s; the next attempt does', name,
                        exc_info=True)

    def reader(self, disk, image_id, progress=None):
        """A file-like, read-only view of the disk's temporary snapshot,
        and its size: ``with store.reader(...) as (data, size)``.

        :param progress: called ``progress(bytes_read, size)`` after each
            read from librbd.
        """
        return _SnapshotReader(self.conn, disk, disk_snapshot_name(image_id),
                               progress)


class _SnapshotReader(io.RawIOBase):
    """Reads an RBD snapshot front to back, 4 MiB from librbd at a time."""

    def __init__(self, conn, name, snap, progress=None):
        super().__init__()
        self.conn, self.name, self.snap = conn, name, snap
        self.progress = progress
        self._lease = self._ioctx = self._image = None
        self._offset, self._buffer, self._pos = 0, b'', 0

    def __enter__(self):
        conn = self.conn
        self._lease = conn.acquire()
        self._ioctx = conn.open_ioctx(self._lease.cluster, conn.pool)
        with conn.typed_errors(self.name):
            self._image = conn.rbd.Image(self._ioctx, self.name,
                                         snapshot=self.snap, read_only=True)
            self.size = self._image.size()
        return self, self.size

    def __exit__(self, *exc):
        try:
            if self._image is not None:
                self._image.close()
            if self._ioctx is not None:
                self._ioctx.close()
        finally:
            self.conn.release(self._lease, exc[1])
        return False

    def readable(self):
        return True

    def read(self, n=-1):
        if self._pos == len(self._buffer) and self._offset < self.size:
            length = min(READ_SIZE, self.size - self._offset)
            with self.conn.typed_errors(self.name):
                self._buffer = memoryview(
                    self._image.read(self._offset, length))
            self._pos = 0
            self._offset += length
            if self.progress is not None:
                self.progress(self._offset, self.size)
        end = len(self._buffer) if n is None or n < 0 else \
            min(self._pos + n, len(self._buffer))
        chunk = bytes(self._buffer[self._pos:end])
        self._pos = end
        return chunk
