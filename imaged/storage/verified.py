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

"""What imaged verified of Glance's RBD snapshots, kept in the pool.

A signed image cloned from Glance's snapshot is verified once per pool:
the first host to clone it reads the snapshot (:meth:`read`: large
sequential reads, the next one in flight while the caller hashes the
last) and writes the outcome as an xattr of the rados object
``imaged.verified.<image id>`` in ``[rbd] pool`` (:meth:`record`); every
host of the pool then finds it with one lookup (:meth:`recorded`).

A record names what was verified: the snapshot's location, its RBD image
and snapshot ids and its size, and what it was verified against (a digest
of the signature properties and Glance's hash). A snapshot made again
(new ids), resized, or an image signed again no longer matches its
record and is verified again. Records are a few hundred bytes; one is
rewritten when its image is verified again.
"""

import json
import queue
import threading
import time

from oslo_log import log as logging
from oslo_utils import units

LOG = logging.getLogger(__name__)

OBJECT_PREFIX = 'imaged.verified.'
XATTR = 'imaged.verified'
# Bytes per read: librbd reads a request's objects (4 MiB each) at once.
READ_SIZE = 32 * units.Mi
READS_AHEAD = 2


def record_object(image_id):
    return OBJECT_PREFIX + image_id


class VerifiedSnapshots:
    """Reads Glance's snapshots and keeps what was found of them."""

    def __init__(self, conn, host):
        self.conn = conn
        self.host = host

    def identity(self, loc):
        """What names the snapshot's bytes: ``{'location', 'image_ref',
        'snap_id', 'size'}``; ``loc`` is an ``RBDLocation``."""
        with self.conn.ioctx(loc.pool, loc.image) as ioctx:
            with self.conn.rbd.Image(ioctx, loc.image, snapshot=loc.snapshot,
                                     read_only=True) as image:
                return {'location': '%s/%s@%s' % (loc.pool, loc.image,
                                                  loc.snapshot),
                        'image_ref': image.id(),
                        'snap_id': image.snap_get_id(loc.snapshot),
                        'size': image.size()}

    def recorded(self, image_id):
        """The record of image ``image_id`` (a dict), or None."""
        rados = self.conn.rados
        with self.conn.ioctx(name=record_object(image_id)) as ioctx:
            try:
                raw = ioctx.get_xattr(record_object(image_id), XATTR)
            except (rados.NoData, rados.ObjectNotFound):
                return None
        try:
            found = json.loads(raw)
        except ValueError:
            LOG.warning('Unreadable verification record of image %s: '
                        'verifying it again', image_id)
            return None
        return found if isinstance(found, dict) else None

    def record(self, image_id, record):
        """Keep ``record`` (a JSON-able dict) for every host of the pool."""
        record = dict(record, host=self.host, at=time.time())
        name = record_object(image_id)
        with self.conn.ioctx(name=name) as ioctx:
            ioctx.set_xattr(name, XATTR,
                            json.dumps(record, sort_keys=True).encode())

    def forget(self, image_id):
        rados = self.conn.rados
        with self.conn.ioctx(name=record_object(image_id)) as ioctx:
            try:
                ioctx.remove_object(record_object(image_id))
            except rados.ObjectNotFound:
                pass

    def read(self, loc, consume, read_size=READ_SIZE):
        """Pass every byte of snapshot ``loc`` to ``consume(bytes)``, in
        order; returns the number of bytes read.

        The reads run on a thread of their own, ``READS_AHEAD`` ahead of
        ``consume``: librbd reads while the caller hashes.
        """
        chunks = queue.Queue(maxsize=READS_AHEAD)
        stop = threading.Event()
        failure = []

        def reader(ioctx, image):
            try:
                size = image.size()
                for offset in range(0, size, read_size):
                    if stop.is_set():
                        return
                    chunks.put(image.read(offset,
                                          min(read_size, size - offset)))
            except BaseException as e:
                failure.append(e)
            finally:
                chunks.put(None)

        name = '%s@%s' % (loc.image, loc.snapshot)
        done = 0
        with self.conn.ioctx(loc.pool, name) as ioctx:
            with self.conn.rbd.Image(ioctx, loc.image, snapshot=loc.snapshot,
                                     read_only=True) as image:
                thread = threading.Thread(target=reader, args=(ioctx, image),
                                          name='snapshot-read', daemon=True)
                thread.start()
                try:
                    while (chunk := chunks.get()) is not None:
                        consume(chunk)
                        done += len(chunk)
                finally:
                    stop.set()
                    while thread.is_alive():  # unblock a reader at put()
                        try:
                            chunks.get(timeout=0.1)
                        except queue.Empty:
                            pass
                    thread.join()
                if failure:
                    raise failure[0]
        return done
