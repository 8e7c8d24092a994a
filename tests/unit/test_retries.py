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

"""Retries and polls written with tenacity: the same bounds as the loops
they replaced."""

import contextlib
import types
from unittest import mock

from imaged import deadline
from imaged import exception
from imaged.imagecache import manager as imagecache_manager
from imaged import snapshot
from tests import base

IMAGE = '7d0a9c4e-5c2b-4d8e-9f1a-2b3c4d5e6f70'


class WithBaseTest(base.TestCase):
    """A base refused by another call's build, for a smaller disk."""

    def setUp(self):
        super().setUp()
        self.storage = mock.Mock()
        self.files = mock.Mock()
        self.cache = imagecache_manager.ImageCacheManager(
            self.conf, mock.Mock(), self.storage, self.files,
            notifications=mock.Mock())
        self.image = types.SimpleNamespace(id=IMAGE)
        self.answers = []

        @contextlib.contextmanager
        def use(image_id, build, call_deadline):
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            yield answer
        self.storage.bases.use = use

    def too_large(self, size_bytes, virtual_size):
        return exception.ImageTooLarge(image_id=IMAGE, size_bytes=size_bytes,
                                       virtual_size=virtual_size)

    def test_it_is_built_again_once_for_a_disk_it_fits(self):
        self.answers = [self.too_large(100, 150), ('base', 150, True)]
        self.assertEqual((True, 'used'), self.cache.with_base(
            None, self.image, 200, mock.Mock(), lambda base, size: 'used'))
        self.files.record.assert_called_once_with(IMAGE, 150)

    def test_a_second_refusal_is_the_call_s(self):
        self.answers = [self.too_large(100, 150), self.too_large(120, 150),
                        ('base', 150, True)]
        self.assertRaises(exception.ImageTooLarge, self.cache.with_base,
                          None, self.image, 200, mock.Mock())
        self.assertEqual(1, len(self.answers))

    def test_a_refusal_for_this_size_is_not_retried(self):
        self.answers = [self.too_large(200, 250), ('base', 150, True)]
        self.assertRaises(exception.ImageTooLarge, self.cache.with_base,
                          None, self.image, 200, mock.Mock())
        self.assertEqual(1, len(self.answers))


class WaitActiveTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.glance = mock.Mock()
        self.snapshots = snapshot.Snapshots(self.conf, self.glance,
                                            mock.Mock(), mock.Mock(),
                                            mock.Mock(), mock.Mock(),
                                            mock.Mock())
        self.useFixture(base.fixtures.MonkeyPatch(
            'imaged.snapshot.ACTIVE_POLL', 0.01))

    def statuses(self, *statuses):
        self.glance.show.side_effect = [types.SimpleNamespace(status=s)
                                        for s in statuses]

    def test_polls_until_active(self):
        self.statuses('queued', 'saving', 'active')
        self.snapshots._wait_active(None, IMAGE, deadline.Deadline(60))
        self.assertEqual(3, self.glance.show.call_count)

    def test_a_status_that_will_never_be_active_is_typed(self):
        self.statuses('saving', 'killed')
        e = self.assertRaises(exception.ImageNotWritable,
                              self.snapshots._wait_active, None, IMAGE,
                              deadline.Deadline(60))
        self.assertIn('killed', str(e))

    def test_the_deadline_bounds_the_wait_and_the_error_says_how_long(self):
        self.glance.show.return_value = types.SimpleNamespace(
            status='saving')
        e = self.assertRaises(exception.Timeout, self.snapshots._wait_active,
                              None, IMAGE, deadline.Deadline(0.2))
        self.assertIn(IMAGE, str(e))
        self.assertLess(e.kwargs['seconds'], self.conf.long_rpc_timeout)
        self.assertGreaterEqual(e.kwargs['seconds'], 0.2)
