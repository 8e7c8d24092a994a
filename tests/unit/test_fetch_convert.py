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

import os
import shutil
from unittest import mock

from imaged import context
from imaged import exception
from imaged.image import format as image_format
from imaged.imagecache import files as image_cache
from imaged.imagecache import manager as imagecache_manager
from imaged import rootdisk
from imaged.storage import rbd as rbd_storage
from tests import base
from tests.unit import fakes
from tests.unit import images

IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'


class ConvertedCacheTest(images.ImageFilesMixin, base.TestCase):
    """Non-raw images are converted once and only the raw file is kept."""

    def setUp(self):
        super().setUp()
        self.glance = fakes.FakeGlance()
        self.cache = image_cache.BaseFiles(self.conf)
        self.cache.prepare()
        cluster = fakes.FakeCluster()
        storage = rbd_storage.RBDDriver(
            self.conf, 'test-host', rados_module=cluster.rados,
            rbd_module=cluster.rbd)
        self.image_cache = imagecache_manager.ImageCacheManager(
            self.conf, self.glance, storage, self.cache)

    def _fetch(self, name, disk_format):
        with open(self.images[name], 'rb') as f:
            self.glance.add(IMAGE, f.read(), disk_format=disk_format)
        return self._enter()

    def test_qcow2_is_converted_and_only_raw_kept(self):
        def fake_convert(image_id, source, dest, disk_format, conf, **kw):
            self.assertEqual('qcow2', disk_format)
            with open(dest, 'wb') as f:
                f.truncate(10 * 1024 * 1024)
        with mock.patch.object(image_format, 'convert_to_raw', fake_convert):
            base = self._fetch('qcow2', 'qcow2')
        self.assertEqual(10 * 1024 * 1024, base)
        self.assertEqual([], os.listdir(self.cache.tmp_dir))

    def test_backing_file_never_reaches_qemu_img(self):
        with mock.patch.object(image_format, 'convert_to_raw') as convert:
            self.assertRaises(exception.ImageUnacceptable, self._fetch,
                              'qcow2-backing', 'qcow2')
        convert.assert_not_called()
        self.assertEqual([], self.cache.list())

    def test_failed_conversion_leaves_nothing(self):
        def failing(image_id, source, dest, disk_format, conf, **kw):
            shutil.copy(source, dest)
            raise exception.ImageUnacceptable(image_id=image_id,
                                              reason='boom')
        with mock.patch.object(image_format, 'convert_to_raw', failing):
            self.assertRaises(exception.ImageUnacceptable, self._fetch,
                              'qcow2', 'qcow2')
        self.assertEqual([], self.cache.list())
        self.assertEqual([], os.listdir(self.cache.tmp_dir))

    def test_qcow2_too_large_for_the_disk_stops_at_its_header(self):
        with open(self.images['qcow2'], 'rb') as f:
            self.glance.add(IMAGE, f.read() + bytes(8 << 20),
                            disk_format='qcow2')
        with mock.patch.object(image_format, 'convert_to_raw') as convert:
            e = self.assertRaises(
                exception.ImageTooLarge, self._enter, max_virtual_size=4096)
        self.assertIn('10485760', str(e))
        convert.assert_not_called()
        self.assertEqual([], self.cache.list())
        self.assertEqual([], os.listdir(self.cache.tmp_dir))

    def test_what_it_expands_to_must_fit_the_cache_not_what_glance_keeps(
            self):
        # The 10 MiB qcow2 Glance keeps in a few KiB; 5 MiB left here.
        real = os.statvfs(self.cache.base_dir)
        free = os.statvfs_result(
            (real.f_bsize, 4096, 5 * 256, 5 * 256, 5 * 256) + tuple(real)[5:])
        with mock.patch.object(image_format, 'convert_to_raw') as convert, \
                mock.patch('os.statvfs', return_value=free):
            e = self.assertRaises(exception.CacheFull, self._fetch, 'qcow2',
                                  'qcow2')
        self.assertIn('expands to 10485760 bytes', str(e))
        convert.assert_not_called()
        self.assertEqual([], self.cache.list())
        self.assertEqual([], os.listdir(self.cache.tmp_dir))

    def _enter(self, max_virtual_size=None):
        """The size of the base file the image becomes."""
        self.image_cache.with_local_file(
            context.get_admin_context(), self.glance.show(None, IMAGE),
            max_virtual_size, rootdisk.Timings())
        return os.path.getsize(self.cache.lookup(IMAGE))
