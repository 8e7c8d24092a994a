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

"""Flattening root disks: a new clone whose chain would be too long (or
all of them, ``[rbd] flatten_root_disks = on_create``) at once, or in the
background (:mod:`imaged.background`); an existing disk on request."""

from typing import Any

from oslo_log import log as logging

from imaged import background
from imaged import deadline as call_deadline
from imaged import disk_access
from imaged import exception
from imaged.i18n import _
from imaged.storage import disks as rbd_disks

LOG = logging.getLogger(__name__)


class RootDiskFlattens:
    """Flattens root disks of ``storage``'s pool, with ``access``'s locks
    (a :class:`imaged.disk_access.DiskAccess`)."""

    def __init__(self, conf: Any, storage: Any,
                 access: disk_access.DiskAccess) -> None:
        self.conf = conf
        self.storage = storage
        self.access = access
        self._parent_depths: dict[str, int] = {}  # parent -> chain length

    def _flatten_wait(self, context):
        return call_deadline.of(context).cap(self.conf.long_rpc_timeout)

    def shorten_chain(self, context: Any, name: str, info: dict[str, Any],
                      timings: Any, later: list[str],
                      parent_depth: int | None = None) -> dict[str, Any]:
        """Flatten a new clone if asked to, or if its chain is too long;
        or add it to ``later``, the background's.

        :param parent_depth: the parent's own chain length, if known;
            else it is read from Ceph once per parent.
        """
        parent = info['parent']
        if parent is None:
            return info
        flattener = self.storage.flattener
        depth = parent_depth
        if depth is None:
            depth = self._parent_depths.get(parent)
        if depth is None:
            depth = self._parent_depths[parent] = flattener.depth(name) - 1
            timings.step('depth')
        policy = self.conf.rbd.flatten_root_disks
        if policy == 'on_create' or depth + 1 > self.conf.rbd.max_clone_depth:
            if policy != 'on_create':
                LOG.info('Flattening %s: a chain of %d clones is longer than '
                         '[rbd] max_clone_depth', name, depth + 1)
            flattener.flatten(name, wait=self._flatten_wait(context))
            timings.step('flatten')
            return dict(info, parent=None)
        if policy == 'background':
            later.append(name)
        return info

    def flatten_in_background(self, name: str, cancelled: Any) -> None:
        """A background worker's flatten of disk ``name``, with its locks
        held: a delete waits for it, or cancels it."""
        with self.access.instance_lock(None, name,
                                       timeout=background.LOCK_WAIT):
            parent = self.storage.disks.parent(name)
            if parent is None or self.storage.disks.finished(name) is None:
                return  # flattened, deleted or being made again meanwhile
            self.storage.flattener.flatten(
                name, wait=background.LOCK_WAIT, cancelled=cancelled)
            self.storage.trash.remove_if_unused(*parent)

    def flatten(self, context: Any, instance_uuid: str) -> dict[str, Any]:
        """Make the disk independent of its image; idempotent."""
        name = rbd_disks.disk_name(instance_uuid)
        with self.access.instance_lock(context, name):
            disks = self.storage.disks
            info = disks.finished(name)
            if info is None:
                raise exception.RootDiskNotFound(name=name,
                                                 pool=self.storage.pool)
            self.access.check_owner(context, name, info, _('flatten'))
            parent = disks.parent(name)
            seconds = self.storage.flattener.flatten(
                name, wait=self._flatten_wait(context))
            if parent is not None:
                self.storage.trash.remove_if_unused(*parent)
        return {'instance_uuid': instance_uuid, 'parent': None,
                'seconds': round(seconds, 3)}
