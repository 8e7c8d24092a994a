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

"""Reused download buffers written by librbd on the real Ceph.

imaged leaves librbd's copy on, but an operator's ceph.conf may say
``rbd_disable_zero_copy_writes = false``: then librbd reads the caller's
buffer after ``aio_write`` returns, until the write completes; a buffer
refilled too early would land in the image. With librbd's copy (its
default) a buffer is refilled as soon as ``aio_write`` returns. Two buffers
for 64 MiB make the body refill each one as soon as it is released.
"""

import http.server
import os
import threading

import fixtures
from oslo_config import cfg
import rados
import rbd
import requests
import testtools

from imaged.conf import glance as glance_opts
from imaged.image import body
from imaged.storage import rbd_import
from tests.functional import base

SIZE = 64 << 20
DATA = base.random_raw(SIZE)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Length', str(SIZE))
        self.end_headers()
        for i in range(0, SIZE, 1 << 16):
            self.wfile.write(DATA[i:i + (1 << 16)])


class BufferReuseTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(300, gentle=True))
        base.configure_client()
        # Its own options: a fixture on the process's CONF would reset the
        # transport the test classes after this one call agents through.
        self.conf = cfg.ConfigOpts()
        glance_opts.register_opts(self.conf)
        self.conf([], project='imaged', default_config_files=[])
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        self.url = 'http://127.0.0.1:%d/' % server.server_address[1]
        self.ioctx = self.connect(zero_copy=True)
        self.name = 'func-block-reuse-%d' % os.getpid()
        rbd.RBD().create(self.ioctx, self.name, SIZE)
        self.addCleanup(rbd.RBD().remove, self.ioctx, self.name)

    def connect(self, zero_copy):
        env = base.stack()
        conf = {'keyring': env['CEPH_ADMIN_KEYRING'], 'rbd_cache': 'false'}
        if zero_copy:
            conf['rbd_disable_zero_copy_writes'] = 'false'
        cluster = rados.Rados(conffile=env['CEPH_CONF'], conf=conf)
        cluster.connect(timeout=10)
        self.addCleanup(cluster.shutdown)
        ioctx = cluster.open_ioctx(env['CEPH_VMS_POOL'])
        self.addCleanup(ioctx.close)
        return ioctx

    def download(self, ioctx):
        """Two buffers for 64 MiB, written as imaged writes them."""
        response = requests.get(self.url, stream=True, timeout=(5, 30))
        self.addCleanup(response.close)
        with rbd.Image(ioctx, self.name) as image:
            copies = rbd_import.librbd_copies_writes(image)
            writer = rbd_import.BlockWriter(image, SIZE, 8, self.name, 'vms',
                                            librbd_copies=copies)
            with body.ImageBody('img-1', response, self.conf, size=SIZE,
                                buffers=2) as blocks:
                for block in blocks:
                    writer.write_block(block)
            writer.close()
            return copies, image.read(0, SIZE)

    def test_zero_copy_writes_keep_their_buffers_until_written(self):
        self.assertEqual((False, DATA), self.download(self.ioctx))

    def test_buffers_librbd_copied_are_reused_at_once_and_land_intact(self):
        self.assertEqual((True, DATA),
                         self.download(self.connect(zero_copy=False)))
