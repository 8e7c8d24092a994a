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

"""Glance's answers other than image data: bounded as a whole and in size,
over a real HTTP server on the loopback."""

import http.server
import threading
import time

from keystoneauth1 import session as ks_session

from imaged import exception
from imaged.image import bounded_http
from tests import base


class _Handler(http.server.BaseHTTPRequestHandler):

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"id": "x"}'
        if self.path == '/large':
            body = b'x' * (64 * 1024)
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        if self.path == '/undeclared':
            self.end_headers()
            self.wfile.write(b'y' * (64 * 1024))
            return
        self.send_header('Content-Length', str(
            1000 if self.path == '/trickle' else len(body)))
        self.end_headers()
        if self.path == '/trickle':
            # A byte every 0.2 s: no read ever waits long.
            for _ in range(1000):
                if self.server.stop.is_set():
                    return
                self.wfile.write(b' ')
                self.wfile.flush()
                time.sleep(0.2)
            return
        self.wfile.write(body)


class BoundedAdapterTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                      _Handler)
        self.server.daemon_threads = True
        self.server.stop = threading.Event()
        thread = threading.Thread(target=self.server.serve_forever)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(self.server.shutdown)
        self.addCleanup(self.server.stop.set)
        self.flags(request_timeout=1, max_response_bytes=16 * 1024,
                   group='glance')
        self.session = ks_session.Session(timeout=10)
        self.session.session.mount('http://', bounded_http.BoundedAdapter(
            self.conf, pool_maxsize=4))
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]

    def get(self, path, **kwargs):
        return self.session.get(self.url + path, authenticated=False,
                                **kwargs)

    def test_a_small_answer_is_read_whole_each_time(self):
        for _ in range(3):
            self.assertEqual({'id': 'x'}, self.get('/record').json())

    def test_a_trickling_glance_is_cut_off_at_the_request_timeout(self):
        started = time.monotonic()
        e = self.assertRaises(exception.Timeout, self.get, '/trickle')
        self.assertLess(time.monotonic() - started, 8)
        self.assertIn('GET /trickle', str(e))
        self.assertGreaterEqual(e.kwargs['seconds'], 1)

    def test_a_large_answer_is_refused_typed(self):
        for path in ('/large', '/undeclared'):
            e = self.assertRaises(exception.GlanceResponseTooLarge,
                                  self.get, path)
            self.assertIn(path, str(e))

    def test_a_streamed_answer_is_its_reader_s(self):
        resp = self.get('/large', stream=True)
        self.assertEqual(64 * 1024, len(resp.content))
