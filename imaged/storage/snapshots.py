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
  (:func:`imaged.storage.partial_names.partial_name`), flattened (no byte
  leaves Ceph, and the new image does not depend on the disk), given a
  protected snapshot ``snap`` and metadata saying whose it is, then renamed
  to the image id: an image under that name is always complete;
* strategy ``upload``: a file-like reader of the temporary snapshot.

Every step can be done again: a retry after a kill finds what the last
attempt left (a partial, the temporary snapshot, the finished image) and
goes on from there or removes it. What no retry takes up is a leftover of
:mod:`imaged.leftovers`: each temporary snapshot is recorded while it lives
(an xattr ``<disk>@<snapshot>`` on the pool's object
``imaged.snapshots.taking``, naming the host), so that the sweep finds it
without opening every disk.
"""

import json
import threading
import time
from typing import Any, Callable, Iterable

from oslo_log import log as logging
import tenacity

from imaged import exception
from imaged.storage import guards
from imaged.storage import partial
from imaged.storage import partial_names
from imaged.storage import snapshot_reader

LOG = logging.getLogger(__name__)

SNAPSHOT = 'snap'
SOURCE_KEY = 'imaged.snapshot_of'
IMAGE_ID_KEY = 'imaged.image_id'
# Seconds a killed attempt's partial may stay watched by its dead client:
# twice the OSDs' default osd_client_watch_timeout.
DEAD_WATCH_GRACE = 60


# imaged's temporary snapshots of a root disk, one per snapshot call.
TEMPORARY_PREFIX = 'imaged-snapshot-'


# The object whose xattrs name the temporary snapshots taken, by whom.
TAKING_OBJECT = 'imaged.snapshots.taking'


def disk_snapshot_name(image_id: str) -> str:
    return TEMPORARY_PREFIX + image_id


def _taking_key(disk, snap):
    return '%s@%s' % (disk, snap)


class SnapshotStore:
    """Snapshots of root disks in ``[rbd] pool`` into other pools."""

    def __init__(self, conn: Any, host: str, flattener: Any) -> None:
        self.conn = conn
        self.host = host
        self.flattener = flattener
        # Partial copies this process is making now: never leftovers.
        self._in_progress: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        # None until the first sweep of this host's own partial copies;
        # then the (pool, name) this process knows it left behind.
        self._leftovers: set[tuple[str, str]] | None = None
        # None until this host's temporary snapshots are first listed;
        # then the (disk, image id) whose removal failed in this process.
        self._failed_drops: set[tuple[str, str]] | None = None

    def take(self, disk: str, image_id: str) -> str:
        """Take (again) the disk's temporary snapshot for ``image_id``,
        recorded first (the sweep's list), with the disk's lock held."""
        snap = disk_snapshot_name(image_id)
        rbd = self.conn.rbd
        with self.conn.ioctx(name=disk) as ioctx:
            ioctx.set_xattr(TAKING_OBJECT, _taking_key(disk, snap),
                            json.dumps({'host': self.host,
                                        'at': int(time.time())}).encode())
            with rbd.Image(ioctx, disk) as image:
                if snap in {s['name'] for s in image.list_snaps()}:
                    image.remove_snap(snap)  # an older attempt's
                image.create_snap(snap)
        return snap

    def drop(self, disk: str, image_id: str) -> None:
        """Remove the disk's temporary snapshot for ``image_id``, if any
        (with the disk's lock held)."""
        try:
            self._drop(disk, image_id)
        except BaseException:
            with self._lock:
                if self._failed_drops is not None:
                    self._failed_drops.add((disk, image_id))
            raise
        with self._lock:
            if self._failed_drops is not None:
                self._failed_drops.discard((disk, image_id))

    def left_here(self) -> list[tuple[str, str]]:
        """This host's temporary snapshots that outlived their call:
        ``[(disk, image id)]``. The first time, every one recorded in the
        pool as this host's (a kill before this process started); then
        those whose removal failed in this process."""
        with self._lock:
            if self._failed_drops is not None:
                return sorted(self._failed_drops)
        found = [(disk, image_id) for disk, image_id, host in self.taken()
                 if host == self.host]
        with self._lock:
            if self._failed_drops is None:
                self._failed_drops = set()
        return found

    def _drop(self, disk, image_id):
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
            self._unrecord(ioctx, disk, snap)

    def _unrecord(self, ioctx, disk, snap):
        rados = self.conn.rados
        try:
            ioctx.rm_xattr(TAKING_OBJECT, _taking_key(disk, snap))
        except (rados.NoData, rados.ObjectNotFound):
            pass

    def taken(self) -> list[tuple[str, str, str | None]]:
        """The recorded temporary snapshots: ``[(disk, image id, host)]``."""
        rados = self.conn.rados
        with self.conn.ioctx(name=TAKING_OBJECT) as ioctx:
            try:
                xattrs = list(ioctx.get_xattrs(TAKING_OBJECT))
            except rados.ObjectNotFound:
                return []
        found = []
        for key, value in xattrs:
            disk, _sep, snap = key.partition('@')
            if not snap.startswith(TEMPORARY_PREFIX):
                continue
            try:
                host = json.loads(value)['host']
            except (ValueError, TypeError, KeyError):
                host = None
            found.append((disk, snap[len(TEMPORARY_PREFIX):], host))
        return sorted(found)

    def finished(self, pool: str, image_id: str,
                 instance_uuid: str) -> bool | None:
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

    def copy(self, disk: str, image_id: str, instance_uuid: str, pool: str,
             wait: float | None = None,
             progress: Callable[[int, int], None] | None = None) -> None:
        """Make ``pool/<image_id>@snap``: a flattened copy of the disk's
        temporary snapshot. ``take`` first."""
        part = partial_names.partial_name(image_id, self.host)
        with self._lock:
            self._in_progress.add((pool, part))
        try:
            self._copy(disk, image_id, instance_uuid, pool, part, wait,
                       progress)
        finally:
            with self._lock:
                self._in_progress.discard((pool, part))

    def _copy(self, disk, image_id, instance_uuid, pool, part, wait,
              progress):
        conn, rbd = self.conn, self.conn.rbd
        with conn.ioctx(name=disk) as disk_ioctx, \
                conn.ioctx(pool, image_id) as ioctx:
            rbd.RBD().clone(disk_ioctx, disk, disk_snapshot_name(image_id),
                            ioctx, part)
            try:
                with rbd.Image(ioctx, part) as image:
                    image.metadata_set(partial.OWNER_KEY, self.host)
                    guards.record(image)
                self.flattener.flatten(part, pool=pool, wait=wait,
                                       progress=progress)
                with rbd.Image(ioctx, part) as image:
                    image.metadata_set(SOURCE_KEY, instance_uuid)
                    image.metadata_set(IMAGE_ID_KEY, image_id)
                    image.create_snap(SNAPSHOT)
                    image.protect_snap(SNAPSHOT)
                rbd.RBD().rename(ioctx, part, image_id)
            except BaseException:
                self._remove_quietly(ioctx, pool, part)
                raise

    def remove(self, pool: str, image_id: str) -> None:
        """Remove ``pool/<image_id>`` (ours, never registered)."""
        with self.conn.ioctx(pool, image_id) as ioctx:
            try:
                partial.remove_image(self.conn.rbd, ioctx, image_id)
            except self.conn.rbd.ImageNotFound:
                pass

    def sweep(self, pool: str, image_id: str,
              wait: float | None = DEAD_WATCH_GRACE) -> None:
        """Remove this host's partial copies of ``image_id`` in ``pool``
        (a killed attempt's, taken up by its retry), waiting up to ``wait``
        seconds for each to be free."""
        tag = partial_names.host_tag(self.host)
        with self.conn.ioctx(pool) as ioctx:
            for name in self.conn.rbd.RBD().list(ioctx):
                if name.startswith(image_id + '.') and \
                        partial_names.partial_owner_tag(name) == tag and \
                        not self._copying(pool, name):
                    LOG.info('Removing %s/%s, left by an earlier attempt',
                             pool, name)
                    self._remove_when_unwatched(ioctx, pool, name, wait)

    def _copying(self, pool, name):
        with self._lock:
            return (pool, name) in self._in_progress

    def sweep_own(self, pools: Callable[[], Iterable[str]]) -> list[str]:
        """Remove the partial copies this host left in ``pools()``
        (Glance's pools in our cluster).

        The first sweep lists the pools (a kill before this process
        started); later ones only retry what this process knows it left,
        without asking ``pools()``.

        :returns: the ``pool/name`` removed.
        """
        with self._lock:
            known = None if self._leftovers is None else set(self._leftovers)
        if known is not None and not known:
            return []
        tag = partial_names.host_tag(self.host)
        if known is None:
            known = set()
            for pool in sorted(pools()):
                known.update((pool, name) for name in self._names(pool)
                             if partial_names.partial_owner_tag(name) == tag)
        removed, left = self._remove_all(sorted(known))
        with self._lock:
            self._leftovers = ((self._leftovers or set()) - set(known)) | \
                set(left)
        return ['%s/%s' % entry for entry in removed]

    def sweep_abandoned(self, pools: Iterable[str], max_age: float,
                        now: float | None = None) -> list[str]:
        """Remove other hosts' abandoned partial copies in ``pools`` (for
        the pool's cleanup host): their writer's locks are free in Ceph,
        or, for a copy that names none, it is older than ``max_age``
        seconds (:func:`imaged.storage.guards.abandoned`).

        :returns: the ``pool/name`` removed.
        """
        now = time.time() if now is None else now
        tag = partial_names.host_tag(self.host)
        conn = self.conn
        removed = []
        for pool in sorted(pools):
            for name in self._names(pool):
                owner = partial_names.partial_owner_tag(name)
                if owner is None or owner == tag:
                    continue
                try:
                    made_at = partial_names.partial_made_at(name)
                    with conn.ioctx(pool, name) as ioctx, guards.abandoned(
                            conn, ioctx, name, made_at, max_age, now) as gone:
                        if gone:
                            removed += self._remove_all([(pool, name)])[0]
                except exception.BackendUnavailable:
                    raise
                except exception.ImagedException as e:
                    LOG.debug('Partial copy %s/%s not judged: %s', pool,
                              name, e)
        return ['%s/%s' % entry for entry in removed]

    def _names(self, pool):
        with self.conn.ioctx(pool) as ioctx:
            return self.conn.rbd.RBD().list(ioctx)

    def _remove_all(self, entries):
        conn = self.conn
        removed, left = [], []
        for pool, name in entries:
            if self._copying(pool, name):
                continue
            try:
                with conn.ioctx(pool, name) as ioctx:
                    try:
                        if not self._ours(ioctx, name):
                            continue
                        partial.remove_image(conn.rbd, ioctx, name)
                    except conn.rbd.ImageNotFound:
                        continue
                removed.append((pool, name))
            except exception.BackendUnavailable:
                raise
            except exception.ImagedException as e:
                LOG.debug('Partial copy %s/%s not removable yet: %s', pool,
                          name, e)
                left.append((pool, name))
        if removed:
            LOG.info('Removed partial snapshot copies: %s',
                     ', '.join('%s/%s' % entry for entry in removed))
        return removed, left

    def _ours(self, ioctx, name):
        """Whether ``name`` in Glance's pool says imaged made it."""
        rbd = self.conn.rbd
        with rbd.Image(ioctx, name, read_only=True) as image:
            try:
                image.metadata_get(partial.OWNER_KEY)
                return True
            except KeyError:
                return False

    def _remove_when_unwatched(self, ioctx, pool, name, wait):
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
            self._left(pool, name)

    def _remove_quietly(self, ioctx, pool, name):
        try:
            partial.remove_image(self.conn.rbd, ioctx, name)
        except Exception:
            self._left(pool, name)

    def _left(self, pool, name):
        LOG.warning('Could not remove %s/%s; the leftovers\' sweep does',
                    pool, name, exc_info=True)
        with self._lock:
            if self._leftovers is not None:
                self._leftovers.add((pool, name))

    def reader(self, disk: str, image_id: str,
               progress: Callable[[int, int], Any] | None = None) -> Any:
        """A file-like, read-only view of the disk's temporary snapshot,
        and its size: ``with store.reader(...) as (data, size)``.

        :param progress: called ``progress(bytes_read, size)`` after each
            read from librbd.
        """
        return snapshot_reader.SnapshotReader(
            self.conn, disk, disk_snapshot_name(image_id), progress)
