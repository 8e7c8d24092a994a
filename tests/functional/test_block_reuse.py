"""Reused download buffers written by librbd on the real Ceph.

imaged leaves librbd's copy on, but an operator's ceph.conf may say
``rbd_disable_zero_copy_writes = false``: then librbd reads the caller's
buffer after ``aio_write`` returns, until the write completes; a buffer
refilled too early would land in the image. Two buffers for 64 MiB make the
body refill each one as soon as it is released.
"""

import http.server
import os
import threading

import fixtures
import rados
import rbd
import requests
import testtools
from oslo_config import fixture as config_fixture

from imaged.image import body
from imaged.storage import rbd_import
from tests.functional import base

SIZE = 64 << 20
DATA = os.urandom(SIZE)


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
        self.conf = self.useFixture(config_fixture.Config(base.CONF)).conf
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        self.url = 'http://127.0.0.1:%d/' % server.server_address[1]
        env = base.stack()
        self.cluster = rados.Rados(
            conffile=env['CEPH_CONF'],
            conf={'keyring': env['CEPH_ADMIN_KEYRING'], 'rbd_cache': 'false',
                  'rbd_disable_zero_copy_writes': 'false'})
        self.cluster.connect(timeout=10)
        self.addCleanup(self.cluster.shutdown)
        self.ioctx = self.cluster.open_ioctx(env['CEPH_VMS_POOL'])
        self.addCleanup(self.ioctx.close)
        self.name = 'func-block-reuse-%d' % os.getpid()
        rbd.RBD().create(self.ioctx, self.name, SIZE)
        self.addCleanup(rbd.RBD().remove, self.ioctx, self.name)

    def test_reused_buffers_land_intact_when_librbd_reads_them_late(self):
        response = requests.get(self.url, stream=True, timeout=(5, 30))
        self.addCleanup(response.close)
        with rbd.Image(self.ioctx, self.name) as image:
            writer = rbd_import.BlockWriter(image, SIZE, 8, self.name, 'vms')
            buffers = set()
            with body.ImageBody('img-1', response, self.conf, size=SIZE,
                                buffers=2) as blocks:
                for block in blocks:
                    buffers.add(id(block.buffer))
                    writer.write_block(block)
            writer.close()
            self.assertEqual(2, len(buffers))
            self.assertEqual(DATA, image.read(0, SIZE))
