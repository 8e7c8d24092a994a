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

"""Who may touch a root disk, and when: the locks a call holds on it
(this host's, then the pool's, waited for within the call's deadline) and
the check of its owner."""

import contextlib
import time
from typing import Any, ContextManager, Iterator

from oslo_concurrency import lockutils
from oslo_log import log as logging

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _
from imaged import policy

LOG = logging.getLogger(__name__)


class DiskAccess:
    """The locks and owners of the root disks of ``storage``'s pool."""

    def __init__(self, conf: Any, storage: Any) -> None:
        self.conf = conf
        self.storage = storage
        self._instance_locks = lockutils.Semaphores()

    @contextlib.contextmanager
    def _instance_lock(self, context: Any, name: str,
                       timeout: float | None = None) -> Iterator[None]:
        """This host's lock on disk ``name``, then the pool's, waited for
        within the call's deadline (or ``timeout`` seconds)."""
        if timeout is None:
            # long_rpc_timeout is bounded, so is its cap (never None).
            timeout = call_deadline.of(context).cap(
                self.conf.long_rpc_timeout) or 0.0
        started = time.monotonic()
        lock = self._instance_locks.get(name)
        if not lock.acquire(timeout=timeout):
            raise exception.RootDiskBusy(
                name=name, pool=self.storage.pool,
                reason=_('another call for it is still running'))
        try:
            left = max(timeout - (time.monotonic() - started), 0)
            with self.storage.disk_locks.lock(name, left):
                yield
        finally:
            lock.release()

    def instance_lock(self, context: Any, name: str,
                      timeout: float | None = None) -> ContextManager[None]:
        """Held while disk ``name`` is created, deleted, flattened or
        snapshotted (this host's lock, then the pool's)."""
        return self._instance_lock(context, name, timeout)

    def check_owner(self, context: Any, name: str, info: dict[str, Any],
                    action: str) -> None:
        """Refuse a caller that may not ``action`` the finished disk
        ``name`` (``info`` from ``disks.info``) before anything about it is
        told; an old disk an admin or service token acts on is adopted.

        :raises NotAuthorized: naming neither the disk's project nor its
            image.
        """
        adopt = policy.check_disk_owner(policy.caller_of(context),
                                        info.get('project_id'),
                                        _('%(action)s root disk %(name)s') %
                                        {'action': action, 'name': name})
        if adopt is not None:
            self.storage.disks.set_owner(name, adopt)
            LOG.info('Root disk %s/%s, made before imaged recorded owners, '
                     'now belongs to project %s', self.storage.pool, name,
                     adopt)
