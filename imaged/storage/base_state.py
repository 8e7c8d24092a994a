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

"""What a base image looks like in the pool: its names, its metadata, its
state (missing, complete, broken, or foreign: not imaged's), and the only
changes of that state: repair, trash, remove.

* made as a partial image whose metadata says what it is (image id, maker,
  time, ``imaged.complete = true``) and renamed when complete;
* complete only with its snapshot ``snap`` present and protected and that
  flag set; only a complete base is cloned;
* a host's last use is recorded as ``imaged.used.<host>`` on the base's
  lock object ``imaged.lock.<image_id>``;
* removal clears the flag first, so a kill half-way leaves a base that any
  host knows to remove and rebuild; a base that still has clones (format 2)
  goes to the RBD trash (:mod:`imaged.storage.trash`). Images without
  imaged's metadata are never touched.

When each of these happens, under which lock, is
:mod:`imaged.storage.bases`'s protocol.
"""

import datetime
import time
from typing import Any

from oslo_log import log as logging

from imaged.storage import partial
from imaged.storage import trash as rbd_trash

LOG = logging.getLogger(__name__)

SNAPSHOT = 'snap'
SUFFIX = '_base'

# RBD image metadata of a base image.
IMAGE_ID_KEY = 'imaged.image_id'
MADE_BY_KEY = 'imaged.made_by'
MADE_AT_KEY = 'imaged.made_at'
COMPLETE_KEY = 'imaged.complete'
USED_PREFIX = 'imaged.used.'

MISSING, COMPLETE, BROKEN, FOREIGN = 'missing', 'complete', 'broken', \
    'foreign'


def base_name(image_id: str) -> str:
    return image_id + SUFFIX


def lock_object(image_id: str) -> str:
    return 'imaged.lock.' + image_id


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(
        ts, datetime.timezone.utc).isoformat()


def timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO time; 0 if it is none."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return 0.0


def new_metadata(image_id: str, host: str) -> dict[str, str]:
    """The metadata of a new base, made by ``host`` now, once complete."""
    return {IMAGE_ID_KEY: image_id, MADE_BY_KEY: host,
            MADE_AT_KEY: iso(time.time()), COMPLETE_KEY: 'true'}


class State:
    """What a base looks like in the pool."""

    def __init__(self, kind: str, size: int | None = None,
                 metadata: dict[str, str] | None = None,
                 children: int = 0) -> None:
        self.kind, self.size, self.children = kind, size, children
        self.metadata = metadata or {}

    def last_used(self) -> float:
        times = [timestamp(v) for k, v in self.metadata.items()
                 if k.startswith(USED_PREFIX) or k == MADE_AT_KEY]
        return max(times, default=0.0)


def read_state(conn: Any, ioctx: Any, image_id: str,
               count_children: bool = True) -> State:
    """What the base looks like; its clones counted if ``count_children``.
    """
    rbd = conn.rbd
    try:
        with rbd.Image(ioctx, base_name(image_id), read_only=True) as image:
            metadata = {k: v for k, v in image.metadata_list()
                        if k.startswith('imaged.')}
            snaps = {s['name'] for s in image.list_snaps()}
            protected = SNAPSHOT in snaps and \
                image.is_protected_snap(SNAPSHOT)
            children = 0
            size = image.size()
            if SNAPSHOT in snaps:
                image.set_snap(SNAPSHOT)
                if count_children:
                    children = len(list(image.list_children()))
                size = image.size()
    except rbd.ImageNotFound:
        return State(MISSING)
    if not metadata:
        return State(FOREIGN, size)
    # Uses are recorded on the lock object (older agents: in the image's
    # metadata; both count).
    metadata.update(uses(conn, ioctx, image_id))
    complete = metadata.get(COMPLETE_KEY)
    if protected and (complete == 'true' or complete is None and
                      IMAGE_ID_KEY not in metadata):
        # (No flag and no image id: made before imaged kept them.)
        return State(COMPLETE, size, metadata, children)
    return State(BROKEN, size, metadata, children)


def uses(conn: Any, ioctx: Any, image_id: str) -> dict[str, str]:
    """``{USED_PREFIX + host: when}`` recorded on the lock object."""
    try:
        return {name: value.decode('ascii', 'replace')
                for name, value in ioctx.get_xattrs(lock_object(image_id))
                if name.startswith(USED_PREFIX)}
    except conn.rados.ObjectNotFound:
        return {}


def repair(conn: Any, ioctx: Any, name: str, image_id: str) -> None:
    """Protect the snapshot and set the flag of a base that has clones."""
    with conn.rbd.Image(ioctx, name) as image:
        if not image.is_protected_snap(SNAPSHOT):
            image.protect_snap(SNAPSHOT)
        image.metadata_set(IMAGE_ID_KEY, image_id)
        image.metadata_set(COMPLETE_KEY, 'true')


def trash(conn: Any, ioctx: Any, name: str) -> None:
    """Clear the complete flag, then move the base, whose snapshot
    still has clones, to the trash."""
    rbd = conn.rbd
    with rbd.Image(ioctx, name) as image:
        image.metadata_set(COMPLETE_KEY, 'false')
    try:
        if rbd_trash.move_to_trash(rbd, ioctx, name, SNAPSHOT):
            LOG.info('Moved base image %s/%s, which still has clones, '
                     'to the RBD trash', conn.pool, name)
    except rbd.ImageBusy:  # clones of format 1: it must stay
        with rbd.Image(ioctx, name) as image:
            if SNAPSHOT in {s['name'] for s in image.list_snaps()} and \
                    not image.is_protected_snap(SNAPSHOT):
                image.protect_snap(SNAPSHOT)
            image.metadata_set(COMPLETE_KEY, 'true')
        raise


def remove(conn: Any, ioctx: Any, name: str) -> None:
    """Clear the complete flag, then remove snapshot and image."""
    rbd = conn.rbd
    try:
        with rbd.Image(ioctx, name) as image:
            image.metadata_set(COMPLETE_KEY, 'false')
        partial.remove_image(rbd, ioctx, name)
    except rbd.ImageNotFound:
        return
    except rbd.ImageBusy:  # a clone after all: it stays complete
        with rbd.Image(ioctx, name) as image:
            image.metadata_set(COMPLETE_KEY, 'true')
        raise
