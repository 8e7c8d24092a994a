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

"""Flattening clones: a disk that no longer depends on its parent.

A clone reads what it has not written from its parent's snapshot, and that
parent from its own: a chain. Flattening copies the parent's data into the
clone and detaches it (librbd ``flatten``), so the image (Glance's, or a
base) can go without the disk noticing, and chains stay short. It reads and
writes the whole disk's allocated data, so at most ``[rbd]
concurrent_flatten_operations`` run at once in one agent; the others wait
their turn, bounded by the caller's deadline.
"""

import errno
import threading
import time
from typing import Any, Callable

from oslo_log import log as logging

from imaged import exception
from imaged.i18n import _
from imaged.storage import trash as rbd_trash

LOG = logging.getLogger(__name__)

# A chain longer than this is a loop or a broken cluster, not a disk.
MAX_CHAIN = 64


class Flattener:
    """Flattens images of one connection, a bounded number at once."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._slots = threading.BoundedSemaphore(
            conn.conf.rbd.concurrent_flatten_operations)

    def depth(self, name: str, pool: str | None = None) -> int:
        """How many parents the image ``name`` reads through (0: none)."""
        rbd = self.conn.rbd
        pool = pool or self.conn.pool
        depth, which, ioctxs = 0, {'name': name}, {}
        with self.conn.lease() as cluster:
            try:
                with self.conn.typed_errors(name, pool):
                    while depth < MAX_CHAIN:
                        if pool not in ioctxs:
                            ioctxs[pool] = self.conn.open_ioctx(cluster, pool)
                        with rbd.Image(ioctxs[pool], read_only=True,
                                       **which) as image:
                            parent = rbd_trash.parent_of(rbd, image)
                        if parent is None:
                            break
                        # By id: a parent in the trash has no name.
                        pool, which = parent[0], {'image_id': parent[1]}
                        depth += 1
            finally:
                for ioctx in ioctxs.values():
                    ioctx.close()
        return depth

    def flatten(self, name: str, pool: str | None = None,
                wait: float | None = None,
                progress: Callable[[int, int], Any] | None = None,
                cancelled: Callable[[], bool] | None = None) -> float:
        """Flatten image ``name``; nothing to do if it has no parent.

        :param wait: seconds to wait for a free slot (None: for ever).
        :param progress: ``progress(done, total)`` from librbd.
        :param cancelled: ``cancelled()`` true stops the flatten (librbd
            stops when its progress callback says so; the image stays a
            clone, as it was).
        :returns: seconds spent flattening (0.0 if it had no parent).
        :raises Timeout: no slot within ``wait`` seconds.
        :raises FlattenCancelled: ``cancelled()`` turned true.
        """
        pool = pool or self.conn.pool
        if cancelled is not None:
            if cancelled():
                raise exception.FlattenCancelled(
                    name=name, pool=pool, reason=_('asked to stop'))
            progress = _cancellable(progress, cancelled)
        try:
            return self._flatten(name, pool, wait, progress)
        except exception.StorageError as e:
            if cancelled is not None and cancelled():
                raise exception.FlattenCancelled(
                    name=name, pool=pool, reason=_('asked to stop')) from e
            raise

    def _flatten(self, name, pool, wait, progress):
        rbd = self.conn.rbd
        if not self._slots.acquire(timeout=wait):
            raise exception.Timeout(
                what=_('a free flatten slot ([rbd] '
                       'concurrent_flatten_operations) for %s') % name,
                seconds=wait)
        try:
            started = time.monotonic()
            with self.conn.ioctx(pool, name) as ioctx:
                with rbd.Image(ioctx, name) as image:
                    try:
                        image.parent_info()
                    except rbd.ImageNotFound:
                        return 0.0
                    LOG.info('Flattening %s/%s', pool, name)
                    try:
                        if progress is None:
                            image.flatten()
                        else:
                            image.flatten(on_progress=progress)
                    except rbd.InvalidArgument:
                        return 0.0  # flattened by someone else meanwhile
            seconds = time.monotonic() - started
            LOG.info('Flattened %s/%s in %.2fs', pool, name, seconds)
            return seconds
        finally:
            self._slots.release()


def _cancellable(progress, cancelled):
    """librbd's progress callback: a negative answer stops the operation
    (``OperationCanceled``)."""
    def report(done, total):
        if cancelled():
            return -errno.ECANCELED
        if progress is not None:
            progress(done, total)
        return 0
    return report
