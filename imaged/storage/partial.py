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

"""New RBD images, written under a partial name and renamed when complete.

A base image, or a root disk imported from a local file, is always made
under a unique temporary name
``<name>.<host tag>-<token>-<unix time, hex>.imaged-part`` and renamed to
its final name only once it is complete, so a crash at any point can leave a
partial image, but never one that looks finished. Partial names carry a tag
of the host that made them and when (and the host's name in their metadata,
for operators). Each agent sweeps its own leftovers at start-up, and later
only those it knows it left (a removal that failed); the partials of a host
that died are removed by the pool's cleanup host (one at a time, see
``manager``) once older than a bound, unless something still has them open.
(A clone is made in milliseconds under its final name, with a marker
instead: see ``disks``.)
"""

import collections
import os
import threading
import time
from typing import Any, Callable

from oslo_log import log as logging
import tenacity

from imaged import exception
from imaged.i18n import _
from imaged.storage import guards
from imaged.storage import locks
from imaged.storage import partial_names
from imaged.storage import rbd_import

LOG = logging.getLogger(__name__)

OWNER_KEY = 'imaged.host'

# What a new image becomes: its final name, the size it grows to at least,
# an optional protected snapshot, and the metadata it carries.
FinalImage = collections.namedtuple(
    'FinalImage', ['name', 'min_size', 'snapshot', 'metadata'])


def remove_image(rbd: Any, ioctx: Any, name: str) -> None:
    """Remove an image and its snapshots (unprotecting them first)."""
    try:
        rbd.RBD().remove(ioctx, name)
    except rbd.ImageHasSnapshots:
        with rbd.Image(ioctx, name) as image:
            for snap in list(image.list_snaps()):
                if image.is_protected_snap(snap['name']):
                    image.unprotect_snap(snap['name'])
                image.remove_snap(snap['name'])
        rbd.RBD().remove(ioctx, name)


class PartialImage:
    """A download sink: a new image filled under its partial name.

    ``write(offset, data)`` takes pieces at increasing offsets (gaps read as
    zeros); ``commit(size)`` gives it its final size, metadata and snapshot
    and renames it; ``abort()`` removes it. Nothing under the final name
    exists until ``commit`` succeeded.
    """

    def __init__(self, writer: 'PartialWriter', spec: FinalImage,
                 size: int, held: list | None = None,
                 rename: bool = True) -> None:
        """:param held: the exclusive locks its writer holds, if not this
            thread's (:func:`guards.record`).
        :param rename: False: ``commit`` finishes it under its partial
            name, still in progress, for its writer to rename.
        """
        self.writer, self.spec, self.size = writer, spec, size
        self.held, self.rename = held, rename
        self.committed = False
        self.conn = writer.conn
        self.part = partial_names.partial_name(spec.name, writer.host)
        self.finished = False
        self._lease: Any = None
        self.ioctx: Any = None
        self._image: Any = None
        self._blocks: Any = None  # a rbd_import.BlockWriter once open
        self._error: BaseException | None = None
        writer.mark_in_progress(self.part, True)
        try:
            self._open()
        except BaseException as e:
            self._error = e
            self.abort()
            raise

    def _open(self):
        conn, name = self.conn, self.spec.name
        self._lease = conn.acquire()
        self.ioctx = conn.open_ioctx(self._lease.cluster, conn.pool)
        with conn.typed_errors(name):
            conn.rbd.RBD().create(self.ioctx, self.part, self.size,
                                  old_format=False)
            self._image = conn.rbd.Image(self.ioctx, self.part)
            self._image.metadata_set(OWNER_KEY, self.writer.host)
            guards.record(self._image, self.held)
            self._blocks = rbd_import.BlockWriter(
                self._image, self.size, conn.conf.rbd.import_concurrency,
                name, conn.pool, timeout=3 * conn.conf.rbd.connect_timeout,
                librbd_copies=rbd_import.librbd_copies_writes(self._image))

    @property
    def target(self) -> tuple[str, str]:
        """``(pool, name)``: where another writer of its bytes (qemu-img)
        writes them, before ``commit``."""
        return self.conn.pool, self.part

    def write(self, offset: int, data: bytes) -> None:
        try:
            with self.conn.typed_errors(self.spec.name):
                self._blocks.write(offset, data)
        except BaseException as e:
            self._error = e
            raise

    def write_block(self, block: Any) -> None:
        """:meth:`write` of a download's block, held (not copied) until
        librbd has written it."""
        try:
            with self.conn.typed_errors(self.spec.name):
                self._blocks.write_block(block)
        except BaseException as e:
            self._error = e
            raise

    def commit(self, size: int) -> None:
        """Make it the finished image, ``max(size, min_size)`` bytes."""
        conn, spec = self.conn, self.spec
        final_size = max(size, spec.min_size or 0)
        try:
            with conn.typed_errors(spec.name):
                self._blocks.close()
                if final_size != self.size:
                    self._image.resize(final_size)
                for key, value in sorted((spec.metadata or {}).items()):
                    self._image.metadata_set(key, value)
                if spec.snapshot:
                    self._image.create_snap(spec.snapshot)
                    self._image.protect_snap(spec.snapshot)
                image, self._image = self._image, None
                image.close()
                if self.rename:
                    locks.check_leases(_('renaming %(part)s to %(name)s') % {
                        'part': self.part, 'name': spec.name})
                    conn.rbd.RBD().rename(self.ioctx, self.part, spec.name)
        except BaseException as e:
            self._error = e
            self.abort()
            raise
        self.finished = self.committed = True
        self._close()
        if not self.rename:  # its writer's until renamed or removed
            self.writer.mark_in_progress(self.part, True)

    def abort(self) -> None:
        """Remove the partial image; a no-op once committed or aborted.

        After a stall, librbd may still hold writes in flight and closing
        the image would wait for them: a thread of its own cleans up, and
        the sweep removes what it could not.
        """
        if self.finished:
            return
        self.finished = True
        if self._blocks is not None and self._blocks.stalled:
            self._clean_up_later()
        else:
            self._clean_up()

    def _clean_up_later(self):
        LOG.warning('Ceph stalled writing %s/%s; it is removed once Ceph '
                    'answers again', self.conn.pool, self.part)
        threading.Thread(target=self._clean_up, args=(True,), daemon=True,
                         name='abort-' + self.part).start()

    def _clean_up(self, patient=False):
        """Drain the writes in flight, then close and remove the partial;
        ``patient``: drain again while Ceph does not answer (each drain is
        bounded by Ceph's own timeouts), else leave that to a thread."""
        def failed(retry_state):
            self._error = retry_state.outcome.exception()
        if self._blocks is not None:
            try:
                tenacity.Retrying(
                    retry=tenacity.retry_if_exception_type(
                        exception.BackendUnavailable) if patient
                    else tenacity.retry_never,
                    before_sleep=failed, reraise=True)(self._blocks.drain)
            except exception.BackendUnavailable as e:
                self._error = e
                self._clean_up_later()
                return
        try:
            if self._image is not None:
                image, self._image = self._image, None
                image.close()
            if self.ioctx is not None:
                self.writer.remove_quietly(self.ioctx, self.part)
        finally:
            self._close()

    def _close(self):
        ioctx, self.ioctx = self.ioctx, None
        try:
            if ioctx is not None:
                ioctx.close()
        finally:
            lease, self._lease = self._lease, None
            if lease is not None:
                self.conn.release(lease, self._error)
            self.writer.mark_in_progress(self.part, False)


def fill_from_file(partial: PartialImage, path: str,
                   progress: Callable[[int], Any] | None = None) -> None:
    """Write the chunks of a raw file holding data into ``partial``.

    The seam where a checked local file becomes an RBD image.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, chunk in rbd_import.data_chunks(
                fd, min(partial.size, os.fstat(fd).st_size)):
            partial.write(offset, chunk)
            if progress:
                progress(offset + len(chunk))
    finally:
        os.close(fd)


class PartialWriter:
    """Makes new images in ``[rbd] pool`` for ``host``; sweeps leftovers."""

    def __init__(self, conn: Any, host: str) -> None:
        self.conn = conn
        self.host = host
        # Partial images this process is making right now: never leftovers.
        self._in_progress: set[str] = set()
        self._in_progress_lock = threading.Lock()
        # None until the first sweep; then the names this process knows it
        # left behind (a removal that failed), the only ones swept again.
        self._leftovers: set[str] | None = None

    def mark_in_progress(self, part: str, busy: bool) -> None:
        with self._in_progress_lock:
            if busy:
                self._in_progress.add(part)
            else:
                self._in_progress.discard(part)

    def is_in_progress(self, name: str) -> bool:
        with self._in_progress_lock:
            return name in self._in_progress

    def new(self, spec: FinalImage, size: int, held: list | None = None,
            rename: bool = True) -> PartialImage:
        """A :class:`PartialImage` of ``size`` bytes that becomes ``spec``
        (``held``, ``rename``: see :class:`PartialImage`)."""
        return PartialImage(self, spec, size, held, rename)

    def remove_quietly(self, ioctx: Any, part: str) -> None:
        try:
            remove_image(self.conn.rbd, ioctx, part)
        except self.conn.rbd.ImageNotFound:
            pass
        except Exception:
            LOG.warning('Could not remove partial image %s/%s; it is '
                        'removed by the next sweep', self.conn.pool, part,
                        exc_info=True)
            self._left(part)

    def _left(self, part):
        with self._in_progress_lock:
            if self._leftovers is not None:
                self._leftovers.add(part)

    def sweep(self) -> tuple[list[str], list[str]]:
        """Remove partial images this host left behind (a crash, a kill).

        The first sweep lists the pool (a crash before this process
        started); later ones only retry the names this process knows it
        left, so an agent does not list the whole pool every 30 seconds.

        :returns: ``(removed, left)``: names removed, and names that could
            not be removed yet (a dead client's watch lingers for ~30 s).
        """
        conn = self.conn
        with self._in_progress_lock:
            known = None if self._leftovers is None else set(self._leftovers)
        if known is not None and not known:
            return [], []
        mine = partial_names.host_tag(self.host)
        with conn.ioctx() as ioctx:
            if known is None:
                known = {name for name in conn.rbd.RBD().list(ioctx)
                         if partial_names.partial_owner_tag(name) == mine}
            removed, left = self._remove_all(ioctx, sorted(known))
        with self._in_progress_lock:
            self._leftovers = set(left)
        if removed:
            LOG.info('Removed partial images left by an earlier run: %s',
                     ', '.join(removed))
        return removed, left

    def sweep_abandoned(self, max_age: float,
                        now: float | None = None) -> list[str]:
        """Remove other hosts' abandoned partial images.

        For the pool's one cleanup host: a host that died never sweeps its
        own. Abandoned: its writer's locks are free in Ceph (or, for a
        partial that does not name them, it is older than ``max_age``
        seconds); see :func:`imaged.storage.guards.abandoned`. A partial
        that something still has open cannot be removed and stays.

        :returns: the names removed.
        """
        now = time.time() if now is None else now
        conn = self.conn
        mine = partial_names.host_tag(self.host)
        removed = []
        with conn.ioctx() as ioctx:
            for name in conn.rbd.RBD().list(ioctx):
                tag = partial_names.partial_owner_tag(name)
                if tag is None or tag == mine:
                    continue
                try:
                    with guards.abandoned(conn, ioctx, name,
                                          partial_names.partial_made_at(name),
                                          max_age, now) as gone:
                        if gone:
                            removed += self._remove_all(ioctx, [name])[0]
                except exception.BackendUnavailable:
                    raise
                except exception.ImagedException as e:
                    LOG.debug('Partial image %s/%s not judged: %s',
                              conn.pool, name, e)
        if removed:
            LOG.info('Removed partial images abandoned by other hosts: %s',
                     ', '.join(removed))
        return removed

    def _remove_all(self, ioctx, names):
        conn = self.conn
        removed, left = [], []
        for name in names:
            if name in self._in_progress:
                continue
            try:
                if guards.lazy(conn, ioctx, name):
                    # Its maker's recovery finishes or aborts it: its
                    # snapshot may have clones (removing it would trash
                    # it under them), and it may be copied and checked.
                    LOG.debug('Partial image %s/%s is a lazy base: left '
                              'to its maker', conn.pool, name)
                    continue
                remove_image(conn.rbd, ioctx, name)
                removed.append(name)
            except conn.rbd.ImageNotFound:
                pass
            except (conn.rbd.Error, conn.rados.Error) as e:
                if conn.is_unreachable(e):
                    raise
                LOG.debug('Partial image %s/%s not removable yet: %s',
                          conn.pool, name, e)
                left.append(name)
        return removed, left
