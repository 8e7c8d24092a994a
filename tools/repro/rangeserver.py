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

"""A tiny HTTP/1.1 file server with Range support and faults on demand.

``/usr/bin/python3 tools/repro/rangeserver.py DIR [PORT]`` serves the files
of DIR (HEAD with Content-Length, GET with ``Range: bytes=a-b`` answered
206, as librbd's migration ``http`` stream wants) on 127.0.0.1, prints
``port N`` and runs until killed. The reproducers of issue 29
(rbd_lazy_import.py) run it as a child process and steer it over HTTP:

``GET /_ctl/MODE`` sets how later requests for files are answered:
``ok``; ``stall`` (read the request, answer nothing until the mode
changes, then drop the connection); ``close`` (drop the connection
without an answer); ``error`` (HTTP 500); ``norange`` (200 with the whole
file, as a server without Range support); ``status:N`` (an empty answer
with HTTP status N), ``status:N:close`` (the same with ``Connection:
close``, as Glance answers 401); ``deadline:MS`` (GET only: a 500 on
the kept-alive connection MS ms late, as a proxy whose upstream stalled
should answer); ``slow:MS`` (answer each request MS ms
late). ``GET /_stats`` answers JSON: requests and body
bytes sent per method, and how many requests are stalled now.
"""

import http.server
import json
import os
import socketserver
import sys
import threading
import time

STATE = {'mode': 'ok', 'GET': 0, 'HEAD': 0, 'bytes': 0, 'stalled': 0,
         'ranges': []}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    # Headers and body go out in separate writes: without TCP_NODELAY,
    # Nagle's algorithm and the client's delayed ACK add 40 ms to every
    # small answer.
    disable_nagle_algorithm = True
    root = '.'

    def log_message(self, *args):
        pass

    def _control(self):
        if self.path.startswith('/_ctl/'):
            STATE['mode'] = self.path[len('/_ctl/'):]
            body = b'ok\n'
        else:
            with LOCK:
                body = json.dumps({k: v for k, v in STATE.items()
                                   if k != 'ranges'}).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fault(self):
        """Apply the fault mode; True if the request was consumed."""
        mode = STATE['mode']
        if mode == 'stall':
            with LOCK:
                STATE['stalled'] += 1
            try:
                while STATE['mode'] == 'stall':
                    time.sleep(0.05)
            finally:
                with LOCK:
                    STATE['stalled'] -= 1
            self.close_connection = True
            return True
        if mode == 'close':
            self.close_connection = True
            return True
        if mode == 'error':
            self.send_response(500)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return True
        if mode.startswith('status:'):
            code, _, close = mode[7:].partition(':')
            self.send_response(int(code))
            self.send_header('Content-Length', '0')
            if close:
                self.send_header('Connection', 'close')
                self.close_connection = True
            self.end_headers()
            return True
        if mode.startswith('deadline:') and self.command == 'GET':
            # what a proxy in front of a stalled upstream should do: give
            # up after MS ms with a 500, keeping the connection
            time.sleep(int(mode[9:]) / 1000.0)
            self.send_response(500)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return True
        if mode.startswith('slow:'):
            time.sleep(int(mode[5:]) / 1000.0)
        return False

    def _serve(self, head):
        if self.path.startswith('/_'):
            return self._control()
        with LOCK:
            STATE[self.command] += 1
        if self._fault():
            return
        path = os.path.join(self.root, os.path.basename(self.path))
        try:
            size = os.path.getsize(path)
        except OSError:
            self.send_response(404)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        start, end = 0, size - 1
        rng = self.headers.get('Range')
        partial = bool(rng) and STATE['mode'] != 'norange'
        if partial:
            first, _, last = rng.split('=', 1)[1].partition('-')
            start, end = int(first), min(int(last or size - 1), size - 1)
            self.send_response(206)
            self.send_header('Content-Range',
                             'bytes %d-%d/%d' % (start, end, size))
        else:
            self.send_response(200)
        self.send_header('Accept-Ranges', 'bytes')
        self.send_header('Content-Length', str(end - start + 1))
        self.end_headers()
        if head:
            return
        with open(path, 'rb') as f:
            f.seek(start)
            left = end - start + 1
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
        with LOCK:
            STATE['bytes'] += end - start + 1
            if partial:
                STATE['ranges'].append((start, end - start + 1))

    def do_GET(self):
        self._serve(False)

    def do_HEAD(self):
        self._serve(True)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv):
    Handler.root = argv[1]
    server = Server(('127.0.0.1', int(argv[2]) if len(argv) > 2 else 0),
                    Handler)
    print('port', server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == '__main__':
    sys.exit(main(sys.argv))
