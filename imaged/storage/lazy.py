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

"""A base image made lazily: an RBD import-only migration target.

The target is made under the base's partial name (:mod:`partial`), its
source the agent's loopback source (:mod:`imaged.image.lazy_source`);
its snapshot is made and protected at once, so the first disk is a clone
of it before a byte is copied. ``migration_execute`` copies the bytes,
``migration_commit`` cuts the link to the source; only then may
:mod:`bases` publish it. The evidence (doc/source/contributor/
lazy-first-disk.rst) sets the rules kept here:

* the source URL is in the target's header and every host that opens the
  target or a clone of it opens that URL: the target is cloned on its
  making host only, until the commit;
* an abort of a target whose snapshot still has a clone fails *and*
  leaves the target unusable: the clones go first, then the snapshot, then
  the abort; a target with a clone someone uses is never aborted.
"""

import json
import struct

from oslo_log import log as logging

from imaged import exception
from imaged.i18n import _
from imaged.storage import base_state
from imaged.storage import guards
from imaged.storage import location as rbd_location
from imaged.storage import partial
from imaged.storage import partial_names

LOG = logging.getLogger(__name__)

QUARANTINED_KEY = 'imaged.quarantined'
# What a lazy base's partial is: PREPARED from its making, VERIFIED once
# every byte is copied and its download checked out (then committed).
LAZY_KEY = guards.LAZY_KEY
PREPARED_MARK, VERIFIED_MARK = 'prepared', 'verified'
# rbd_image_migration_state_t: what migration_status names.
PREPARED, EXECUTING, EXECUTED = 2, 3, 4


class LazyTarget:
    """One lazy base under its partial name, made by this host.

    :param name: the base's final name (``base_state.base_name``).
    :param snapshot: the base's snapshot name.
    """

    def __init__(self, conn, writer, name, snapshot):
        self.conn, self.writer = conn, writer
        self.name, self.snapshot = name, snapshot
        self.part = partial_names.partial_name(name, writer.host)
        self.prepared = False

    @classmethod
    def left_images(cls, conn, writer, suffix):
        """Image ids of the lazy bases this host's killed agent left to
        finish: the partials of base names ``<image id><suffix>`` that are
        lazy (say so, or are migration targets killed before they could)
        and are not quarantined (kept for their clones)."""
        tag = partial_names.host_tag(writer.host)
        found = set()
        with conn.ioctx() as ioctx:
            for part in conn.rbd.RBD().list(ioctx):
                name = part.split('.', 1)[0]
                if not (name.endswith(suffix) and
                        part.endswith(partial_names.PARTIAL_SUFFIX) and
                        partial_names.partial_owner_tag(part) == tag) or \
                        writer.is_in_progress(part):
                    continue
                if guards.lazy(conn, ioctx, part) and \
                        not cls._quarantined(conn, ioctx, part):
                    found.add(name[:-len(suffix)])
        return sorted(found)

    @staticmethod
    def _quarantined(conn, ioctx, part):
        return bool(guards.header_metadata(conn, ioctx, part,
                                           (QUARANTINED_KEY,)))

    @classmethod
    def left_behind(cls, conn, writer, name, snapshot):
        """This host's partials of ``name`` a killed agent left (newest
        first), as targets to :meth:`adopt` once this host's source serves
        their image again: librbd cannot open a target before (its header
        names this host's source)."""
        tag = partial_names.host_tag(writer.host)
        found = []
        with conn.ioctx(name=name) as ioctx:
            for part in conn.rbd.RBD().list(ioctx):
                if part.startswith(name + '.') and \
                        part.endswith(partial_names.PARTIAL_SUFFIX) and \
                        partial_names.partial_owner_tag(part) == tag and \
                        not writer.is_in_progress(part):
                    found.append(
                        (partial_names.partial_made_at(part) or 0, part))
        targets = []
        for _made_at, part in sorted(found, reverse=True):
            target = cls(conn, writer, name, snapshot)
            target.part = part
            target.prepared = True
            writer.mark_in_progress(part, True)
            targets.append(target)
        return targets

    def marks(self):
        """``{LAZY_KEY, QUARANTINED_KEY: value}`` it has (read without
        opening it: no source needed)."""
        with self.conn.ioctx(name=self.part) as ioctx:
            return guards.header_metadata(self.conn, ioctx, self.part,
                                          (LAZY_KEY, QUARANTINED_KEY))

    def publishable(self):
        """Whether it was copied and checked (its download matched) and
        not quarantined: a killed agent's to commit and publish, with no
        byte downloaded again."""
        marks = self.marks()
        return marks.get(LAZY_KEY) == VERIFIED_MARK and \
            QUARANTINED_KEY not in marks

    def quarantined(self):
        return QUARANTINED_KEY in self.marks()

    def verified(self):
        """Say on it that every byte is copied and checked out."""
        with self.conn.ioctx(name=self.part) as ioctx:
            with self.conn.rbd.Image(ioctx, self.part) as image:
                image.metadata_set(LAZY_KEY, VERIFIED_MARK)

    def adopt(self):
        """With its source served: whether this leftover is a lazy base to
        finish (a migration target, not quarantined, with clones); one
        without clones is aborted here.

        :returns: True to finish it, False to leave it (not a target any
            more, quarantined, or aborted now).
        """
        rbd = self.conn.rbd
        try:
            with self.conn.ioctx(name=self.part) as ioctx:
                rbd.RBD().migration_status(ioctx, self.part)
                with rbd.Image(ioctx, self.part, read_only=True) as image:
                    keys = {k for k, _v in image.metadata_list()}
        except exception.StorageError as e:  # no migration, or no image
            LOG.debug('Leftover %s is no lazy base to finish: %s',
                      self.part, e)
            return False
        if QUARANTINED_KEY in keys:
            return False
        try:
            self.break_dead_locks()
            if self.abort():
                LOG.info('Aborted lazy base %s/%s a killed agent left '
                         'without clones', self.pool, self.part)
                return False
        except exception.StorageError as e:
            LOG.warning('Lazy base %s/%s a killed agent left stays for '
                        'now: %s', self.pool, self.part, e)
            return False
        return True

    def break_dead_locks(self):
        """Break the locks on a target this host left: they are its dead
        agent's (an execute's exclusive lock, else held ~30 s more)."""
        rbd = self.conn.rbd
        with self.conn.ioctx(name=self.part) as ioctx:
            with rbd.Image(ioctx, self.part) as image:
                lockers = image.list_lockers() or {}
                for client, cookie, _addr in lockers.get('lockers', []):
                    LOG.info('Breaking the lock %s of %s on lazy base %s/%s '
                             '(a killed agent\'s)', cookie, client,
                             self.pool, self.part)
                    image.break_lock(client, cookie)

    @property
    def pool(self):
        return self.conn.pool

    def location(self):
        return rbd_location.RBDLocation(self.conn.fsid(), self.pool,
                                        self.part, self.snapshot)

    def prepare(self, url, size, source_format='raw'):
        """The target, its snapshot protected: cloneable now.

        :param size: the disk's (virtual) size.
        :param source_format: librbd's: ``raw`` or ``qcow`` (qcow2).
        :raises StorageError: librbd refused (the source did not answer
            HEAD, its header was refused, or its size is not ``size``).
        """
        spec = json.dumps({'type': source_format,
                           'stream': {'type': 'http', 'url': url}})
        rbd = self.conn.rbd
        self.writer.mark_in_progress(self.part, True)
        with self.conn.ioctx(name=self.part) as ioctx:
            rbd.RBD().migration_prepare_import(spec, ioctx, self.part)
            self.prepared = True
            with rbd.Image(ioctx, self.part) as image:
                image.metadata_set(LAZY_KEY, PREPARED_MARK)
                if image.size() != size:
                    raise exception.StorageError(
                        name=self.part, pool=self.pool,
                        reason=_('its source has %(got)d bytes, not '
                                 '%(size)d') % {'got': image.size(),
                                                'size': size})
                image.metadata_set(partial.OWNER_KEY, self.writer.host)
                image.create_snap(self.snapshot)
                image.protect_snap(self.snapshot)

    def state(self):
        """``migration_status``'s state, or None once committed."""
        rbd = self.conn.rbd
        with self.conn.ioctx(name=self.part) as ioctx:
            try:
                return rbd.RBD().migration_status(ioctx, self.part)['state']
            except rbd.InvalidArgument:  # no migration: committed
                return None

    def execute(self):
        """Copy every byte from the source (a failed one resumes; one a
        killed agent finished is not run again: librbd refuses it)."""
        if self.state() in (EXECUTED, None):
            return
        with self.conn.ioctx(name=self.part) as ioctx:
            self.conn.rbd.RBD().migration_execute(ioctx, self.part)

    def commit(self):
        with self.conn.ioctx(name=self.part) as ioctx:
            self.conn.rbd.RBD().migration_commit(ioctx, self.part)

    def clones(self):
        """How many images are cloned from its snapshot (0 if it has no
        snapshot yet: its maker was killed before)."""
        rbd = self.conn.rbd
        with self.conn.ioctx(name=self.part) as ioctx:
            with rbd.Image(ioctx, self.part, read_only=True) as image:
                if self.snapshot not in {s['name']
                                         for s in image.list_snaps()}:
                    return 0
                image.set_snap(self.snapshot)
                return len(list(image.list_children()))

    def quarantine(self, reason):
        """Say on the target why it will never be published."""
        with self.conn.ioctx(name=self.part) as ioctx:
            with self.conn.rbd.Image(ioctx, self.part) as image:
                image.metadata_set(QUARANTINED_KEY, reason[:1024])

    def abort(self):
        """Remove a target nothing is cloned from: its snapshot, then the
        migration (the other order breaks the target for good).

        :returns: False (nothing done) while it has a clone.
        """
        if not self.prepared:
            return True
        rbd = self.conn.rbd
        if self.clones():
            return False
        with self.conn.ioctx(name=self.part) as ioctx:
            with rbd.Image(ioctx, self.part) as image:
                for snap in list(image.list_snaps()):
                    if image.is_protected_snap(snap['name']):
                        image.unprotect_snap(snap['name'])
                    image.remove_snap(snap['name'])
            rbd.RBD().migration_abort(ioctx, self.part)
        self.prepared = False
        return True

    def done(self):
        """This process no longer works on it: sweeps may judge it."""
        self.writer.mark_in_progress(self.part, False)


def remove_kept(conn, writer):
    """Remove the lazy bases kept for their clones once none is left: the
    partials marked ``imaged.quarantined`` (never published: a mismatch,
    or a base another build made first), committed (no source: opening
    one opens nothing else), whose snapshot's last clone is gone. Any
    host's: the pool's cleanup host sweeps them.

    Nothing clones a kept base again, so one found without clones stays
    so; one open somewhere cannot be removed (``ImageBusy``) and is left.

    :returns: the names removed.
    """
    rbd = conn.rbd
    quarantined = guards.METADATA_PREFIX + QUARANTINED_KEY
    removed = []
    with conn.ioctx() as ioctx:
        for part in rbd.RBD().list(ioctx):
            if not part.endswith(partial_names.PARTIAL_SUFFIX) or \
                    writer.is_in_progress(part):
                continue
            found = guards.header_values(conn, ioctx, part,
                                         (quarantined, guards.MIGRATION_KEY))
            if quarantined not in found or guards.MIGRATION_KEY in found:
                continue
            try:
                with rbd.Image(ioctx, part, read_only=True) as image:
                    cloned = _cloned(image)
                if cloned:
                    continue
                partial.remove_image(rbd, ioctx, part)
            except (rbd.ImageBusy, rbd.ImageNotFound) as e:
                LOG.debug('Kept lazy base %s/%s stays: %s', conn.pool, part,
                          e)
                continue
            except (rbd.Error, conn.rados.Error) as e:
                if conn.is_unreachable(e):
                    raise
                LOG.warning('Kept lazy base %s/%s not removed now: %s',
                            conn.pool, part, e)
                continue
            removed.append(part)
    if removed:
        LOG.info('Removed lazy bases kept for clones that are gone: %s',
                 ', '.join(removed))
    return removed


def _cloned(image):
    """Whether any snapshot of the open ``image`` has a clone."""
    for snap in list(image.list_snaps()):
        if snap.get('namespace', 0):
            return True  # a trashed snapshot: kept while it has clones
        image.set_snap(snap['name'])
        if list(image.list_children()):
            return True
    return False


class PublishedBase:
    """A published lazy base, served by the agent's source to the clones
    whose librbd still reads the base's snapshot through its source: one
    opened before the commit does until it refreshes its view of the
    parent, which an idle one was seen not to do (15 s after the commit
    and the rename, its reads still came to the source; a source that
    forgot the image gave it zeros, then I/O errors).

    Read with librados from the image's data objects (its head: a base is
    never written after its snapshot), not with librbd: images opened and
    closed by the source's threads while the agent worked aborted the
    process in librbd (``std::system_error``), seen on the real stack.
    """

    def __init__(self, conn, name, image_id, size, order, prefix):
        self.conn, self.name, self.image_id = conn, name, image_id
        self.size, self.order, self.prefix = size, order, prefix

    @classmethod
    def find(cls, conn, name, image_id, mark=VERIFIED_MARK):
        """The base ``name`` of ``image_id``, or None.

        :param mark: what its ``imaged.lazy`` must say (a base made lazily
            and checked); ``PREPARED_MARK``: any lazy one (a quarantined
            target kept for its clones); None: a complete base (its flag,
            read without opening it).
        """
        with conn.ioctx(name=name) as ioctx:
            marks = guards.header_metadata(
                conn, ioctx, name, (LAZY_KEY, base_state.COMPLETE_KEY))
            if mark == VERIFIED_MARK and \
                    marks.get(LAZY_KEY) != VERIFIED_MARK or \
                    mark == PREPARED_MARK and LAZY_KEY not in marks or \
                    mark is None and \
                    marks.get(base_state.COMPLETE_KEY) != 'true':
                return None
            raw = guards.header_values(conn, ioctx, name,
                                       ('size', 'order', 'object_prefix'))
        try:
            size, = struct.unpack('<Q', raw['size'])
            order = raw['order'][0]
            length, = struct.unpack_from('<I', raw['object_prefix'])
            prefix = raw['object_prefix'][4:4 + length].decode()
        except (KeyError, IndexError, struct.error, UnicodeDecodeError):
            return None
        return cls(conn, name, image_id, size, order, prefix)

    def read(self, offset, length, _deadline=None):
        """Bytes of the image at ``offset`` (a hole reads as zeros)."""
        rados = self.conn.rados
        end = min(offset + length, self.size)
        pieces = []
        object_size = 1 << self.order
        with self.conn.ioctx(name=self.name) as ioctx:
            while offset < end:
                number, within = divmod(offset, object_size)
                n = min(end - offset, object_size - within)
                try:
                    data = ioctx.read('%s.%016x' % (self.prefix, number), n,
                                      within)
                except rados.ObjectNotFound:
                    data = b''
                pieces.append(data + bytes(n - len(data)))
                offset += n
        return b''.join(pieces)
