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

"""Writing data into a new RBD image, skipping what reads as zeros.

A new RBD image reads as zeros, so only blocks holding data are written:
a 10 GiB image with 200 MiB of data costs 200 MiB of writes. Writes are
aligned 4 MiB blocks (one RADOS object each), several in flight at once.
"""

import errno
import os
import threading
import time
from typing import Any, Iterator

from oslo_log import log as logging
from oslo_utils import units

from imaged import exception
from imaged.i18n import _

LOG = logging.getLogger(__name__)

BLOCK = 4 * units.Mi
# Write errors that mean Ceph did not answer, not that it refused.
_UNREACHABLE_ERRNOS = (errno.ETIMEDOUT, errno.ESHUTDOWN, errno.ENOTCONN)
_ZEROS = bytes(BLOCK)


def data_chunks(fd: int, size: int,
                chunk_size: int = BLOCK) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, bytes)`` for every chunk of a file holding data.

    Holes are skipped without reading them (SEEK_DATA/SEEK_HOLE), and chunks
    that read as all zeros are skipped too. Chunks are aligned to
    ``chunk_size``.
    """
    offset = 0
    while offset < size:
        try:
            data_start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        data_end = min(os.lseek(fd, data_start, os.SEEK_HOLE), size)
        pos = max(offset, data_start - data_start % chunk_size)
        while pos < data_end:
            length = min(chunk_size, size - pos)
            chunk = os.pread(fd, length, pos)
            if len(chunk) != length:
                raise IOError(errno.EIO, 'short read at offset %d' % pos)
            if chunk != _ZEROS[:length]:
                yield pos, chunk
            pos += length
        offset = pos


def librbd_copies_writes(image: Any) -> bool:
    """Whether librbd copies a write's buffer before ``aio_write`` returns.

    It does unless ``rbd_disable_zero_copy_writes`` was set to false (for
    the cluster, the pool or the image; ``config_list`` gives the value in
    force). When it cannot be told, the answer is False: the buffer is then
    kept until the write completes, which is always safe.
    """
    try:
        for option in image.config_list():
            if option['name'] == 'rbd_disable_zero_copy_writes':
                return option['value'] == 'true'
    except Exception:
        LOG.debug('Cannot read the image\'s librbd options', exc_info=True)
    return False


class BlockWriter:
    """Gathers writes at increasing offsets into 4 MiB blocks for librbd.

    ``write`` may be called with pieces of any size, in increasing offset
    order, for the parts of the image that hold data; gaps read as zeros.
    ``close`` writes the last block and waits for every write.

    Every wait for librbd is bounded by ``timeout``: a stalled OSD may never
    complete an aio write, and then ``BackendUnavailable`` is raised (and
    :attr:`stalled` is set: the image must not be closed by a thread that
    cannot wait).

    :param image: an open, writable ``rbd.Image`` named ``name`` in ``pool``.
    :param size: the image's size; nothing is written past it.
    :param concurrency: writes kept in flight.
    :param timeout: seconds a write may take to complete.
    :param librbd_copies: librbd copies each buffer before ``aio_write``
        returns (see :func:`librbd_copies_writes`): a block is then free
        again at once, not held until its write completes.
    """

    def __init__(self, image: Any, size: int, concurrency: int, name: str,
                 pool: str, timeout: float = 60,
                 librbd_copies: bool = False) -> None:
        self.image = image
        self.librbd_copies = librbd_copies
        self.size = size
        self.name, self.pool = name, pool
        self.timeout = timeout
        self.stalled = False
        self._concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._failures: list[int] = []  # librbd's negative errnos
        self._block: int | None = None
        self._buf: Any = None
        self.bytes_written = 0

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            block = offset - offset % BLOCK
            if block != self._block:
                self._flush()
                self._block, self._buf = block, bytearray(BLOCK)
            n = min(len(view), block + BLOCK - offset)
            self._buf[offset - block:offset - block + n] = view[:n]
            offset += n
            view = view[n:]

    def write_block(self, block: Any) -> None:
        """Write an :class:`imaged.image.body.Block` with no copy in Python.

        A whole block at a 4 MiB boundary (or the image's last, shorter
        one) goes to librbd as it is. librbd copies it by default, before
        ``aio_write`` returns, and then the block is not held past the
        call: its buffer can take the next bytes of the download while the
        write is in flight (the writes in flight stay bounded by
        ``concurrency``, each wait by ``timeout``). With
        ``rbd_disable_zero_copy_writes = false`` librbd reads the buffer
        until the completion instead, and the block stays held until then;
        but with the OSD killed, writes in flight then did not complete
        within the op timeout (measured on Ceph 16.2), so imaged leaves the
        copy on. Anything else is gathered by :meth:`write`.
        """
        offset, length = block.offset, block.length
        if self._block is not None and offset >= self._block + BLOCK:
            self._flush()  # what write() gathered before
        if offset % BLOCK or self._block is not None or \
                (length != BLOCK and offset + length != self.size):
            self.write(offset, block.data)
            return
        if offset + length > self.size:
            self._failures.append(-errno.EFBIG)
            return
        self._check()
        data = block.data
        if not isinstance(data, bytearray):
            data = bytes(data)  # the short last block: librbd wants bytes
        self._acquire(time.monotonic() + self.timeout)
        held = None if self.librbd_copies else block.hold()
        try:
            # The callback keeps ``data`` alive until the write completes
            # (with an operator's rbd_disable_zero_copy_writes = false
            # librbd reads it until then).
            self.image.aio_write(data, offset, lambda completion: (
                self._on_complete(completion, held, data)))
        except BaseException:
            if held is not None:
                held.release()
            self._slots.release()
            raise
        self.bytes_written += length

    def _on_complete(self, completion, block=None, _data=None):
        """A write completed; ``_data`` was kept alive until now."""
        ret = completion.get_return_value()
        if ret < 0:
            self._failures.append(ret)
        if block is not None:
            block.release()
        self._slots.release()

    def _flush(self):
        if self._block is None:
            return
        length = min(BLOCK, self.size - self._block)
        block, buf = self._block, self._buf
        self._block = self._buf = None
        if length <= 0:
            self._failures.append(-errno.EFBIG)
            return
        self._check()
        self._acquire(time.monotonic() + self.timeout)
        data = bytes(buf[:length])
        try:
            # Held by the callback until the write completes, as above.
            self.image.aio_write(data, block, lambda completion: (
                self._on_complete(completion, None, data)))
        except BaseException:
            self._slots.release()
            raise
        self.bytes_written += length

    def _acquire(self, deadline):
        if not self._slots.acquire(
                timeout=max(0.0, deadline - time.monotonic())):
            self.stalled = True
            raise exception.BackendUnavailable(
                backend='Ceph',
                reason=_('writes to %(name)s in pool %(pool)s did not '
                         'complete within %(t)ss') %
                {'name': self.name, 'pool': self.pool, 't': self.timeout})

    def _check(self):
        if self._failures:
            err = -self._failures[0]
            if err in _UNREACHABLE_ERRNOS:
                raise exception.BackendUnavailable(
                    backend='Ceph',
                    reason=_('writing %(name)s in pool %(pool)s: %(err)s') %
                    {'name': self.name, 'pool': self.pool,
                     'err': os.strerror(err)})
            raise exception.StorageError(
                name=self.name, pool=self.pool,
                reason=_('write failed: %s') % os.strerror(err))

    def drain(self) -> None:
        """Wait until no write is in flight (at most ``timeout``)."""
        deadline = time.monotonic() + self.timeout
        got = 0
        try:
            for _i in range(self._concurrency):
                self._acquire(deadline)
                got += 1
        finally:
            for _i in range(got):
                self._slots.release()

    def close(self) -> None:
        """Write what is left and wait for all writes; raise if any failed."""
        try:
            self._flush()
        finally:
            self.drain()
        self._check()
        flushed = threading.Event()
        self.image.aio_flush(lambda completion: flushed.set())
        if not flushed.wait(self.timeout):
            self.stalled = True
            raise exception.BackendUnavailable(
                backend='Ceph',
                reason=_('flushing %(name)s in pool %(pool)s did not '
                         'complete within %(t)ss') %
                {'name': self.name, 'pool': self.pool, 't': self.timeout})
