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

"""The download stream: Glance's bytes, read once, checked, into sinks.

:func:`stream` reads an iterable of blocks once (an
:class:`imaged.image.body.ImageBody`: 4 MiB reusable buffers, no copy) and
pushes each block through the hasher (on a thread of its own: hashlib
releases the GIL) and, until the stream is known to be raw, the format
inspectors (:class:`imaged.image.format.StreamInspector`: in pieces they
can handle while they look for their regions), into the sinks the caller
hands it (:class:`Sink`: a local file, a partial RBD image); blocks of all
zeros are never written (a new file or RBD image reads as zeros), and only
the caller commits or aborts.

:func:`attempts` is the retry loop around it: each attempt starts with
fresh sinks, because a failed attempt's bytes were never verified.
"""

import collections
import hashlib
import queue
import threading
import time
import typing

from oslo_log import log as logging
from oslo_utils import units
import tenacity

from imaged import exception
from imaged.i18n import _
from imaged.image import body as image_body
from imaged.image import format as image_format
from imaged.image import glance_errors

LOG = logging.getLogger(__name__)

_ZERO_PIECE = bytes(units.Mi)

Downloaded = collections.namedtuple('Downloaded',
                                    ['size', 'format', 'virtual_size'])


class Sink(typing.Protocol):
    """Where a download's bytes go: written, then committed or aborted.

    Implemented by ``imagecache.file_sink.FileSink`` (a local file renamed into
    place) and ``storage.partial.PartialImage`` (an RBD image renamed into
    place). Nothing under the final name exists until ``commit`` returned.
    A sink may also have ``write_block(block)`` to keep a block past the
    call without copying it (it holds and releases it, as the hash thread
    does).
    """

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``; offsets only grow."""

    def commit(self, size: int) -> None:
        """Give it its final ``size`` and its final name."""

    def abort(self) -> None:
        """Remove what was written; safe to call twice."""


def abort_quietly(sink: Sink) -> None:
    """Abort a sink without hiding the error that made us abort."""
    try:
        sink.abort()
    except Exception:
        LOG.warning('Could not abort a partial copy; it is removed by the '
                    'next sweep', exc_info=True)


class ShortRead(IOError):
    """Glance's answer ended before the image did: worth a retry."""


def expected_hash(image: typing.Any) -> tuple[typing.Any, str, str] | None:
    """``(hasher, hex digest, algorithm)`` Glance promises, or None."""
    algo, value = image.os_hash_algo, image.os_hash_value
    if algo and value and algo in hashlib.algorithms_available:
        return hashlib.new(algo), value, algo
    if image.checksum:
        return hashlib.md5(usedforsecurity=False), image.checksum, 'md5'
    return None


def _detected(inspector):
    """The inspector's verdict so far, or None while it is ambiguous."""
    try:
        return inspector.format
    except Exception:  # ambiguous or conflicting: decided at the end
        return None


def _write_pieces(sink, block, piece=units.Mi):
    """Write the MiBs of ``block`` that hold data: files stay sparse."""
    data = memoryview(block.data)
    for start in range(0, block.length, piece):
        part = data[start:start + piece]
        if bytes(part) != _ZERO_PIECE[:len(part)]:
            sink.write(block.offset + start, part)


class _HashThread:
    """Hashes chunks on another thread, beside the network and Ceph work;
    ``verifier`` (a signature's, or None) gets the same chunks."""

    def __init__(self, hasher, verifier=None):
        self.hasher = hasher
        self._consumers = [c.update for c in (hasher, verifier)
                           if c is not None]
        self._queue = queue.Queue(maxsize=8)
        self._thread = None
        if self._consumers:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name='image-hash')
            self._thread.start()

    def _run(self):
        while (block := self._queue.get()) is not None:
            try:
                for update in self._consumers:
                    update(block.data)
            finally:
                block.release()

    def update(self, block):
        """Hash ``block`` later; it is held until then."""
        if self._thread is not None:
            self._queue.put(block.hold())

    def close(self):
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self):
        self.close()
        if self.hasher is None:
            return None
        return self.hasher.hexdigest()


class ProgressLog:
    """Logs bytes done, percent and MB/s every few seconds."""

    def __init__(self, what: str, total: int | None,
                 interval: float) -> None:
        self.what, self.total, self.interval = what, total, interval
        self.start = self._last = time.monotonic()

    def __call__(self, done):
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = done / units.Mi / max(now - self.start, 1e-6)
        if self.total:
            LOG.info('%s: %d of %d bytes (%.0f%%), %.1f MB/s', self.what,
                     done, self.total, 100.0 * done / self.total, rate)
        else:
            LOG.info('%s: %d bytes, %.1f MB/s', self.what, done, rate)


def _too_large(image_id, virtual_size, max_virtual_size):
    if max_virtual_size is not None and virtual_size > max_virtual_size:
        raise exception.ImageTooLarge(image_id=image_id,
                                      virtual_size=virtual_size,
                                      size_bytes=max_virtual_size)


def stream(image: typing.Any, blocks: typing.Iterable[typing.Any],
           sinks: list[Sink], conf: typing.Any,
           max_virtual_size: int | None = None,
           verifier: typing.Any = None) -> Downloaded:
    """Read ``blocks`` of ``image`` once into ``sinks``, checking them.

    :param max_virtual_size: stop as soon as the image is known to be
        larger (for qcow2, from its header) with ``ImageTooLarge``.
    :param verifier: a signature's verifier (``update(data)``,
        ``verify()``), fed the blocks that are hashed, and verified once
        the hash matched; None: no signature is verified.
    :returns: :class:`Downloaded` once every check passed; the sinks hold
        the image's bytes but are neither committed nor aborted.
    :raises ShortRead: the stream ended early (worth another attempt).
    """
    image_id = image.id
    expected_size = image.size
    promise = expected_hash(image)
    if promise is None:
        LOG.warning('Image %s has no hash in Glance; only its size is '
                    'verified', image_id)
    progress = ProgressLog('Download of image %s' % image_id, expected_size,
                           conf.glance.progress_interval)
    started = time.monotonic()
    inspector = image_format.StreamInspector()
    hasher = _HashThread(promise[0] if promise else None, verifier)
    inspecting, size = True, 0
    passing = [sink for sink in sinks if hasattr(sink, 'passed')]
    try:
        for block in image_body.as_blocks(blocks):
            hasher.update(block)
            end = size + block.length
            if expected_size is not None and end > expected_size:
                raise exception.ImageDataMismatch(
                    image_id=image_id,
                    reason=_('Glance sent more than its size of %d bytes') %
                    expected_size)
            detected = None
            if inspecting:
                inspector.feed(block.data)
                detected = _detected(inspector)
                # Raw only once every other inspector has read all it
                # needs (an ISO's signature is at 32 KiB): nothing later
                # can change the verdict, so stop paying for inspection.
                inspecting = str(detected) != 'raw'
            if not inspecting:
                # A raw image is as large as its bytes.
                _too_large(image_id, end, max_virtual_size)
            elif detected is not None:
                _too_large(image_id, detected.virtual_size, max_virtual_size)
            if not block.is_zero():
                for sink in sinks:
                    write_block = getattr(sink, 'write_block', None)
                    if write_block is not None:
                        write_block(block)
                    else:
                        _write_pieces(sink, block)
            size = end
            for sink in passing:  # a reader waits for zeros too
                sink.passed(end)
            progress(size)
        digest = hasher.hexdigest()
    finally:
        hasher.close()
        inspector.close()
    if expected_size is not None and size < expected_size:
        raise ShortRead('got %d of %d bytes' % (size, expected_size))
    if promise and digest != promise[1]:
        raise exception.ImageDataMismatch(
            image_id=image_id,
            reason=_("its data does not match Glance's %s hash") % promise[2])
    if verifier is not None:
        verifier.verify()
    checked = image_format.check_image(image_id, inspector,
                                       image.disk_format, conf)
    virtual_size = size if str(checked.format) in ('raw', 'iso') else \
        checked.virtual_size
    _too_large(image_id, virtual_size, max_virtual_size)
    elapsed = time.monotonic() - started
    LOG.info('Downloaded image %s: %d bytes in %.1fs (%.1f MB/s)', image_id,
             size, elapsed, size / units.Mi / max(elapsed, 1e-6))
    return Downloaded(size, checked.format, virtual_size)


# Worth another attempt from the first byte.
RETRIABLE = glance_errors.RETRIABLE + (ShortRead,
                                       exception.ImageDownloadInterrupted)


def _gave_up(image_id):
    def callback(retry_state):
        error = retry_state.outcome.exception()
        raise exception.ImageDownloadFailed(
            image_id=image_id,
            reason=_('gave up after %(n)d attempts: %(err)s') %
            {'n': retry_state.attempt_number, 'err': error}) from error
    return callback


def _before_sleep(image_id):
    def callback(retry_state):
        LOG.warning('Download of image %s failed (%s); starting it again in '
                    '%.0fs', image_id, retry_state.outcome.exception(),
                    retry_state.next_action.sleep)
    return callback


def attempts(image_id: str, retries: int) -> tenacity.Retrying:
    """Attempts (context managers) until one ends without error.

    An attempt swallows an error worth retrying (a dropped connection, a
    short read, a 5xx) and the next one starts after 1, 2, 4... seconds (at
    most 30); after ``retries`` retries it becomes ``ImageDownloadFailed``.
    Other errors pass at once::

        for attempt in attempts(image_id, retries):
            with attempt:
                ...
    """
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RETRIABLE),
        stop=tenacity.stop_after_attempt(retries + 1),
        wait=tenacity.wait_exponential(multiplier=1, max=30),
        before_sleep=_before_sleep(image_id),
        retry_error_callback=_gave_up(image_id))
