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

"""cache_images (RPC API 1.1) end to end over the in-memory transport."""

import threading

from oslo_messaging.notify import _impl_test as notify_test

from imaged import context
from imaged import exception
from imaged import manager as imaged_manager
from imaged import rpcapi
from tests.unit import test_manager

IMAGES = ['0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a%02d' % i for i in range(10)]


class FakeCacheImage:
    """RootDisks.cache_image as the pool provides it: a status or a typed
    error per image."""

    def __init__(self, outcomes=None, barrier=None):
        self.outcomes = outcomes or {}
        self.barrier = barrier
        self.calls = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, ctxt, image_id):
        with self._lock:
            self.calls.append(image_id)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.barrier is not None:
                self.barrier.wait()
            outcome = self.outcomes.get(image_id, 'cached')
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            with self._lock:
                self.in_flight -= 1


class AgentTestCase(test_manager.RPCTestCase):
    """A real ImagedService on ``fake:/`` whose notifications are kept,
    with RootDisks.cache_image faked."""

    def setUp(self):
        super().setUp()
        self.flags(driver=['test'], group='oslo_messaging_notifications')
        notify_test.reset()
        self.addCleanup(notify_test.reset)
        # The service is up: re-read the notification options in place.
        self.manager.notifications.__init__(self.conf, 'test-host')
        self.manager.image_cache.fetcher.notifications = \
            self.manager.notifications
        self.root_disks = self.manager.root_disks
        self.cache_image = FakeCacheImage()
        self.root_disks.cache_image = self.cache_image
        self.ctxt = context.RequestContext(user_id='u', project_id='p',
                                           auth_token='secret-token')

    def notifications(self, prefix=''):
        return [(m['event_type'], m['payload'])
                for _c, m, _p, _r in notify_test.NOTIFICATIONS
                if m['event_type'].startswith(prefix)]


class CacheImagesTest(AgentTestCase):

    def test_each_status_in_the_callers_order(self):
        self.cache_image.outcomes = {
            IMAGES[0]: 'cached',
            IMAGES[1]: 'existing',
            IMAGES[2]: exception.ImageNotFound(image_id=IMAGES[2]),
            IMAGES[3]: exception.ImageDownloadFailed(image_id=IMAGES[3],
                                                     reason='reset'),
            IMAGES[4]: exception.ImageUnacceptable(image_id=IMAGES[4],
                                                   reason='a vmdk flat'),
            IMAGES[5]: exception.ImageTooLarge(image_id=IMAGES[5],
                                               virtual_size=2, size_bytes=1),
            IMAGES[6]: RuntimeError('a bug'),
            IMAGES[7]: 'half-done',
        }
        result = self.api.cache_images(self.ctxt, 'test-host', IMAGES[:8])
        self.assertEqual(IMAGES[:8], list(result))
        self.assertEqual(['cached', 'existing', 'error', 'error',
                          'unsupported', 'unsupported', 'error', 'error'],
                         list(result.values()))
        self.assertEqual(sorted(IMAGES[:8]), sorted(self.cache_image.calls))

    def test_at_most_precache_concurrency_at_once(self):
        self.flags(precache_concurrency=2, group='image_cache')
        # Each call waits for a partner: one at a time would break it.
        self.cache_image.barrier = threading.Barrier(2, timeout=20)
        result = self.api.cache_images(self.ctxt, 'test-host', IMAGES[:6])
        self.assertEqual({'cached'}, set(result.values()))
        self.assertEqual(2, self.cache_image.most_in_flight)

    def test_notifications_start_progress_end(self):
        self.cache_image.outcomes = {
            IMAGES[1]: exception.ImageNotFound(image_id=IMAGES[1])}
        self.flags(precache_concurrency=1, group='image_cache')
        self.api.cache_images(self.ctxt, 'test-host', IMAGES[:2])
        events = self.notifications('cache_images.')
        self.assertEqual(['cache_images.start', 'cache_images.progress',
                          'cache_images.progress', 'cache_images.end'],
                         [e for e, _p in events])
        self.assertEqual({'version': '1.0', 'host': 'test-host', 'total': 2},
                         events[0][1])
        self.assertEqual(
            {'version': '1.0', 'host': 'test-host', 'index': 2, 'total': 2,
             'image_id': IMAGES[1], 'status': 'error',
             'images_cached': [IMAGES[0]], 'images_failed': [IMAGES[1]]},
            events[2][1])
        self.assertEqual(
            {'version': '1.0', 'host': 'test-host', 'total': 2,
             'images_cached': [IMAGES[0]], 'images_failed': [IMAGES[1]]},
            events[3][1])
        for ctxt, message, _p, _r in notify_test.NOTIFICATIONS:
            self.assertEqual('imaged.test-host', message['publisher_id'])
            self.assertNotIn('secret-token', repr(ctxt))

    def assertInvalid(self, image_ids, argument='image_ids'):
        client = self.api.client.prepare(server='test-host', version='1.1',
                                         timeout=10)
        e = self.assertRaises(exception.InvalidInput, client.call, self.ctxt,
                              'cache_images', image_ids=image_ids)
        self.assertIn(argument, str(e))
        self.assertEqual([], self.cache_image.calls)
        self.assertEqual([], self.notifications())
        return e

    def test_every_id_is_validated_before_any_work(self):
        self.assertInvalid([IMAGES[0], '../../etc/passwd'], 'image_ids[1]')
        self.assertInvalid([IMAGES[0], 5], 'image_ids[1]')
        self.assertInvalid([None], 'image_ids[0]')

    def test_the_list_itself_is_validated(self):
        for bad in ([], IMAGES[0], {IMAGES[0]: 1}, 5):
            self.assertInvalid(bad)
        e = self.assertInvalid([IMAGES[0]] * 257)
        self.assertIn('1..256', str(e))

    def test_duplicates_are_refused_whatever_their_case(self):
        e = self.assertInvalid([IMAGES[0], IMAGES[1], IMAGES[0].upper()],
                               'image_ids[2]')
        self.assertIn('twice', str(e))

    def test_missing_and_unexpected_arguments(self):
        client = self.api.client.prepare(server='test-host', version='1.1',
                                         timeout=10)
        self.assertRaises(exception.InvalidInput, client.call, self.ctxt,
                          'cache_images')
        e = self.assertRaises(exception.InvalidInput, client.call, self.ctxt,
                              'cache_images', image_ids=[IMAGES[0]],
                              force=True)
        self.assertIn('force', str(e))
        self.assertEqual([], self.cache_image.calls)

    def test_upper_case_ids_are_answered_canonical(self):
        result = self.api.cache_images(self.ctxt, 'test-host',
                                       [IMAGES[0].upper()])
        self.assertEqual({IMAGES[0]: 'cached'}, result)


class VersionCapTest(AgentTestCase):

    def test_a_client_capped_at_1_0_refuses_cache_images(self):
        self.flags(imaged='1.0', group='upgrade_levels')
        api = rpcapi.ImageAgentAPI(self.conf)
        e = self.assertRaises(exception.RPCVersionCapped, api.cache_images,
                              self.ctxt, 'test-host', [IMAGES[0]])
        self.assertIn('1.1', str(e))
        self.assertIn('1.0', str(e))
        self.assertEqual([], self.cache_image.calls)
        # The 1.0 calls still work under the cap.
        self.assertEqual('test-host',
                         api.get_capabilities(self.ctxt,
                                              'test-host')['host'])

    def test_cache_images_is_a_long_call_at_1_1(self):
        self.flags(long_rpc_timeout=900, rpc_response_timeout=30)
        prepared = rpcapi.ImageAgentAPI(self.conf)._prepare(
            'h1', long_call=True, version='1.1')
        self.assertEqual(('h1', 900, 30, '1.1'),
                         (prepared.target.server, prepared.timeout,
                          prepared.call_monitor_timeout,
                          prepared.target.version))

    def test_the_agent_serves_1_3(self):
        self.assertEqual('1.3', imaged_manager.ImageAgentManager.target
                         .version)
