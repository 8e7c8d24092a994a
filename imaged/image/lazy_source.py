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

"""The local source librbd reads a lazy base's bytes from.

librbd's ``http`` stream (an import-only migration's source) sends no
header but ``Range``, takes the image's size from ``HEAD``, never times
out, retries a dropped connection forever and, on Pacific, aborts the
process on an error answered with ``Connection: close``
(doc/source/contributor/lazy-first-disk.rst). Glance cannot be that source.
So each agent serves it from loopback:

* a :class:`imaged.image.lazy_spool.Spool` is a download sink: the image's
  one sequential download from Glance (with the format inspector, the hash
  and the signature seeing every byte in order, as any download) is
  written into a local file, and a reader waits until the bytes it asks
  for have passed;
* :class:`LocalSource` is the HTTP/1.1 server: ``HEAD`` answers the size,
  a ``Range`` GET the spooled bytes, once they are there; bytes that do not
  come within ``[image_cache] lazy_source_timeout`` get a 500, on a
  connection kept alive (a VM's read fails with EIO instead of hanging).
  It never answers ``Connection: close``, and sets ``TCP_NODELAY`` (40 ms
  per read otherwise: Nagle against librbd's delayed ACK).

The URL names the image id and nothing else: it is kept in clear in the
base's RBD header.
"""

import http.server
import re
import socket
import threading
import time

from oslo_log import log as logging

from imaged import exception
from imaged.i18n import _
from imaged.image import lazy_spool

LOG = logging.getLogger(__name__)

HOST = '127.0.0.1'
_PATH = re.compile(r'^/images/([0-9A-Za-z-]{1,64})$')
_RANGE = re.compile(r'^bytes=(\d+)-(\d*)$')
# The largest range answered at once (librbd asks for one object, 4 MiB).
MAX_RANGE = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


class _Served:
    """An image the source serves: its size and its current spool (a new
    one at each attempt of the download)."""

    def __init__(self, image_id, size):
        self.image_id, self.size = image_id, size
        self.spool = None
        self.error = None  # why no byte will ever come
        self.cond = threading.Condition()

    def current(self, deadline):
        """The spool of the download's current attempt (a failed attempt's
        is replaced by the next one's); None at the deadline."""
        with self.cond:
            while self.error is None and \
                    (self.spool is None or self.spool.failed is not None):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                # A failed spool does not notify: look again soon.
                self.cond.wait(min(left, 0.2))
            if self.error is not None:
                raise lazy_spool.SpoolFailed(self.error)
            return self.spool

    def read(self, offset, length, deadline):
        """Bytes of the image, from whichever attempt brings them first
        before ``deadline``.

        :raises lazy_spool.SpoolFailed: they did not come in time, or
            never will.
        """
        while True:
            spool = self.current(deadline)
            if spool is None:
                raise lazy_spool.SpoolFailed(
                    _('no download of image %s brought the bytes in time') %
                    self.image_id)
            try:
                return spool.read(offset, length, deadline)
            except lazy_spool.SpoolFailed:
                if spool.failed is None or time.monotonic() >= deadline:
                    raise


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'imaged-lazy-source'
    sys_version = ''

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):
        LOG.debug('Lazy source: ' + format, *args)

    def _answer(self, code, headers=(), body=b''):
        # One write for headers and body, Content-Length always, and never
        # "Connection: close": Pacific's librbd aborts on it.
        lines = ['HTTP/1.1 %d %s' % (code, self.responses.get(
            code, ('',))[0]), 'Content-Length: %d' % len(body)]
        lines.extend('%s: %s' % h for h in headers)
        self.wfile.write(('\r\n'.join(lines) + '\r\n\r\n').encode('ascii') +
                         bytes(body))
        self.close_connection = False

    def _served(self, missing):
        """The image asked for, else None (answered ``missing``)."""
        match = _PATH.match(self.path)
        served = match and self.server.source.served(match.group(1))
        if not served:
            self._answer(missing)
        return served

    def do_HEAD(self):
        # An image not served cannot be opened: librbd's open fails.
        served = self._served(404)
        if served:
            lines = ['HTTP/1.1 200 OK', 'Content-Length: %d' % served.size,
                     'Accept-Ranges: bytes']
            self.wfile.write(('\r\n'.join(lines) +
                              '\r\n\r\n').encode('ascii'))
            self.close_connection = False

    def do_GET(self):
        # Not 404: librbd reads a 404 as a hole and gives the guest
        # zeros. A client that opened the image while it was served (a
        # VM reading across the publish, before it refreshed; one left
        # by a killed agent) gets an I/O error instead.
        served = self._served(500)
        if not served:
            LOG.warning('Lazy source: %s of %s, an image not served (any '
                        'more): I/O error', self.headers.get('Range'),
                        self.path)
            return
        match = _RANGE.match(self.headers.get('Range', ''))
        if not match:
            self._answer(416, [('Content-Range', 'bytes */%d' % served.size)])
            return
        start = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else served.size - 1
        last = min(last, served.size - 1)
        if start > last or last - start + 1 > MAX_RANGE:
            self._answer(416, [('Content-Range', 'bytes */%d' % served.size)])
            return
        source = self.server.source
        deadline = time.monotonic() + source.timeout
        try:
            data = served.read(start, last - start + 1, deadline)
        except (lazy_spool.SpoolFailed, OSError) as e:
            source.refused += 1
            LOG.warning('Lazy source: bytes %d-%d of image %s not served: '
                        '%s', start, last, served.image_id, e)
            self._answer(500)
            return
        source.bytes_served += len(data)
        self._answer(206, [('Content-Range', 'bytes %d-%d/%d' % (
            start, start + len(data) - 1, served.size))], data)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class LocalSource:
    """This agent's loopback HTTP source of the images it spools.

    :param port: the loopback port (0: any free one, for tests).
    :param timeout: seconds a read waits for bytes not yet downloaded.
    """

    def __init__(self, port, timeout):
        self.port, self.timeout = port, timeout
        self.bytes_served = 0
        self.refused = 0
        self._served = {}
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    def start(self):
        """Listen (idempotent).

        :raises LazySourceUnavailable: the port is taken.
        """
        with self._lock:
            if self._server is not None:
                return
            try:
                server = _Server((HOST, self.port), _Handler)
            except OSError as e:
                raise exception.LazySourceUnavailable(
                    address='%s:%d' % (HOST, self.port), reason=e)
            server.source = self
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={'poll_interval': 0.5},
                name='lazy-source', daemon=True)
            self._thread.start()
        LOG.info('Lazy source listening on %s:%d', HOST, self.port)

    def stop(self):
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5)

    def url(self, image_id):
        return 'http://%s:%d/images/%s' % (HOST, self.port, image_id)

    def served(self, image_id):
        with self._lock:
            return self._served.get(image_id)

    def serve(self, image_id, size):
        """Serve ``image_id`` (``size`` bytes) from now on."""
        with self._lock:
            if image_id not in self._served:
                self._served[image_id] = _Served(image_id, size)

    def spool_maker(self, image_id, path_of):
        """A download's sink maker: ``make(size)`` a new
        :class:`lazy_spool.Spool` at ``path_of()``, the one served from now
        on."""
        def make(_size):
            served = self.served(image_id)
            if served is None:
                raise exception.InternalError(
                    operation=_('spooling image %s') % image_id,
                    reason=_('it is not served'))
            spool = lazy_spool.Spool(path_of(), served.size, image_id)
            with served.cond:
                old, served.spool = served.spool, spool
                served.cond.notify_all()
            if old is not None and old is not spool:
                old.discard()
            return spool
        return make

    def head(self, image_id, length, deadline):
        """The first ``length`` bytes of ``image_id`` once the download has
        passed them, or None if they did not come before ``deadline``."""
        served = self.served(image_id)
        if served is None:
            return None
        try:
            return served.read(0, length, deadline)
        except lazy_spool.SpoolFailed:
            return None

    def fail(self, image_id, reason):
        """No byte of ``image_id`` will come: readers get a 500 at once."""
        served = self.served(image_id)
        if served is None:
            return
        with served.cond:
            served.error = reason
            served.cond.notify_all()
        if served.spool is not None:
            served.spool.abort(reason)

    def forget(self, image_id):
        """Stop serving ``image_id``; its spool goes."""
        with self._lock:
            served = self._served.pop(image_id, None)
        if served is not None and served.spool is not None:
            served.spool.discard()
