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

"""The caller's deadline reaches the waits of the image cache and of the
download slots; the error says what was waited for, and how long."""

import os
import threading
import time
import types

from imaged import deadline
from imaged import exception
from imaged.image import fetch
from imaged.imagecache import files as image_files
from tests import base

IMAGE = '7d0a9c4e-5c2b-4d8e-9f1a-2b3c4d5e6f70'


class CacheLockWaitTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(base_dir=os.path.join(self.tempdir, 'cache'),
                   group='image_cache')
        self.flags(lock_path=os.path.join(self.tempdir, 'locks'),
                   group='oslo_concurrency')
        self.files = image_files.BaseFiles(self.conf)
        self.files.prepare()

    def test_a_held_download_lock_is_waited_for_within_the_deadline(self):
        held, done = threading.Event(), threading.Event()

        def holder():
            with self.files.lock(IMAGE):
                held.set()
                done.wait(30)
        thread = threading.Thread(target=holder)
        thread.start()
        self.addCleanup(thread.join, 30)
        self.addCleanup(done.set)
        self.assertTrue(held.wait(30))
        started = time.monotonic()
        e = self.assertRaises(exception.Timeout, self._take, 0.2)
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn(IMAGE, str(e))
        self.assertLess(e.kwargs['seconds'], self.conf.long_rpc_timeout)

    def _take(self, timeout):
        with self.files.lock(IMAGE, timeout):
            pass


class DownloadSlotWaitTest(base.TestCase):

    def test_the_slot_wait_ends_with_the_call_s_deadline(self):
        self.flags(max_concurrent_downloads=1, group='image_cache')
        fetcher = fetch.Fetcher(self.conf, glance_api=None)
        context = types.SimpleNamespace(deadline=deadline.Deadline(0.2))
        with fetcher._download_slot(None, IMAGE):
            started = time.monotonic()
            e = self.assertRaises(exception.Timeout, self._slot, fetcher,
                                  context)
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn('download slot for image %s' % IMAGE, str(e))
        self.assertLess(e.kwargs['seconds'], 10)

    def _slot(self, fetcher, context):
        with fetcher._download_slot(context, IMAGE):
            pass
