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

import errno
import os
import threading
import time
from unittest import mock

import requests

from imaged import context
from imaged import exception
from imaged.imagecache import files as image_cache
from imaged.imagecache import manager as imagecache_manager
from imaged import rootdisk
from imaged.storage import rbd as rbd_storage
from tests import base
from tests.unit import fakes

IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'
OTHER = 'c3d4e5f6-a7b8-4c9d-8e0f-112233445566'


class ImageCacheTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(base.fixtures.MonkeyPatch('time.sleep',
                                                  lambda s: None))
        self.glance = fakes.FakeGlance()
        self.cache = image_cache.BaseFiles(self.conf)
        self.cache.prepare()
        cluster = fakes.FakeCluster()
        storage = rbd_storage.RBDDriver(
            self.conf, 'test-host', rados_module=cluster.rados,
            rbd_module=cluster.rbd)
        self.image_cache = imagecache_manager.ImageCacheManager(
            self.conf, self.glance, storage, self.cache)
        self.ctxt = context.get_admin_context()

    def fetch(self, image_id=IMAGE):
        """The base file's path, and whether it was downloaded now."""
        before = self.glance.downloads
        image = self.glance.show(None, image_id)
        self.image_cache.with_local_file(self.ctxt, image, None,
                                         rootdisk.Timings())
        return (self.cache.base_image_path(image_id),
                self.glance.downloads > before)

    def assertNothingCached(self):
        self.assertEqual([], self.cache.list())
        self.assertEqual([], os.listdir(self.cache.tmp_dir))

    def test_download_is_verified_sparse_and_renamed_in(self):
        data = b'x' * 1000 + bytes(3 << 20) + b'y'
        self.glance.add(IMAGE, data)
        path, downloaded = self.fetch()
        self.assertTrue(downloaded)
        self.assertEqual(os.path.join(self.cache.base_dir, IMAGE), path)
        with open(path, 'rb') as f:
            self.assertEqual(data, f.read())
        self.assertLess(os.stat(path).st_blocks * 512, len(data))
        self.assertEqual([], os.listdir(self.cache.tmp_dir))

    def test_second_use_does_not_download_again(self):
        self.glance.add(IMAGE, b'abc')
        self.assertTrue(self.fetch()[1])
        self.assertFalse(self.fetch()[1])
        self.assertEqual(1, self.glance.downloads)

    def test_md5_checksum_is_used_without_os_hash(self):
        self.glance.add(IMAGE, b'abc', os_hash_algo=None, os_hash_value=None,
                        checksum='900150983cd24fb0d6963f7d28e17f72')
        self.assertTrue(self.fetch()[1])

    def test_hash_mismatch_leaves_nothing(self):
        self.glance.add(IMAGE, b'abc', os_hash_value='0' * 128)
        e = self.assertRaises(exception.ImageUnacceptable, self.fetch)
        self.assertIn("does not match Glance's sha512 hash", str(e))
        self.assertNothingCached()

    def test_short_read_is_retried_then_given_up(self):
        record = self.glance.add(IMAGE, b'abc')
        record['size'] = 10
        e = self.assertRaises(exception.ImageDownloadFailed, self.fetch)
        self.assertIn('got 3 of 10 bytes', str(e))
        self.assertEqual(4, self.glance.downloads)  # 1 + num_retries
        self.assertNothingCached()

    def test_dropped_connection_is_retried(self):
        self.glance.add(IMAGE, b'abc')
        self.glance.failures = [requests.exceptions.ConnectionError('reset')]
        self.assertTrue(self.fetch()[1])
        self.assertEqual(2, self.glance.downloads)

    def test_stream_failing_midway_leaves_nothing(self):
        self.glance.add(IMAGE, b'abc' * 100000)
        self.flags(num_retries=0, group='glance')

        def broken(ctxt, image_id):
            yield b'abc'
            raise requests.exceptions.ChunkedEncodingError('cut')
        self.glance.open_data = broken
        self.assertRaises(exception.ImageDownloadFailed, self.fetch)
        self.assertNothingCached()

    def test_full_disk_is_cache_full(self):
        self.glance.add(IMAGE, b'abc')
        with mock.patch('os.fsync', side_effect=OSError(errno.ENOSPC, 'x')):
            e = self.assertRaises(exception.CacheFull, self.fetch)
        self.assertIn(IMAGE, str(e))
        self.assertNothingCached()

    def test_unsafe_image_is_not_cached(self):
        self.glance.add(IMAGE, b'QFI\xfb' + bytes(4096), disk_format='raw')
        self.assertRaises(exception.ImageUnacceptable, self.fetch)
        self.assertNothingCached()

    def test_concurrent_calls_download_once(self):
        self.glance.add(IMAGE, b'abc')
        real_open = self.glance.open_data
        gate = threading.Event()

        def slow_open(ctxt, image_id):
            gate.wait(5)
            return real_open(ctxt, image_id)
        self.glance.open_data = slow_open
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            self.fetch()[0])) for _i in range(8)]
        for t in threads:
            t.start()
        gate.set()
        for t in threads:
            t.join(10)
        self.assertEqual(1, self.glance.downloads)
        self.assertEqual([self.cache.base_image_path(IMAGE)] * 8, results)

    def test_remove_scratch_removes_leftover_temporary_files(self):
        leftover = os.path.join(self.cache.tmp_dir, IMAGE + '.download.x')
        open(leftover, 'w').close()
        self.cache.prepare()
        self.assertTrue(os.path.exists(leftover))
        self.assertEqual([os.path.basename(leftover)],
                         self.cache.remove_scratch())
        self.assertFalse(os.path.exists(leftover))

    def test_image_id_cannot_escape_base_dir(self):
        for bad in ('../etc/passwd', '/etc/passwd', IMAGE.upper(), '', None):
            self.assertRaises(exception.InvalidInput,
                              self.cache.base_image_path, bad)

    def test_list_shows_size_and_last_use(self):
        self.glance.add(IMAGE, b'abcd')
        self.fetch()
        [entry] = self.cache.list()
        self.assertEqual(IMAGE, entry['image_id'])
        self.assertEqual(4, entry['size_bytes'])
        self.assertRegex(entry['last_used'], r'^\d{4}-\d\d-\d\dT.*\+00:00$')

    def test_clean_removes_unused_old_files_but_not_files_in_use(self):
        self.glance.add(IMAGE, b'a')
        self.glance.add(OTHER, b'b')
        self.fetch(IMAGE)
        self.fetch(OTHER)
        self.flags(remove_unused_base_images_min_age=60, group='image_cache')
        later = time.time() + 120
        with self.cache.in_use(OTHER):
            self.assertEqual([{'image_id': IMAGE, 'where': 'file',
                               'reason': 'age'}],
                             self.image_cache.eviction.clean_files(now=later))
        self.assertEqual([OTHER], [e['image_id'] for e in self.cache.list()])
        self.assertEqual([{'image_id': OTHER, 'where': 'file',
                           'reason': 'age'}],
                         self.image_cache.eviction.clean_files(now=later))

    def test_clean_evicts_least_recently_used_to_fit(self):
        self.glance.add(IMAGE, b'a' * 8192)
        self.glance.add(OTHER, b'b' * 8192)
        self.fetch(IMAGE)
        self.fetch(OTHER)
        old = time.time() - 100
        os.utime(self.cache.base_image_path(IMAGE), (old, old))
        self.flags(remove_unused_base_images_min_age=0,
                   max_size_gb=10000 / 1024 ** 3, group='image_cache')
        self.assertEqual([{'image_id': IMAGE, 'where': 'file',
                           'reason': 'size'}],
                         self.image_cache.eviction.clean_files())
        self.assertEqual([OTHER], [e['image_id'] for e in self.cache.list()])

    def test_usage_counts_allocated_bytes(self):
        self.glance.add(IMAGE, b'a' * 8192)
        self.fetch()
        usage = self.cache.usage()
        self.assertEqual(self.cache.base_dir, usage['path'])
        self.assertGreaterEqual(usage['used_bytes'], 8192)
        self.assertGreater(usage['free_bytes'], 0)
