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

"""Whether another host's partial image was abandoned: by leases in Ceph.

Every partial image (a base or disk being imported, a snapshot's copy in
Glance's pool) is written under exclusive rados locks in ``[rbd] pool``
(the base's build lock, the disk's lock). Its writer records them on the
image (:func:`record`); the pool's cleanup host takes them to judge it
(:func:`abandoned`): free means the writer's lease ran out in Ceph (it
died, or was paused or cut off past it, and then stops before its commit
with ``LeaseLost``), held means it is still at work, however long that
takes. No host's clock is compared with another's. A partial that names
no lock (an older imaged's) is judged by the time in its name.
"""

import contextlib
import json
import struct

from imaged.storage import locks

# Metadata of a partial image: its writer's exclusive locks, as JSON.
GUARDS_KEY = 'imaged.guarded_by'
# A lazy base's partial (imaged.storage.lazy) says so: the sweeps leave it
# to its maker's recovery (its clones may read it through its source).
LAZY_KEY = 'imaged.lazy'
# Where librbd keeps a format 2 image's id and metadata.
RBD_ID_PREFIX = 'rbd_id.'
RBD_HEADER_PREFIX = 'rbd_header.'
METADATA_PREFIX = 'metadata_'
# cls_rbd keeps a migration's spec under this key of the target's header
# omap (in clear): a partial with it is a lazy base, marked or not yet.
MIGRATION_KEY = 'migration'


def record(image, held=None):
    """Note on a new partial image (open read-write) the exclusive locks
    its writer holds: ``held`` (another thread's), else this thread's."""
    held = locks.held_exclusive() if held is None else held
    if held:
        image.metadata_set(GUARDS_KEY, json.dumps(held))


def header_values(conn, ioctx, name, keys):
    """``{key: raw value}`` of the omap ``keys`` of image ``name``'s
    header, read with librados: ``rbd_id.<name>`` names the header
    ``rbd_header.<id>``. ``{}`` if there is no such image."""
    rados = conn.rados
    try:
        raw = ioctx.read(RBD_ID_PREFIX + name)
        length, = struct.unpack_from('<I', raw)
        image_id = raw[4:4 + length].decode()
        with rados.ReadOpCtx() as op:
            found, _ret = ioctx.get_omap_vals_by_keys(op, tuple(keys))
            ioctx.operate_read_op(op, RBD_HEADER_PREFIX + image_id)
            return dict(found)
    except (rados.ObjectNotFound, struct.error, UnicodeDecodeError):
        return {}


def header_metadata(conn, ioctx, name, keys):
    """``{key: value}`` of the image metadata ``keys`` image ``name`` has.

    Read with librados from the image's header (:func:`header_values`;
    its omap keeps each metadata key as ``metadata_<key>``), never by
    opening the image with librbd: a lazy base's partial is a migration
    target, and opening one opens its source, on another host, or on this
    one before it serves again (which may refuse, or stall for ever).
    ``{}`` if there is no such image.
    """
    found = header_values(conn, ioctx, name,
                          [METADATA_PREFIX + key for key in keys])
    values = {}
    for key in keys:
        value = found.get(METADATA_PREFIX + key)
        if value is not None:
            values[key] = value.decode(errors='replace') \
                if isinstance(value, bytes) else value
    return values


def recorded(conn, ioctx, name):
    """The locks a partial's writer held (``[[key, lock name], ...]``),
    or None if it does not say (read by :func:`header_metadata`)."""
    value = header_metadata(conn, ioctx, name, (GUARDS_KEY,)).get(
        GUARDS_KEY)
    if value is None:
        return None
    try:
        held = json.loads(value)
    except ValueError:
        return None
    if not isinstance(held, list) or not held or not all(
            isinstance(g, list) and len(g) == 2 and
            all(isinstance(f, str) for f in g) for g in held):
        return None
    return held


@contextlib.contextmanager
def abandoned(conn, ioctx, name, made_at, max_age, now):
    """For the block: whether another host's partial ``name`` (in
    ``ioctx``'s pool) was abandoned; its writer's locks are held by us
    meanwhile.

    :param made_at: when it was started by the time in its name (None if
        the name does not say), for a partial that names no lock: it is
        then abandoned once older than ``max_age`` seconds at ``now``.
    """
    held = recorded(conn, ioctx, name)
    if held is None:
        yield made_at is not None and now - made_at > max_age
        return
    with conn.ioctx() as locks_ioctx, locks.all_free(
            conn, locks_ioctx, held,
            conn.conf.rbd.base_lock_duration) as free:
        yield free


def lazy(conn, ioctx, name):
    """Whether partial ``name`` is a lazy base's (read without opening
    it): it says so, or it is a migration target its maker was killed
    before it could say so."""
    return bool(header_values(conn, ioctx, name,
                              (METADATA_PREFIX + LAZY_KEY, MIGRATION_KEY)))
