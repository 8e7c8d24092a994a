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

"""The RBD trash: parents deleted while their clones live on.

Root disks and base images are RBD clones of format 2 (the connection sets
``rbd_default_clone_format = 2``). A parent of such clones can be deleted
at any time: its snapshot goes to the snapshot trash namespace and the
image to the pool's RBD trash, and the clones go on reading through it.
Glance's RBD driver does exactly that when an image with root disks is
deleted, and so does imaged when it purges a base image that still has
clones (:mod:`imaged.storage.bases`).

When the last clone of a trashed snapshot is removed, librbd removes that
snapshot (given write access to the parent's pool), but the trash entry
itself stays until somebody removes it. imaged does, for the parents of
its own disks: ``delete_root_disk`` removes the trash entry its disk was
the last clone of, and the pool's cleanup host purges the trash entries of
imaged's base images that no clone needs any more. Anything else in a
trash is its owner's (``rbd trash purge <pool>``).
"""

from typing import Any, Callable

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

# Trash entries moved there by a user's remove (Glance, imaged), not by
# librbd's own deferred deletion or a migration.
USER_SOURCE = 'USER'


def parent_of(rbd: Any, image: Any) -> tuple[str, str] | None:
    """``(pool, image_id)`` of an open image's parent, or None."""
    try:
        spec = image.get_parent_image_spec()
        parent_id = image.parent_id()
    except rbd.ImageNotFound:
        return None
    return spec['pool_name'], parent_id


def move_to_trash(rbd: Any, ioctx: Any, name: str, snapshot: str) -> bool:
    """Delete image ``name`` whose ``snapshot`` may still have clones of
    format 2: the snapshot goes to the trash namespace, the image to the
    trash.

    :returns: True if the image went to the trash, False if it had no
        clones and was removed outright.
    :raises rbd.ImageBusy: the snapshot has clones of format 1 (they need
        it protected) or the image is open.
    """
    with rbd.Image(ioctx, name) as image:
        snaps = {s['name'] for s in image.list_snaps()}
        if snapshot in snaps:
            if image.is_protected_snap(snapshot):
                image.unprotect_snap(snapshot)
            image.remove_snap(snapshot)
    try:
        rbd.RBD().remove(ioctx, name)
        return False
    except rbd.ImageHasSnapshots:
        rbd.RBD().trash_move(ioctx, name)
        return True


class Trash:
    """Removes the trash entries of imaged's disks' and bases' parents."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._refused: set[str] = set()  # pools where removal was refused

    def _removable(self, ioctx, image_id):
        """The trash entry ``image_id`` if no snapshot (so no clone) is
        left on it, else None."""
        rbd = self.conn.rbd
        try:
            entry = rbd.RBD().trash_get(ioctx, image_id)
        except rbd.ImageNotFound:
            return None  # not in the trash: alive, or already gone
        if entry.get('source') != USER_SOURCE:
            return None
        with rbd.Image(ioctx, image_id=image_id, read_only=True) as image:
            if list(image.list_snaps()):
                return None
        return entry

    def remove_if_unused(self, pool: str, image_id: str) -> bool:
        """Remove trash entry ``image_id`` in ``pool`` if nothing needs it.

        Best effort: an error is logged, never raised; the entry then stays
        for ``rbd trash purge`` or the next cleanup.

        :returns: whether it was removed.
        """
        rbd = self.conn.rbd
        try:
            with self.conn.ioctx(pool, image_id) as ioctx:
                entry = self._removable(ioctx, image_id)
                if entry is None:
                    return False
                rbd.RBD().trash_remove(ioctx, image_id)
        except (rbd.ImageNotFound, rbd.ImageBusy):
            return False
        except rbd.PermissionError:
            if pool not in self._refused:
                self._refused.add(pool)
                LOG.warning('imaged may not remove trash entries in pool %s '
                            '(it needs profile rbd there): trashed parents '
                            'stay until "rbd trash purge %s"', pool, pool)
            return False
        except Exception as e:  # typed errors of the connection too
            LOG.warning('Cannot remove trash entry %s in pool %s now: %s',
                        image_id, pool, e)
            return False
        LOG.info('Removed %s (%s) from the trash of pool %s: its last clone '
                 'is gone', entry['name'], image_id, pool)
        return True

    def purge(self, pool: str, wanted: Callable[[str], bool]) -> list[str]:
        """Remove the trash entries of ``pool`` whose name ``wanted(name)``
        accepts and that no clone needs any more.

        :returns: the names removed.
        """
        rbd = self.conn.rbd
        with self.conn.ioctx(pool) as ioctx:
            entries = [e for e in rbd.RBD().trash_list(ioctx)
                       if wanted(e['name'])]
        return [e['name'] for e in entries
                if self.remove_if_unused(pool, e['id'])]
