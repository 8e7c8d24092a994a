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

"""Root disks ``<instance_uuid>_disk`` in ``[rbd] pool``.

A disk's name is global to the pool, and any host may be asked to create or
delete it: creates and deletes of one disk hold its pool-wide lock
(:mod:`imaged.storage.disk_locks`). A clone is marked while it is made
(:mod:`imaged.storage.disk_markers`), so that a crash's leftover is never
taken for a finished disk.
"""

from typing import Any, Callable

from oslo_log import log as logging
import tenacity

from imaged import exception
from imaged.i18n import _
from imaged.storage import location as rbd_location
from imaged.storage import locks
from imaged.storage import partial
from imaged.storage import snapshots as rbd_snapshots
from imaged.storage import trash as rbd_trash

LOG = logging.getLogger(__name__)

# RBD image metadata of a root disk: the Glance image it was made from,
# and the Keystone project of the call that made it (imaged.policy).
IMAGE_ID_KEY = 'imaged.image_id'
PROJECT_KEY = 'imaged.project_id'


def disk_name(instance_uuid: str) -> str:
    return '%s_disk' % instance_uuid


class RootDiskStore:
    """Inspects and removes root disks; new ones come from the writer."""

    def __init__(self, conn: Any, writer: partial.PartialWriter,
                 incomplete: Any,
                 trash: rbd_trash.Trash | None = None) -> None:
        """:param incomplete: the markers of disks being made (a
        :class:`imaged.storage.disk_markers.IncompleteDisks`)."""
        self.conn = conn
        self.writer = writer
        self.incomplete = incomplete
        self.trash = trash or rbd_trash.Trash(conn)

    @property
    def pool(self) -> str:
        return self.conn.pool

    def final_image(self, name: str, size_bytes: int, image_id: str,
                    project_id: str | None) -> partial.FinalImage:
        """What a new disk ``name`` from ``image_id`` becomes, owned by
        ``project_id``."""
        return partial.FinalImage(name=name, min_size=size_bytes,
                                  snapshot=None,
                                  metadata={IMAGE_ID_KEY: image_id,
                                            PROJECT_KEY: project_id})

    def set_owner(self, name: str, project_id: str) -> None:
        """Record ``project_id`` as the owner of the finished disk ``name``
        (one made before owners were recorded); its lock is held."""
        rbd = self.conn.rbd
        with self.conn.ioctx(name=name) as ioctx:
            with rbd.Image(ioctx, name) as image:
                image.metadata_set(PROJECT_KEY, project_id)

    def clone(self, loc: rbd_location.RBDLocation, spec: partial.FinalImage,
              parent_size: int,
              step: Callable[[str], None] | None = None) -> None:
        """Clone snapshot ``loc`` (``parent_size`` bytes) into the disk
        ``spec.name``, complete when this returns; the disk's lock is held.

        :param step: called with the name of each step as it ends (``mark``,
            ``clone``, ``metadata``, ``unmark``): where a storm's time goes.
        """
        conn, name = self.conn, spec.name
        writer = self.writer
        step = step or (lambda name: None)
        writer.mark_in_progress(name, True)
        try:
            with conn.ioctx(loc.pool, loc.image) as parent_ioctx, \
                    conn.ioctx(name=name) as ioctx:
                self.incomplete.mark(ioctx, name)
                step('mark')
                try:
                    conn.rbd.RBD().clone(parent_ioctx, loc.image,
                                         loc.snapshot, ioctx, name)
                except conn.rbd.ImageNotFound as e:
                    self.incomplete.unmark_quietly(ioctx, name)
                    raise exception.CloneSourceNotFound(
                        name=name, pool=conn.pool, reason=e)
                except conn.rbd.ImageExists:
                    # Not ours: nothing to remove.
                    self.incomplete.unmark_quietly(ioctx, name)
                    raise
                except BaseException:
                    self.incomplete.remove_quietly(ioctx, name)
                    raise
                step('clone')
                try:
                    with conn.rbd.Image(ioctx, name) as image:
                        if parent_size < spec.min_size:
                            image.resize(spec.min_size)
                        for key, value in sorted(
                                (spec.metadata or {}).items()):
                            image.metadata_set(key, value)
                    step('metadata')
                    locks.check_leases(_('finishing root disk %s') % name)
                    self.incomplete.unmark_quietly(ioctx, name)
                    step('unmark')
                except BaseException:
                    self.incomplete.remove_quietly(ioctx, name)
                    raise
        finally:
            writer.mark_in_progress(name, False)

    def info(self, name: str) -> dict[str, Any] | None:
        """``{'size_bytes', 'parent', 'image_id', 'project_id',
        'complete'}`` of a disk, or None.

        ``image_id`` and ``project_id`` are None for a disk made before
        imaged recorded them (or by another tool); ``complete`` is False
        for a crashed clone's leftover (:meth:`remove_incomplete` it).
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
                    image_id = self._metadata(image, IMAGE_ID_KEY)
                    project_id = self._metadata(image, PROJECT_KEY)
            except rbd.ImageNotFound:
                return None
            complete = self.incomplete.marker(ioctx, name) is None
        return {'size_bytes': size, 'parent': parent_url,
                'image_id': image_id, 'project_id': project_id,
                'complete': complete}

    def unowned(self) -> list[str]:
        """Names of the finished root disks that record no project: made
        before imaged recorded owners, each adopted by the first admin or
        service token that acts on it (:mod:`imaged.policy`)."""
        rbd = self.conn.rbd
        incomplete = {name for name, _marker in self.incomplete.markers()}
        found = []
        with self.conn.ioctx() as ioctx:
            for name in rbd.RBD().list(ioctx):
                if not name.endswith('_disk') or name in incomplete:
                    continue
                try:
                    with rbd.Image(ioctx, name, read_only=True) as image:
                        if self._metadata(image, PROJECT_KEY) is None:
                            found.append(name)
                except rbd.ImageNotFound:
                    continue  # removed meanwhile
        return sorted(found)

    def _metadata(self, image, key):
        try:
            return image.metadata_get(key)
        except (KeyError, self.conn.rbd.ImageNotFound):
            return None

    def finished(self, name: str) -> dict[str, Any] | None:
        """:meth:`info` of a complete disk, else None."""
        info = self.info(name)
        return info if info is not None and info['complete'] else None

    def remove(self, name: str) -> bool:
        """Remove a disk, retrying while it is open; then its parent's
        trash entry if the disk was its last clone (an image deleted in
        Glance, a purged base).

        :returns: whether a finished disk was there.
        """
        parent = self.parent(name)
        removed = self._remove(name)
        if removed:
            with self.conn.ioctx(name=name) as ioctx:
                # A crashed create's marker.
                self.incomplete.unmark_quietly(ioctx, name)
            if parent is not None:
                self.trash.remove_if_unused(*parent)
        return removed

    def parent(self, name: str) -> tuple[str, str] | None:
        """``(pool, image id)`` of the disk's parent, or None."""
        rbd = self.conn.rbd
        with self.conn.ioctx(name=name) as ioctx:
            try:
                with rbd.Image(ioctx, name, read_only=True) as image:
                    return rbd_trash.parent_of(rbd, image)
            except rbd.ImageNotFound:
                return None

    def _remove_temporary_snapshots(self, ioctx, name):
        """Remove imaged's own snapshots of disk ``name``
        (``imaged-snapshot-<image id>``): whether there were any."""
        rbd = self.conn.rbd
        removed = []
        with rbd.Image(ioctx, name) as image:
            for snap in list(image.list_snaps()):
                if not snap['name'].startswith(rbd_snapshots.TEMPORARY_PREFIX):
                    continue
                if image.is_protected_snap(snap['name']):
                    image.unprotect_snap(snap['name'])
                image.remove_snap(snap['name'])
                removed.append(snap['name'])
        if removed:
            LOG.info('Removed the temporary snapshots %s of disk %s/%s, '
                     'left by a snapshot call that did not finish',
                     ', '.join(removed), self.pool, name)
        return bool(removed)

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
                    except rbd.ImageHasSnapshots:
                        # A snapshot call killed or failed half-way left
                        # its temporary snapshot (no snapshot call holds
                        # the disk now: the caller has its lock).
                        if not self._remove_temporary_snapshots(ioctx, name):
                            raise
                        rbd.RBD().remove(ioctx, name)
                        return True
