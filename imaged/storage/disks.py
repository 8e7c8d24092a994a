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
delete it: creates and deletes of one disk hold a cluster-wide lock (a rados
exclusive lock with a lease on ``imaged.lock.<name>``), so two creates on
two hosts make one disk (the second finds it ``existing``) and a delete
never runs beside a create that would make the disk again after it.

A clone is made under the disk's own name, not a partial name renamed at
the end (a rename costs librbd as much as the clone itself): an xattr named
after the disk on the pool's object ``imaged.disks.creating`` says who is
making it, set before the clone and removed once the disk is complete. A
disk whose marker is still there is a crash's leftover, never taken for a
finished one: the next create of it removes and makes it again, a delete
removes it, and the sweeps (the host's own, then the pool's cleanup host
for a host that is gone) remove it with its lock held.
"""

import contextlib
import json
import threading
import time
from typing import Any, Callable, Iterator

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
LOCK_NAME = 'imaged-disk'
# The object whose xattrs name the disks being cloned, and by whom.
CREATING_OBJECT = 'imaged.disks.creating'


def _parse_marker(value):
    try:
        marker = json.loads(value)
        return {'host': str(marker['host']), 'at': int(marker['at'])}
    except (ValueError, TypeError, KeyError):
        return {'host': None, 'at': None}


def disk_name(instance_uuid):
    return '%s_disk' % instance_uuid


class RootDiskStore:
    """Inspects and removes root disks; new ones come from the writer."""

    def __init__(self, conn, writer, trash=None):
        self.conn = conn
        self.writer = writer
        self.trash = trash or rbd_trash.Trash(conn)
        # None until this host's first sweep; then the disks this process
        # knows it left incomplete (a removal that failed).
        self._leftovers = None
        self._leftovers_lock = threading.Lock()

    @property
    def pool(self) -> str:
        return self.conn.pool

    @staticmethod
    def lock_object(name: str) -> str:
        return 'imaged.lock.' + name

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None) -> Iterator[None]:
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

    def forget_lock(self, name: str) -> None:
        """With the lock held, once the disk is gone: remove its object."""
        with self.conn.ioctx(name=name) as ioctx:
            try:
                ioctx.remove_object(self.lock_object(name))
            except self.conn.rados.ObjectNotFound:
                pass

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
                ioctx.set_xattr(CREATING_OBJECT, name, json.dumps(
                    {'host': writer.host, 'at': int(time.time())}).encode())
                step('mark')
                try:
                    conn.rbd.RBD().clone(parent_ioctx, loc.image,
                                         loc.snapshot, ioctx, name)
                except conn.rbd.ImageNotFound as e:
                    self._unmark_quietly(ioctx, name)
                    raise exception.CloneSourceNotFound(
                        name=name, pool=conn.pool, reason=e)
                except conn.rbd.ImageExists:
                    # Not ours: nothing to remove.
                    self._unmark_quietly(ioctx, name)
                    raise
                except BaseException:
                    self._remove_incomplete(ioctx, name)
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
                    self._unmark_quietly(ioctx, name)
                    step('unmark')
                except BaseException:
                    self._remove_incomplete(ioctx, name)
                    raise
        finally:
            writer.mark_in_progress(name, False)

    def _marker(self, ioctx, name):
        """Who is making disk ``name`` (``{'host', 'at'}``), or None."""
        rados = self.conn.rados
        try:
            return _parse_marker(ioctx.get_xattr(CREATING_OBJECT, name))
        except (rados.NoData, rados.ObjectNotFound):
            return None

    def _unmark_quietly(self, ioctx, name):
        rados = self.conn.rados
        try:
            ioctx.rm_xattr(CREATING_OBJECT, name)
        except (rados.NoData, rados.ObjectNotFound):
            pass

    def _remove_marked(self, ioctx, name):
        """Remove the disk (if there) and then its marker.

        :returns: whether there was a disk.
        """
        try:
            partial.remove_image(self.conn.rbd, ioctx, name)
            removed = True
        except self.conn.rbd.ImageNotFound:
            removed = False
        self._unmark_quietly(ioctx, name)
        return removed

    def _remove_incomplete(self, ioctx, name):
        """:meth:`_remove_marked`, quietly (a marker left behind has a
        sweep remove the disk later)."""
        try:
            self._remove_marked(ioctx, name)
        except Exception:
            LOG.warning('Could not remove the incomplete root disk %s/%s; '
                        'a sweep removes it later', self.pool, name,
                        exc_info=True)
            with self._leftovers_lock:
                if self._leftovers is not None:
                    self._leftovers.add(name)

    def remove_incomplete(self, name: str) -> bool:
        """With the disk's lock held: remove what a crashed create left
        of disk ``name`` (the disk, then its marker).

        :returns: whether there was a disk to remove.
        """
        with self.conn.ioctx(name=name) as ioctx:
            if self._marker(ioctx, name) is None:
                return False  # finished meanwhile
            removed = self._remove_marked(ioctx, name)
        if removed:
            LOG.warning('Root disk %s/%s is what a crashed create left: '
                        'removed it', self.pool, name)
        return removed

    def sweep(self) -> list[str]:
        """Remove what this host's crashed creates left.

        The first sweep reads every marker (a crash before this process
        started); later ones only retry the disks this process knows it
        left, so that a host does not read the pool's markers every 30 s.

        :returns: the names of the disks removed.
        """
        with self._leftovers_lock:
            known = None if self._leftovers is None else set(self._leftovers)
        if known is not None and not known:
            return []
        if known is None:
            known = {name for name, marker in self._markers()
                     if marker['host'] == self.writer.host}
        removed, left = self._remove_all_incomplete(sorted(known))
        with self._leftovers_lock:
            self._leftovers = set(left)
        return removed

    def sweep_abandoned(self, max_age: float | None = None,
                        now: float | None = None) -> list[str]:
        """Remove what other hosts' creates left (for the pool's one
        cleanup host: a host that died never sweeps its own).

        Each disk is removed only with its lock, which the create making
        it holds: a disk whose lock can be taken is abandoned, whatever
        the clocks say (its maker's lease ran out in Ceph).

        :param max_age: also require the marker to be that old (seconds,
            by this host's clock); None to let the lock alone judge.
        :returns: the names of the disks removed.
        """
        now = time.time() if now is None else now
        old = [name for name, marker in self._markers()
               if marker['host'] != self.writer.host and
               (max_age is None or (marker['at'] is not None and
                                    now - marker['at'] > max_age))]
        return self._remove_all_incomplete(old)[0]

    def _markers(self):
        rados = self.conn.rados
        with self.conn.ioctx(name=CREATING_OBJECT) as ioctx:
            try:
                return [(name, _parse_marker(value)) for name, value
                        in ioctx.get_xattrs(CREATING_OBJECT)]
            except rados.ObjectNotFound:
                return []

    def _remove_all_incomplete(self, names):
        """Each with the disk's lock held: a create of it running now (a
        retry) holds that lock, and its disk is left alone."""
        removed, left = [], []
        for name in names:
            if self.writer.is_in_progress(name):
                continue
            try:
                with self.lock(name, 0):
                    if self.remove_incomplete(name):
                        removed.append(name)
                    self.forget_lock(name)
            except exception.RootDiskBusy:
                continue  # being made again now
            except exception.BackendUnavailable:
                raise
            except exception.ImagedException as e:
                LOG.debug('Incomplete root disk %s/%s not removable yet: %s',
                          self.pool, name, e)
                left.append(name)
        if removed:
            LOG.info('Removed root disks left incomplete by crashed '
                     'creates: %s', ', '.join(removed))
        return removed, left

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
            complete = self._marker(ioctx, name) is None
        return {'size_bytes': size, 'parent': parent_url,
                'image_id': image_id, 'project_id': project_id,
                'complete': complete}

    def unowned(self) -> list[str]:
        """Names of the finished root disks that record no project: made
        before imaged recorded owners, each adopted by the first admin or
        service token that acts on it (:mod:`imaged.policy`)."""
        rbd = self.conn.rbd
        incomplete = {name for name, _marker in self._markers()}
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
                self._unmark_quietly(ioctx, name)  # a crashed create's
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
