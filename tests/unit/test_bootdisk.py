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

"""The boot test's disk: the kernel modules it packs, on both releases;
what a guest's console must report."""

import gzip
import lzma
import os

import fixtures

from imaged.tempest_plugin.scenario import bootdisk
from tests import base


class KernelModuleTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.release_dir = self.useFixture(fixtures.TempDir()).path

    def ship(self, relpath, data):
        path = os.path.join(self.release_dir, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)

    def test_a_plain_module_is_taken_as_it_is(self):  # Debian 12's kernel
        self.ship('kernel/drivers/block/virtio_blk.ko', b'\x7fELF blk')
        self.assertEqual(b'\x7fELF blk', bootdisk._module(
            self.release_dir, 'drivers/block', 'virtio_blk'))

    def test_an_xz_module_is_packed_uncompressed(self):  # Debian 13's
        self.ship('kernel/drivers/block/virtio_blk.ko.xz',
                  lzma.compress(b'\x7fELF blk', format=lzma.FORMAT_XZ))
        self.assertEqual(b'\x7fELF blk', bootdisk._module(
            self.release_dir, 'drivers/block', 'virtio_blk'))

    def test_a_gzip_module_is_packed_uncompressed(self):
        self.ship('kernel/drivers/virtio/virtio.ko.gz',
                  gzip.compress(b'\x7fELF virtio'))
        self.assertEqual(b'\x7fELF virtio', bootdisk._module(
            self.release_dir, 'drivers/virtio', 'virtio'))

    def test_a_built_in_module_is_skipped(self):  # Debian 13's virtio core
        self.ship('modules.builtin',
                  b'kernel/drivers/virtio/virtio.ko\n'
                  b'kernel/drivers/virtio/virtio_ring.ko\n')
        self.assertIsNone(bootdisk._module(
            self.release_dir, 'drivers/virtio', 'virtio_ring'))

    def test_a_module_neither_shipped_nor_built_in_is_a_build_error(self):
        self.ship('modules.builtin', b'kernel/drivers/virtio/virtio.ko\n')
        e = self.assertRaises(bootdisk.BuildError, bootdisk._module,
                              self.release_dir, 'drivers/block', 'virtio_blk')
        self.assertIn('drivers/block/virtio_blk', str(e))


class MissingReportsTest(base.TestCase):

    DISK = 2 * 1024 ** 3

    def booted(self):
        return (['init started, kernel 6.1.0-57-cloud-amd64, uptime 3.27',
                 'disk vda sectors %d' % (self.DISK // 512)] +
                ['wrote marker at %d' % o for o in bootdisk.MARKER_OFFSETS] +
                ['powering off, uptime 3.87'])

    def test_a_whole_boot_lacks_nothing(self):
        self.assertEqual([], bootdisk.missing_reports(self.booted(),
                                                      self.DISK))

    def test_a_disk_of_another_size_is_missing(self):
        self.assertEqual(['disk vda sectors %d' % (self.DISK // 1024)],
                         bootdisk.missing_reports(self.booted(),
                                                  self.DISK // 2))

    def test_a_failed_write_is_a_missing_marker(self):
        reports = [r.replace('wrote marker at %d' % bootdisk.MARKER_OFFSETS[1],
                             'write at %d failed' % bootdisk.MARKER_OFFSETS[1])
                   for r in self.booted()]
        self.assertEqual(
            ['wrote marker at %d' % bootdisk.MARKER_OFFSETS[1]],
            bootdisk.missing_reports(reports, self.DISK))

    def test_a_guest_that_never_ran_its_init_lacks_everything(self):
        self.assertEqual(
            ['init started', 'disk vda sectors %d' % (self.DISK // 512)] +
            ['wrote marker at %d' % o for o in bootdisk.MARKER_OFFSETS] +
            ['powering off'], bootdisk.missing_reports([], self.DISK))
