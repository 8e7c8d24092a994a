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

"""qemu-img converting straight into a partial RBD image, on the real Ceph,
and qemu-img's wall-clock limit killing a real process."""

import os
import subprocess
import tempfile
import time

import fixtures
from oslo_config import cfg
import testtools

from imaged.conf import default as default_opts
from imaged.conf import glance as glance_opts
from imaged.conf import image_cache as image_cache_opts
from imaged.conf import rbd as rbd_opts
from imaged import exception
from imaged.image import format as image_format
from imaged.storage import partial
from imaged.storage import rbd as rbd_storage
from tests.functional import base

MiB = 1 << 20


def own_conf():
    """Options of these tests' own: an oslo config fixture on the process's
    CONF would reset the transport the later test classes call agents on."""
    conf = cfg.ConfigOpts()
    for module in (default_opts, glance_opts, image_cache_opts, rbd_opts):
        module.register_opts(conf)
    conf([], project='imaged', default_config_files=[])
    return conf


class ConvertIntoRBDTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(300, gentle=True))
        base.configure_client()
        self.conf = own_conf()
        env = base.stack()
        for key, value in (('ceph_conf', env['CEPH_CONF']),
                           ('user', env['CEPH_IMAGED_USER']),
                           ('keyring', env['CEPH_IMAGED_KEYRING']),
                           ('pool', env['CEPH_VMS_POOL']),
                           ('connect_timeout', 20)):
            self.conf.set_override(key, value, 'rbd')
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.driver = rbd_storage.RBDDriver(self.conf, 'func-format-rbd')
        self.ceph = base.Ceph()
        self.addCleanup(self.ceph.close)

    def qcow2(self, size, data_at):
        """A qcow2 of ``size`` with one random MiB at each of ``data_at``,
        and the raw bytes it holds."""
        raw = os.path.join(self.tmp, 'source.raw')
        with open(raw, 'wb') as f:
            for offset in data_at:
                f.seek(offset)
                f.write(base.random_raw(MiB))
            f.truncate(size)
        path = os.path.join(self.tmp, 'image.qcow2')
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                        raw, path], check=True, capture_output=True)
        with open(raw, 'rb') as f:
            return path, f.read()

    def test_a_qcow2_lands_in_the_partial_image_data_only(self):
        size, data_at = 64 * MiB, (0, 20 * MiB, 63 * MiB)
        path, expected = self.qcow2(size, data_at)
        name = 'func-format-%d_base' % os.getpid()
        # The partial image the download path makes, held open as it is.
        writer = self.driver.partials.new(
            partial.FinalImage(name, size, None, {}), size)
        self.addCleanup(self.ceph.remove, name)
        self.addCleanup(writer.abort)
        image_format.convert_into_rbd(
            'img-1', path, 'qcow2',
            self.driver.qemu_image(self.driver.pool, writer.part), self.conf)
        writer.commit(size)
        self.assertEqual(size, self.ceph.size(name))
        self.assertEqual(expected, self.ceph.read(name, 0, size))
        # Only the 4 MiB objects holding data were written.
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            with self.ceph.rbd.Image(ioctx, name, read_only=True) as image:
                extents = []
                image.diff_iterate(0, size, None, lambda o, n, e:
                                   extents.append((o, n, e)))
        written = sum(n for _o, n, exists in extents if exists)
        self.assertLessEqual(written, len(data_at) * 4 * MiB)
        self.assertGreater(written, 0)

    def test_a_target_it_cannot_open_is_a_storage_error(self):
        path, _expected = self.qcow2(8 * MiB, (0,))
        e = self.assertRaises(exception.StorageError,
                              image_format.convert_into_rbd, 'img-1', path,
                              'qcow2', self.driver.qemu_image(
                                  self.driver.pool,
                                  'func-format-missing-%d' % os.getpid()),
                              self.conf)
        self.assertIn(self.driver.pool, str(e))


class WallClockLimitTest(testtools.TestCase):
    """A qemu-img that hangs is killed at the limit, for real."""

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(60, gentle=True))
        base.configure_client()
        self.conf = own_conf()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(subprocess.run, ['rm', '-rf', self.tmp])

    def test_a_hanging_qemu_img_is_killed(self):
        pid_file = os.path.join(self.tmp, 'pid')
        fake = os.path.join(self.tmp, 'qemu-img')
        with open(fake, 'w') as f:
            f.write('#!/bin/sh\necho $$ > %s\nexec sleep 60\n' % pid_file)
        os.chmod(fake, 0o755)
        self.useFixture(fixtures.MonkeyPatch(
            'imaged.image.format.QEMU_IMG', fake))
        self.conf.set_override('convert_timeout', 2, 'image_cache')
        started = time.monotonic()
        e = self.assertRaises(exception.ImageUnacceptable,
                              image_format.convert_to_raw, 'img-1', '/src',
                              os.path.join(self.tmp, 'dst'), 'qcow2',
                              self.conf)
        self.assertLess(time.monotonic() - started, 30)
        self.assertIn('within 2 seconds', str(e))
        with open(pid_file) as f:
            pid = int(f.read())
        self.assertFalse(os.path.exists('/proc/%d' % pid) and
                         'Z' not in open('/proc/%d/stat' % pid).read()
                         .rsplit(')', 1)[1].split()[0])
