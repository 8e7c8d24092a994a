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

"""The baselines that are more than one client call: the naive way to make
a disk (download, convert, ``rbd import``), the three parts of a download's
floor (Glance alone, SHA-512 alone, ``rbd import`` alone) and a trivial
oslo.messaging server in a child process.
"""

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import oslo_messaging as messaging

from imaged import rpc
from tests.functional import base
from tools.bench.config import REPO
from tools.bench.sizes import GiB
from tools.bench.sizes import MiB


def naive_create(bench, made, image_id, size_gb, disk_format='raw'):
    """Seconds for the naive way: download, (convert,) rbd import."""
    name = made.baseline_name()
    tmp = tempfile.mkdtemp(dir=bench.workdir)
    try:
        started = time.monotonic()
        path = os.path.join(tmp, 'download')
        bench.glance.download(image_id, path)
        if disk_format != 'raw':
            raw = os.path.join(tmp, 'raw')
            subprocess.run(['qemu-img', 'convert', '-f', disk_format,
                            '-O', 'raw', path, raw], check=True,
                           capture_output=True, timeout=1800)
            os.unlink(path)
            path = raw
        bench.ceph.import_file(path, name, size_gb * GiB)
        return time.monotonic() - started
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def glance_alone(bench, image_id, size):
    """Seconds for Glance to send the image, read and dropped, unverified.
    """
    started = time.monotonic()
    got = bench.glance.read_all(image_id)
    seconds = time.monotonic() - started
    if got != size:
        raise RuntimeError('Glance sent %d of %d bytes of image %s' % (
            got, size, image_id))
    return seconds


def sha512_alone(data):
    """Seconds of SHA-512 (Glance's ``os_hash_algo``) over the bytes of
    ``data()``, only the hashing counted."""
    hasher, spent = hashlib.sha512(), 0.0
    buf = bytearray(4 * MiB)
    with contextlib.closing(data()) as stream:
        while n := stream.readinto(buf):
            view = memoryview(buf)[:n]
            started = time.perf_counter()
            hasher.update(view)
            spent += time.perf_counter() - started
            view.release()
    return spent


def import_alone(bench, made, path, size_gb):
    """Seconds of ``rbd import`` (and resize) of the same bytes from a local
    file (in the page cache, as the naive way's download is)."""
    name = made.baseline_name()
    started = time.monotonic()
    bench.ceph.import_file(path, name, size_gb * GiB)
    return time.monotonic() - started


class EchoServer:
    """A trivial oslo.messaging server in a child process: the RPC baseline.
    """

    def __init__(self, run_id):
        self.target = messaging.Target(topic='imaged-bench-echo',
                                       server='bench-%s' % run_id)
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'tools.bench', '--serve-echo',
             self.target.topic, self.target.server],
            cwd=REPO, stdout=subprocess.DEVNULL, start_new_session=True)
        self.client = messaging.get_rpc_client(
            rpc.get_transport(base.CONF), self.target)

    def wait_until_serving(self, timeout=60):
        fast = self.client.prepare(timeout=2)

        def answers():
            if self.process.poll() is not None:
                raise RuntimeError('the echo server exited with %s' %
                                   self.process.returncode)
            with contextlib.suppress(messaging.MessagingTimeout):
                return fast.call({}, 'ping') == 'pong'
        base.wait_for(answers, timeout, what='the echo RPC server')

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class EchoEndpoint:
    target = messaging.Target(version='1.0')

    def ping(self, ctxt):
        return 'pong'


def serve_echo(topic, server):
    """``--serve-echo``: answer ``ping`` until SIGTERM."""
    base.configure_client()
    srv = messaging.get_rpc_server(
        rpc.get_transport(base.CONF),
        messaging.Target(topic=topic, server=server), [EchoEndpoint()],
        access_policy=messaging.DefaultRPCAccessPolicy)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())
    srv.start()
    stop.wait()
    srv.stop()
    srv.wait()
    rpc.cleanup()
    return 0
