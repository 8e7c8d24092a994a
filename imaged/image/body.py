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

"""The body of an image download, read in large blocks.

Glance's answer is read from the socket straight into a few reusable
buffers of :data:`BLOCK` bytes (4 MiB: one RADOS object), with no copy in
Python. Each filled buffer is handed out as a :class:`Block`. Whoever still
needs a block after the loop has moved on (the hash thread, a librbd aio
write in flight) holds it and releases it when done; a buffer is filled
again only once nobody holds it, so reusing it never changes bytes someone
is still hashing or writing.

Every wait is bounded: a read that gets no byte for ``[glance]
download_stall_timeout`` seconds ends the attempt with
:class:`~imaged.exception.ImageDownloadInterrupted` (worth another attempt,
as are a dropped connection and a body that ends short), and the whole
download past ``[glance] download_timeout`` fails with
:class:`~imaged.exception.ImageDownloadFailed`.
"""

import http.client
import queue
import threading
import time
from typing import Any, Iterable, Iterator

from oslo_log import log as logging
from oslo_utils import units
import requests
import urllib3

from imaged import exception
from imaged.i18n import _

LOG = logging.getLogger(__name__)

BLOCK = 4 * units.Mi
# The block being read and those the hash thread has yet to read (librbd
# copies a write's buffer before aio_write returns, see rbd_import: the
# writes in flight hold none then). Made only when none is free: 4 instead
# of 8 saved little RSS (4 GiB download: +42 against +45 MiB over idle) and
# cost 10% of the download's speed on the fast cluster.
BUFFERS = 8
_ZEROS = bytes(BLOCK)

# What a broken or stalled connection raises while its body is read.
_LOST = (http.client.HTTPException, OSError,
         urllib3.exceptions.HTTPError, requests.RequestException)


class Block:
    """``length`` bytes of the image at ``offset``, in a reusable buffer.

    ``data`` is the buffer itself (a ``bytearray``, which librbd's
    ``aio_write`` takes without a copy) when the block is full, else a
    ``memoryview`` of its first ``length`` bytes. It stays valid while
    held: call :meth:`hold` before handing the block to anything that
    outlives the current iteration, and :meth:`release` once done with it.
    """

    __slots__ = ('buffer', 'offset', 'length', '_holds', '_lock', '_free')

    def __init__(self, buffer: Any, offset: int, length: int,
                 free: Any) -> None:
        self.buffer, self.offset, self.length = buffer, offset, length
        self._holds = 1
        self._lock = threading.Lock()
        self._free = free

    def __len__(self):
        return self.length

    @property
    def data(self) -> memoryview:
        if self.length == len(self.buffer):
            return self.buffer
        return memoryview(self.buffer)[:self.length]

    def is_zero(self) -> bool:
        if self.length == len(_ZEROS):
            return self.buffer == _ZEROS
        return bytes(self.data) == _ZEROS[:self.length]

    def hold(self) -> 'Block':
        with self._lock:
            if not self._holds:
                raise RuntimeError('block at %d is already free' %
                                   self.offset)
            self._holds += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._holds -= 1
            free = not self._holds
        if free:
            self._free(self.buffer)


class ImageBody:
    """The image's bytes, as :class:`Block` objects in offset order.

    Iterating releases the previous block's own hold. The body checks the
    length: fewer bytes than ``size`` (or a connection lost midway) raise
    ``ImageDownloadInterrupted`` before the last block is handed out, and
    more than ``size`` raise ``ImageUnacceptable``; the caller checks the
    hash.

    :param response: a streaming ``requests.Response``, read and closed
        here (see :meth:`open`).
    :param size: the size Glance recorded, or None.
    :param deadline: ``time.monotonic()`` past which the download fails;
        by default ``[glance] download_timeout`` from now.
    """

    def __init__(self, image_id: str, response: Any, conf: Any,
                 size: int | None = None, deadline: Any = None,
                 block_size: int = BLOCK, buffers: int = BUFFERS) -> None:
        self.image_id = image_id
        self.size = size
        self.stall_timeout = conf.glance.download_stall_timeout
        self.deadline = deadline if deadline is not None else \
            time.monotonic() + conf.glance.download_timeout
        self.bytes_read = 0
        self._response = response
        self._readinto = _readinto_of(response)
        self._block_size = block_size
        self._free: queue.Queue[Any] = queue.Queue()
        self._unmade = buffers
        self._current = None
        self._done = False

    @classmethod
    def open(cls, glance_api: Any, context: Any, image_id: str, conf: Any,
             size: int | None = None, deadline: Any = None) -> 'ImageBody':
        """GET the image's data; reads wait at most the stall timeout."""
        response = glance_api.open_response(
            context, image_id,
            read_timeout=conf.glance.download_stall_timeout)
        return cls(image_id, response, conf, size=size, deadline=deadline)

    def __iter__(self):
        return self

    def __next__(self):
        self._release_current()
        if self._done:
            raise StopIteration
        buffer = self._buffer()
        try:
            length = self._fill(buffer)
            if length < len(buffer):  # the body ended
                self._done = True
                self._check_complete(self.bytes_read + length)
        except BaseException:
            self._free.put(buffer)
            raise
        if not length:
            self._free.put(buffer)
            raise StopIteration
        self._current = Block(buffer, self.bytes_read, length,
                              self._free.put)
        self.bytes_read += length
        return self._current

    def close(self) -> None:
        self._release_current()
        self._done = True
        self._response.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- inside ---------------------------------------------------------------

    def _release_current(self):
        current, self._current = self._current, None
        if current is not None:
            current.release()

    def _buffer(self):
        """A free buffer: a new one while fewer than ``buffers`` exist, else
        one that its holders released."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if self._unmade:
            self._unmade -= 1
            return bytearray(self._block_size)
        wait = min(self.stall_timeout, self._left())
        try:
            return self._free.get(timeout=wait)
        except queue.Empty:
            self._check_deadline()
            raise self._failed(_('the writes of the image did not keep up: '
                                 'no buffer was freed in %d seconds') %
                               wait)

    def _fill(self, buffer):
        view, got = memoryview(buffer), 0
        try:
            while got < len(view):
                self._check_deadline()
                try:
                    n = self._readinto(view[got:])
                except TimeoutError:
                    raise self._interrupted(
                        _('no data for %d seconds '
                          '([glance] download_stall_timeout)') %
                        self.stall_timeout)
                except _LOST as e:
                    raise self._interrupted(_('the connection was lost '
                                              'after %(n)d bytes: %(err)s') %
                                            {'n': self.bytes_read + got,
                                             'err': e})
                if not n:
                    break
                got += n
                if self.size is not None and \
                        self.bytes_read + got > self.size:
                    raise exception.ImageDataMismatch(
                        image_id=self.image_id,
                        reason=_('Glance sent more bytes than its size of '
                                 '%d') % self.size)
        finally:
            view.release()
        return got

    def _check_complete(self, got):
        # http.client ends a body cut short quietly: compare with both.
        for promised in (self.size, _content_length(self._response)):
            if promised is not None and got < promised:
                raise self._interrupted(_('the body ended early: got '
                                          '%(got)d of %(size)d bytes') %
                                        {'got': got, 'size': promised})

    def _left(self):
        return max(0.0, self.deadline - time.monotonic())

    def _check_deadline(self):
        if time.monotonic() > self.deadline:
            raise self._failed(_('it did not finish in time ([glance] '
                                 'download_timeout)'))

    def _interrupted(self, reason):
        LOG.warning('Download of image %s interrupted: %s', self.image_id,
                    reason)
        return exception.ImageDownloadInterrupted(image_id=self.image_id,
                                                  reason=reason)

    def _failed(self, reason):
        return exception.ImageDownloadFailed(image_id=self.image_id,
                                             reason=reason)


def as_blocks(pieces: Iterable[bytes],
              block_size: int = units.Mi) -> Iterator[Block]:
    """Blocks of an iterable of :class:`Block` or of byte strings.

    Blocks pass as they are; byte strings (a test's, or another source's)
    are joined into blocks of ``block_size``, at the cost of a copy.
    """
    offset, parts, length = 0, [], 0
    for piece in pieces:
        if isinstance(piece, Block):
            yield piece
            continue
        parts.append(piece)
        length += len(piece)
        while length >= block_size:
            joined = b''.join(parts)
            head, rest = joined[:block_size], joined[block_size:]
            yield Block(bytearray(head), offset, len(head), _drop)
            offset += len(head)
            parts, length = ([rest], len(rest)) if rest else ([], 0)
    if length:
        joined = b''.join(parts)
        yield Block(bytearray(joined), offset, len(joined), _drop)


def _drop(_buffer):
    pass


def _content_length(response):
    try:
        return int(response.headers['Content-Length'])
    except (KeyError, ValueError):
        return None


def _readinto_of(response):
    """The fastest ``readinto`` of a streaming response's body.

    urllib3's own ``readinto`` reads into a fresh buffer and copies it; the
    ``http.client`` response beneath it reads from the socket straight into
    ours. Only an undecoded body can be read beneath urllib3.
    """
    raw = response.raw
    fp = getattr(raw, '_fp', None)
    encoded = response.headers.get('Content-Encoding', 'identity')
    if isinstance(fp, http.client.HTTPResponse) and encoded == 'identity':
        return fp.readinto
    return raw.readinto
