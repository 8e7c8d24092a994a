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

"""imaged.image.lazy_source on a real loopback socket, asked what librbd's
``http`` stream asks, while a download fills its spool (or stalls)."""

import http.client
import os
import socket
import tempfile
import threading
import time

from imaged import exception
from imaged.image import download
from imaged.image import lazy_source
from imaged.image import lazy_spool
from tests import base
from tests.unit import test_download

IMAGE = test_download.IMAGE
MiB = 1 << 20
TIMEOUT = 0.5


class LocalSourceTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(self._cleanup_dir)
        self.source = lazy_source.LocalSource(0, TIMEOUT)
        self.source.start()
        self.addCleanup(self.source.stop)
        self.paths = iter(os.path.join(self.dir, 'spool%d' % i)
                          for i in range(10))

    def _cleanup_dir(self):
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def serve(self, size):
        self.source.serve(IMAGE, size)
        return self.source.spool_maker(IMAGE, lambda: next(self.paths))

    def connect(self):
        conn = http.client.HTTPConnection(lazy_source.HOST, self.source.port,
                                          timeout=10)
        self.addCleanup(conn.close)
        return conn

    def ask(self, conn, method, first=None, last=None, path=None):
        headers = {} if first is None else {
            'Range': 'bytes=%d-%d' % (first, last)}
        conn.request(method, path or '/images/%s' % IMAGE, headers=headers)
        response = conn.getresponse()
        body = response.read()
        # Never "Connection: close": Pacific's librbd aborts on it.
        self.assertIsNone(response.getheader('Connection'))
        self.assertFalse(response.will_close)
        return response, body

    def test_head_answers_the_size_and_keeps_the_connection(self):
        self.serve(10 * MiB)
        conn = self.connect()
        response, body = self.ask(conn, 'HEAD')
        self.assertEqual(200, response.status)
        self.assertEqual(str(10 * MiB), response.getheader('Content-Length'))
        sock = conn.sock
        self.assertEqual(200, self.ask(conn, 'HEAD')[0].status)
        self.assertIs(sock, conn.sock)

    def test_a_range_is_served_once_the_download_has_passed_it(self):
        data = os.urandom(3 * MiB)
        spool = self.serve(len(data))(len(data))
        got = {}

        def reader():
            conn = self.connect()
            got['answer'] = self.ask(conn, 'GET', 2 * MiB, 2 * MiB + 4095)
        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.1)
        spool.write(0, data[:2 * MiB])
        self.assertTrue(thread.is_alive())  # its bytes have not come yet
        spool.write(2 * MiB, data[2 * MiB:])
        thread.join(5)
        response, body = got['answer']
        self.assertEqual(206, response.status)
        self.assertEqual('bytes %d-%d/%d' % (2 * MiB, 2 * MiB + 4095,
                                             len(data)),
                         response.getheader('Content-Range'))
        self.assertEqual(data[2 * MiB:2 * MiB + 4096], body)

    def test_a_stalled_download_gets_a_500_at_the_deadline_kept_alive(self):
        data = os.urandom(2 * MiB)
        spool = self.serve(len(data))(len(data))
        spool.write(0, data[:MiB])
        conn = self.connect()
        started = time.monotonic()
        response, _body = self.ask(conn, 'GET', MiB, MiB + 4095)
        waited = time.monotonic() - started
        self.assertEqual(500, response.status)
        self.assertGreaterEqual(waited, TIMEOUT)
        self.assertLess(waited, TIMEOUT + 3)
        self.assertEqual(1, self.source.refused)
        # The same connection serves the bytes once they came.
        sock = conn.sock
        spool.write(MiB, data[MiB:])
        response, body = self.ask(conn, 'GET', MiB, MiB + 4095)
        self.assertEqual(206, response.status)
        self.assertEqual(data[MiB:MiB + 4096], body)
        self.assertIs(sock, conn.sock)

    def test_zeros_the_stream_passed_are_served_before_the_end(self):
        data = b'\x01' * MiB + bytes(2 * MiB) + b'\x02' * MiB
        spool = self.serve(len(data))(len(data))
        image = test_download.record(data)
        blocks = iter([data[:3 * MiB]])  # the rest never comes
        self.assertRaises(download.ShortRead, download.stream, image,
                          blocks, [spool], self.conf)
        response, body = self.ask(self.connect(), 'GET', 2 * MiB,
                                  2 * MiB + 4095)
        self.assertEqual(206, response.status)
        self.assertEqual(bytes(4096), body)

    def test_a_failed_attempt_is_replaced_by_the_next(self):
        data = os.urandom(MiB)
        make = self.serve(len(data))
        first = make(len(data))
        got = {}

        def reader():
            got['answer'] = self.ask(self.connect(), 'GET', 0, 4095)
        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.05)
        first.abort('connection lost')
        second = make(len(data))
        second.write(0, data)
        thread.join(5)
        self.assertEqual(206, got['answer'][0].status)
        self.assertEqual(data[:4096], got['answer'][1])
        self.assertFalse(os.path.exists(first.path))

    def test_a_download_that_failed_for_good_gets_a_500_at_once(self):
        self.serve(MiB)(MiB)
        self.source.fail(IMAGE, 'its hash does not match')
        started = time.monotonic()
        response, _body = self.ask(self.connect(), 'GET', 0, 4095)
        self.assertEqual(500, response.status)
        self.assertLess(time.monotonic() - started, TIMEOUT)

    def test_unknown_images_and_bad_ranges_are_refused_kept_alive(self):
        self.serve(MiB)(MiB).commit(MiB)
        conn = self.connect()
        self.assertEqual(404, self.ask(conn, 'HEAD', path='/images/x%20y')[0]
                         .status)
        # A read of an image not served is an error, never a hole.
        self.assertEqual(500, self.ask(conn, 'GET', 0, 1,
                                       path='/images/other')[0].status)
        self.assertEqual(416, self.ask(conn, 'GET', MiB, MiB + 1)[0].status)
        self.assertEqual(416, self.ask(conn, 'GET')[0].status)
        response, body = self.ask(conn, 'GET', MiB - 2, MiB + 10)
        self.assertEqual(206, response.status)
        self.assertEqual(bytes(2), body)

    def test_the_answer_sets_tcp_nodelay(self):
        seen = []
        handler_setup = lazy_source._Handler.setup

        def setup(handler):
            handler_setup(handler)
            seen.append(handler.request.getsockopt(socket.IPPROTO_TCP,
                                                   socket.TCP_NODELAY))
        self.patch(lazy_source._Handler, 'setup', setup)
        self.serve(MiB)
        self.ask(self.connect(), 'HEAD')
        self.assertEqual(1, len(seen))
        self.assertTrue(seen[0])

    def test_the_url_names_the_image_and_loopback_only(self):
        self.assertEqual('http://127.0.0.1:%d/images/%s' %
                         (self.source.port, IMAGE), self.source.url(IMAGE))

    def test_forget_removes_the_spool(self):
        spool = self.serve(MiB)(MiB)
        self.source.forget(IMAGE)
        self.assertFalse(os.path.exists(spool.path))
        self.assertEqual(404, self.ask(self.connect(), 'HEAD')[0].status)

    def test_a_read_after_forget_is_an_error_not_a_hole(self):
        # librbd gives a guest zeros for a 404: a VM that opened the base
        # before it was published may still read through the source.
        self.serve(MiB)(MiB).commit(MiB)
        conn = self.connect()
        self.assertEqual(206, self.ask(conn, 'GET', 0, 4095)[0].status)
        self.source.forget(IMAGE)
        response, body = self.ask(conn, 'GET', 0, 4095)
        self.assertEqual((500, b''), (response.status, body))
        # (on the same connection, kept alive)
        self.assertEqual(500, self.ask(conn, 'GET', 4096, 8191)[0].status)

    def test_a_port_taken_is_a_typed_error(self):
        other = lazy_source.LocalSource(self.source.port, TIMEOUT)
        self.assertRaises(exception.LazySourceUnavailable, other.start)


class SpoolTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(tempfile.mkdtemp(), 'spool')
        self.addCleanup(os.rmdir, os.path.dirname(self.path))

    def test_more_than_the_size_is_a_mismatch(self):
        spool = lazy_spool.Spool(self.path, 10, IMAGE)
        self.addCleanup(spool.discard)
        self.assertRaises(exception.ImageDataMismatch, spool.write, 8,
                          b'abcd')

    def test_bytes_refused_at_the_end_are_still_served(self):
        spool = lazy_spool.Spool(self.path, 4, IMAGE)
        self.addCleanup(spool.discard)
        spool.write(0, b'abcd')
        spool.abort('its hash does not match')
        self.assertEqual(b'bc', spool.read(1, 2, time.monotonic() + 5))

    def test_a_write_after_discard_is_a_typed_error(self):
        spool = lazy_spool.Spool(self.path, 4, IMAGE)
        spool.discard()
        self.assertRaises(exception.CacheError, spool.write, 0, b'ab')

    def test_commit_of_another_size_fails_the_readers(self):
        spool = lazy_spool.Spool(self.path, 10, IMAGE)
        self.assertRaises(exception.ImageDataMismatch, spool.commit, 9)
        self.assertRaises(lazy_spool.SpoolFailed, spool.read, 0, 1,
                          time.monotonic() + 5)
        self.assertFalse(os.path.exists(self.path))
