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

"""Root disks still being made, and what crashed creates left of them.

A clone is made under the disk's own name, not a partial name renamed at
the end (a rename costs librbd as much as the clone itself): an xattr named
after the disk on the pool's object ``imaged.disks.creating`` says who is
making it, set before the clone and removed once the disk is complete. A
disk whose marker is still there is a crash's leftover, never taken for a
finished one: the next create of it removes and makes it again, a delete
removes it, and the sweeps (the host's own, then the pool's cleanup host
for a host that is gone) remove it with its lock held.
"""

import json
import threading
import time
from typing import Any

from oslo_log import log as logging

from imaged import exception
from imaged.storage import partial

LOG = logging.getLogger(__name__)

# The object whose xattrs name the disks being cloned, and by whom.
CREATING_OBJECT = 'imaged.disks.creating'


def parse_marker(value: bytes | str) -> dict:
    try:
        marker = json.loads(value)
        return {'host': str(marker['host']), 'at': int(marker['at'])}
    except (ValueError, TypeError, KeyError):
        return {'host': None, 'at': None}


class IncompleteDisks:
    """The markers of the disks being made in ``[rbd] pool``, and the
    sweeps of what crashed creates left."""

    def __init__(self, conn: Any, writer: Any, disk_locks: Any) -> None:
        self.conn = conn
        self.writer = writer
        self.locks = disk_locks
        # None until this host's first sweep; then the disks this process
        # knows it left incomplete (a removal that failed).
        self._leftovers: set[str] | None = None
        self._leftovers_lock = threading.Lock()

    @property
    def pool(self) -> str:
        return self.conn.pool

    def mark(self, ioctx: Any, name: str) -> None:
        """Say that this host is making disk ``name``, before it is."""
        ioctx.set_xattr(CREATING_OBJECT, name, json.dumps(
            {'host': self.writer.host, 'at': int(time.time())}).encode())

    def marker(self, ioctx: Any, name: str) -> dict | None:
        """Who is making disk ``name`` (``{'host', 'at'}``), or None."""
        rados = self.conn.rados
        try:
            return parse_marker(ioctx.get_xattr(CREATING_OBJECT, name))
        except (rados.NoData, rados.ObjectNotFound):
            return None

    def unmark_quietly(self, ioctx: Any, name: str) -> None:
        rados = self.conn.rados
        try:
            ioctx.rm_xattr(CREATING_OBJECT, name)
        except (rados.NoData, rados.ObjectNotFound):
            pass

    def _remove_marked(self, ioctx: Any, name):
        """Remove the disk (if there) and then its marker.

        :returns: whether there was a disk.
        """
        try:
            partial.remove_image(self.conn.rbd, ioctx, name)
            removed = True
        except self.conn.rbd.ImageNotFound:
            removed = False
        self.unmark_quietly(ioctx, name)
        return removed

    def remove_quietly(self, ioctx: Any, name: str) -> None:
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
            if self.marker(ioctx, name) is None:
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
            known = {name for name, marker in self.markers()
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
        old = [name for name, marker in self.markers()
               if marker['host'] != self.writer.host and
               (max_age is None or (marker['at'] is not None and
                                    now - marker['at'] > max_age))]
        return self._remove_all_incomplete(old)[0]

    def markers(self) -> list[tuple[str, dict]]:
        rados = self.conn.rados
        with self.conn.ioctx(name=CREATING_OBJECT) as ioctx:
            try:
                return [(name, parse_marker(value)) for name, value
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
                with self.locks.lock(name, 0):
                    if self.remove_incomplete(name):
                        removed.append(name)
                    self.locks.forget_lock(name)
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
