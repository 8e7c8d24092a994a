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

"""The pool-wide lock of a root disk: held by every create and delete of
the disk, on any host (a rados exclusive lock with a lease on
``imaged.lock.<name>``), so two creates on two hosts make one disk and a
delete never runs beside a create that would make the disk again after it.
"""

import contextlib
from typing import Any, Iterator

from imaged import exception
from imaged.i18n import _
from imaged.storage import locks

LOCK_NAME = 'imaged-disk'


def lock_object(name: str) -> str:
    return 'imaged.lock.' + name


class DiskLocks:
    """The locks of the root disks of ``[rbd] pool``, taken by ``host``."""

    def __init__(self, conn: Any, host: str) -> None:
        self.conn = conn
        self.host = host

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        """Held, pool-wide, while disk ``name`` is created or deleted.

        :raises RootDiskBusy: another call, on any host, held it for
            ``timeout`` seconds.
        """
        key = lock_object(name)
        with self.conn.ioctx(name=key) as ioctx:
            lock = locks.RadosLock(
                self.conn, ioctx, key, LOCK_NAME, self.host,
                self.conn.conf.rbd.base_lock_duration)
            try:
                lock.acquire(timeout, key)
            except exception.Timeout:
                raise exception.RootDiskBusy(
                    name=name, pool=self.conn.pool,
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
                ioctx.remove_object(lock_object(name))
            except self.conn.rados.ObjectNotFound:
                pass
