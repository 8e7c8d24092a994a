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

"""A TCP proxy in front of Glance that slows, holds or cuts image data:
the fault tests' and the functional tests' way to make a download take
the time a test needs."""

import contextlib
import socket
import threading
import time
import urllib.parse

# The longest a held response waits for release() (seconds): a test that
# fails before releasing leaves no download held for ever.
HOLD_LIMIT = 300


class GlanceProxy:
    """A TCP proxy in front of Glance that can slow, hold or cut image data.

    Only responses to ``GET /v2/images/<id>/file`` are touched:
    ``hold_after`` (bytes) stops each such response once that much of it
    went through, until :meth:`release` (or :data:`HOLD_LIMIT`);
    ``rate`` (bytes per second) throttles them (after a hold, counted
    from its release); ``cut_after`` (bytes) closes the connection once
    that much of the response went through. ``served`` counts the bytes
    of such responses sent so far; ``requests`` keeps the request line of
    every request.
    """

    def __init__(self, endpoint):
        parsed = urllib.parse.urlsplit(endpoint)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.path = parsed.path.rstrip('/')
        self.rate = None
        self.cut_after = None
        self.hold_after = None
        self._released = threading.Event()
        self.served = 0
        self.requests = []
        self._listener = socket.socket()
        self._listener.bind(('127.0.0.1', 0))
        self._listener.listen(64)
        self._stopped = False
        self._sockets = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self):
        return 'http://127.0.0.1:%d%s' % (self._listener.getsockname()[1],
                                          self.path)

    def data_requests(self, image_id):
        """How many times the image's data was asked for through us."""
        return self.requests.count('GET %s/v2/images/%s/file HTTP/1.1' % (
            self.path, image_id))

    def hold(self, after):
        """Hold every image data response after ``after`` bytes of it
        until :meth:`release`."""
        self._released.clear()
        self.hold_after = after

    def release(self):
        """Let the held responses (and later ones) go on."""
        self._released.set()

    def heal(self):
        self.rate = self.cut_after = self.hold_after = None
        self._released.set()

    def close(self):
        self._stopped = True
        self._released.set()
        self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.close()

    def _track(self, sock):
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _accept(self):
        while not self._stopped:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(self._track(client),),
                             daemon=True).start()

    def _serve(self, client):
        try:
            upstream = self._track(socket.create_connection(self.upstream,
                                                            timeout=10))
        except OSError:
            client.close()  # as if Glance itself were not listening
            return
        upstream.settimeout(None)
        request = client.recv(65536)
        self.requests.append(request.split(b'\r\n', 1)[0].decode(
            'latin-1'))
        data_request = request.split(b'\r\n', 1)[0].endswith(
            b'/file HTTP/1.1') and request.startswith(b'GET ')
        upstream.sendall(request)
        threading.Thread(target=self._pump, args=(client, upstream),
                         daemon=True).start()
        try:
            self._pump(upstream, client, data_request)
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def _pump(self, source, dest, data_request=False):
        sent = 0
        paced_from, started = 0, time.monotonic()  # where the rate counts
        held = False
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                if data_request and self.cut_after is not None and \
                        sent + len(chunk) > self.cut_after:
                    dest.sendall(chunk[:max(self.cut_after - sent, 0)])
                    break
                hold_after = self.hold_after
                if data_request and not held and hold_after is not None \
                        and sent + len(chunk) > hold_after:
                    before = max(hold_after - sent, 0)
                    dest.sendall(chunk[:before])
                    sent += before
                    self.served += before
                    chunk = chunk[before:]
                    self._released.wait(HOLD_LIMIT)
                    held = True
                    paced_from, started = sent, time.monotonic()
                dest.sendall(chunk)
                sent += len(chunk)
                if data_request:
                    self.served += len(chunk)
                    if self.rate:
                        ahead = (sent - paced_from) / self.rate - (
                            time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
