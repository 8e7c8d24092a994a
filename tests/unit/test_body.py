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

"""imaged.image.body against a real HTTP server on a loopback socket.

The server misbehaves for real: it stalls, drops the connection, ends
short, sends too much, trickles; nothing of the socket is faked.
"""

import http.server
import os
import socket
import struct
import threading
import time

import requests

from imaged import exception
from imaged.image import body
from imaged.image import glance
from tests import base

IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'
DATA = os.urandom(300 * 1024 + 123)
BLOCK = 64 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def do_GET(self):
        how = self.path.rsplit('/', 2)[-2] if self.path.endswith('/file') \
            else self.path.strip('/')
        if how == 'missing':
            self.send_response(404)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        length = len(DATA) if how != 'drop' else len(DATA) + 1000
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(length))
        if how == 'gzip':
            self.send_header('Content-Encoding', 'gzip')
        self.end_headers()
        if how == 'stall':
            self.wfile.write(DATA[:100000])
            self.wfile.flush()
            self.server.release.wait(10)
        elif how == 'reset':  # an RST: the peer's read fails
            self.wfile.write(DATA[:100000])
            self.wfile.flush()
            time.sleep(0.2)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack('ii', 1, 0))
            self.connection.close()
        elif how == 'trickle':
            for i in range(0, len(DATA), 1024):
                if self.server.release.wait(0.05):
                    break
                self.wfile.write(DATA[i:i + 1024])
                self.wfile.flush()
        else:  # 'drop' closes early: Content-Length promised more
            self.wfile.write(DATA)
        self.close_connection = True


class BodyTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                      _Handler)
        self.server.daemon_threads = True
        self.server.release = threading.Event()
        thread = threading.Thread(target=self.server.serve_forever,
                                  daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.addCleanup(self.server.release.set)
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        self.flags(download_stall_timeout=1, group='glance')

    def body(self, how='ok', size=len(DATA), **kwargs):
        response = requests.get('%s/%s' % (self.url, how), stream=True,
                                timeout=(5, 1))
        self.addCleanup(response.close)
        kwargs.setdefault('block_size', BLOCK)
        return body.ImageBody(IMAGE, response, self.conf, size=size,
                              **kwargs)

    def test_blocks_hold_the_body_in_order_in_aligned_blocks(self):
        blocks = [(b.offset, bytes(b.data)) for b in self.body()]
        self.assertEqual(list(range(0, len(DATA), BLOCK)),
                         [offset for offset, _data in blocks])
        self.assertEqual(DATA, b''.join(data for _o, data in blocks))
        self.assertEqual(len(DATA) % BLOCK, len(blocks[-1][1]))

    def test_full_blocks_are_bytearrays_librbd_takes_without_a_copy(self):
        first = next(iter(self.body()))
        self.assertIs(first.buffer, first.data)
        self.assertIsInstance(first.data, bytearray)

    def test_a_held_buffer_is_never_refilled(self):
        reader = self.body(buffers=8)
        held = [b.hold() for b in reader]
        buffers = {id(b.buffer) for b in held}
        self.assertEqual(len(held), len(buffers))  # each its own
        for b in held:
            self.assertEqual(DATA[b.offset:b.offset + b.length],
                             bytes(b.data))

    def test_released_buffers_are_reused(self):
        seen = {id(b.buffer) for b in self.body(buffers=2)}
        self.assertLessEqual(len(seen), 2)

    def test_no_buffer_freed_in_time_fails_the_download(self):
        reader = self.body(buffers=1)
        next(reader).hold()  # a write that never completes
        e = self.assertRaises(exception.ImageDownloadFailed, next, reader)
        self.assertNotIsInstance(e, exception.ImageDownloadInterrupted)
        self.assertIn(IMAGE, str(e))
        self.assertIn('did not keep up', str(e))

    def test_a_stall_interrupts_the_attempt(self):
        started = time.monotonic()
        e = self.assertRaises(exception.ImageDownloadInterrupted, list,
                              self.body('stall'))
        self.assertIn(IMAGE, str(e))
        self.assertIn('no data for 1 seconds', str(e))
        self.assertLess(time.monotonic() - started, 8)

    def test_a_dropped_connection_interrupts_the_attempt(self):
        e = self.assertRaises(exception.ImageDownloadInterrupted, list,
                              self.body('drop', size=None))
        self.assertIn('got %d of %d bytes' % (len(DATA), len(DATA) + 1000),
                      str(e))

    def test_a_reset_connection_interrupts_the_attempt(self):
        e = self.assertRaises(exception.ImageDownloadInterrupted, list,
                              self.body('reset'))
        self.assertIn('connection was lost after', str(e))

    def test_a_short_body_never_hands_out_its_last_block(self):
        handed = []
        e = self.assertRaises(exception.ImageDownloadInterrupted,
                              lambda: [handed.append(b.offset)
                                       for b in self.body(size=len(DATA) +
                                                          1)])
        self.assertIn('got %d of %d bytes' % (len(DATA), len(DATA) + 1),
                      str(e))
        self.assertNotIn(len(DATA) - len(DATA) % BLOCK, handed)

    def test_more_than_the_size_is_unacceptable(self):
        e = self.assertRaises(exception.ImageUnacceptable, list,
                              self.body(size=len(DATA) - 1))
        self.assertIn('more bytes than its size', str(e))

    def test_the_deadline_bounds_a_trickle(self):
        reader = self.body('trickle', deadline=time.monotonic() + 0.5)
        e = self.assertRaises(exception.ImageDownloadFailed, list, reader)
        self.assertNotIsInstance(e, exception.ImageDownloadInterrupted)
        self.assertIn('download_timeout', str(e))

    def test_reads_beneath_urllib3_unless_the_body_is_encoded(self):
        plain = self.body()
        self.assertIs(plain._response.raw._fp.readinto.__func__,
                      plain._readinto.__func__)
        encoded = self.body('gzip')
        self.assertEqual(encoded._response.raw.readinto, encoded._readinto)

    def test_zero_blocks_are_told_apart(self):
        zeros, data = bytearray(BLOCK), bytearray(BLOCK)
        data[-1] = 1
        self.assertTrue(body.Block(zeros, 0, BLOCK, None).is_zero())
        self.assertFalse(body.Block(data, 0, BLOCK, None).is_zero())
        self.assertTrue(body.Block(data, 0, BLOCK - 1, None).is_zero())

    def test_open_through_glance_api(self):
        self.flags(endpoint_override=self.url, num_retries=0,
                   group='glance')
        api = glance.GlanceAPI(self.conf)
        with body.ImageBody.open(api, None, IMAGE, self.conf,
                                 size=len(DATA)) as reader:
            self.assertEqual(DATA, b''.join(bytes(b.data) for b in reader))
        self.assertRaises(exception.ImageNotFound, api.open_response, None,
                          'missing')


class AsBlocksTest(base.TestCase):

    def test_byte_strings_are_joined_into_blocks(self):
        pieces = [DATA[i:i + 1000] for i in range(0, len(DATA), 1000)]
        blocks = list(body.as_blocks(iter(pieces), block_size=BLOCK))
        self.assertEqual(list(range(0, len(DATA), BLOCK)),
                         [b.offset for b in blocks])
        self.assertEqual(DATA, b''.join(bytes(b.data) for b in blocks))

    def test_blocks_pass_as_they_are(self):
        block = body.Block(bytearray(10), 0, 10, None)
        self.assertEqual([block], list(body.as_blocks([block])))
