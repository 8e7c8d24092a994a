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

"""Notifications, through oslo.messaging's in-memory "test" driver."""

import json
import os
import re
from unittest import mock

from oslo_messaging.notify import _impl_test as notify_test
from oslo_utils import units

from imaged import context
from imaged import exception
from imaged import notifications
from imaged import rpc
from tests import base
from tests.unit import test_cache_images

INSTANCE = '5f0c1d2e-3a4b-4c5d-9e6f-7a8b9c0d1e2f'
IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'
OTHER = '7d3c1990-7e1b-4a52-9c1e-5b0f6b3a2c11'
DOC = os.path.join(os.path.dirname(__file__), '..', '..', 'doc', 'source',
                   'operate', 'notifications.rst')


def readme_samples():
    """``{event_type: message}`` from the docs' notification samples."""
    with open(DOC) as f:
        text = f.read()
    samples = {}
    for block in re.findall(r'::\n\n((?:    .*\n|\n)+)', text):
        for chunk in re.split(r'\n\s*\n', block):
            chunk = chunk.strip()
            if chunk.startswith('{"event_type"'):
                message = json.loads(chunk)
                samples[message['event_type']] = message
    return samples


def shape(value):
    """What a consumer relies on: keys and JSON types, not values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return 'list'
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, (int, float)):
        return 'number'
    return type(value).__name__


class NotificationsTest(test_cache_images.AgentTestCase):

    def sent(self, event_type):
        return [m for _c, m, _p, _r in notify_test.NOTIFICATIONS
                if m['event_type'] == event_type]

    def payload(self, event_type):
        [message] = self.sent(event_type)
        return message['payload']

    def create_clone(self):
        url = self.cluster.add_glance_image(IMAGE, b'boot')
        self.glance.add(IMAGE, b'boot', direct_url=url)
        return self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE,
                                         IMAGE, 10)

    def test_create_start_and_end(self):
        disk = self.create_clone()
        self.assertEqual({'version': '1.0', 'instance_uuid': INSTANCE,
                          'image_id': IMAGE, 'size_bytes': 10 * units.Gi},
                         self.payload('root_disk.create.start'))
        self.assertEqual({'version': '1.0', 'instance_uuid': INSTANCE,
                          'image_id': IMAGE, 'size_bytes': 10 * units.Gi,
                          'strategy': 'clone', 'parent': disk['parent'],
                          'timings': disk.get('timings', []),
                          'signature': None},
                         self.payload('root_disk.create.end'))
        [message] = self.sent('root_disk.create.end')
        self.assertEqual(('imaged.test-host', 'INFO'),
                         (message['publisher_id'], message['priority']))

    def test_create_error_names_the_class_and_message(self):
        self.assertRaises(exception.ImageNotFound, self.api.create_root_disk,
                          self.ctxt, 'test-host', INSTANCE, IMAGE, 1)
        payload = self.payload('root_disk.create.error')
        self.assertEqual(('ImageNotFound',
                          'Image %s could not be found.' % IMAGE, IMAGE,
                          INSTANCE),
                         (payload['error_class'], payload['error_message'],
                          payload['image_id'], payload['instance_uuid']))
        [message] = self.sent('root_disk.create.error')
        self.assertEqual('ERROR', message['priority'])
        self.assertEqual([], self.sent('root_disk.create.end'))

    def test_bad_input_sends_nothing(self):
        client = self.api.client.prepare(server='test-host', timeout=10)
        self.assertRaises(exception.InvalidInput, client.call, self.ctxt,
                          'create_root_disk', instance_uuid='x',
                          image_id=IMAGE, size_gb=1)
        self.assertEqual([], notify_test.NOTIFICATIONS)

    def test_delete_end(self):
        self.api.delete_root_disk(self.ctxt, 'test-host', INSTANCE)
        self.assertEqual({'version': '1.0', 'instance_uuid': INSTANCE},
                         self.payload('root_disk.delete.end'))

    def test_a_download_sends_fetch_start_and_end_with_its_retries(self):
        data = b'\x01' * 100000
        self.glance.add(IMAGE, data)
        self.glance.failures = [ConnectionError('reset by peer')]
        with mock.patch('time.sleep'):  # the retry's backoff
            disk = self.api.create_root_disk(self.ctxt, 'test-host',
                                             INSTANCE, IMAGE, 1)
        self.assertEqual('download', disk['strategy'])
        self.assertEqual({'version': '1.0', 'image_id': IMAGE,
                          'total_bytes': len(data)},
                         self.payload('image.fetch.start'))
        end = self.payload('image.fetch.end')
        self.assertEqual((IMAGE, len(data), 1),
                         (end['image_id'], end['bytes'], end['retries']))
        self.assertTrue(self.payload('root_disk.create.end')['timings'])

    def test_a_failed_download_sends_fetch_error(self):
        self.glance.add(IMAGE, b'\x01' * 1000, size=2000)  # short read
        with mock.patch('time.sleep'):
            self.assertRaises(exception.ImageDownloadFailed,
                              self.api.create_root_disk, self.ctxt,
                              'test-host', INSTANCE, IMAGE, 1)
        error = self.payload('image.fetch.error')
        self.assertEqual('ImageDownloadFailed', error['error_class'])
        # Bytes handed on before the short read was seen (the body keeps
        # a partial block until it knows the image is complete).
        self.assertLessEqual(0, error['bytes'])
        self.assertLessEqual(error['bytes'], 1000)
        self.assertEqual([], self.sent('image.fetch.end'))

    def test_the_callers_token_is_not_sent(self):
        self.create_clone()
        for ctxt, _m, _p, _r in notify_test.NOTIFICATIONS:
            self.assertNotIn('secret-token', json.dumps(ctxt))
            self.assertEqual('u', ctxt.get('user'))


class SafeContextTest(base.TestCase):
    """No token reaches the bus, whatever context imaged is given."""

    def test_every_context_type_is_sent_without_secrets(self):
        secrets = {'auth_token': 'secret-token',
                   'service_token': 'secret-service-token'}
        for ctxt in (context.RequestContext(user_id='u', **secrets),
                     dict(secrets, user='u', user_id='u'), None, {}):
            safe = notifications._safe_context(ctxt)
            sent = json.dumps(rpc.RequestContextSerializer()
                              .serialize_context(safe))
            self.assertNotIn('secret', sent, ctxt)
            if ctxt:
                self.assertEqual('u', safe.user_id)


class NotifierTestCase(base.TestCase):
    """A Notifications of host compute-1 on the "test" driver."""

    def setUp(self):
        super().setUp()
        self.useFixture(test_cache_images.test_manager.messaging.conffixture
                        .ConfFixture(self.conf))
        self.flags(transport_url='fake:/')
        self.flags(driver=['test'], group='oslo_messaging_notifications')
        notify_test.reset()
        self.addCleanup(notify_test.reset)
        self.notifier = notifications.Notifications(self.conf, 'compute-1')

    def sent(self):
        return [(m['event_type'], m['priority'], m['payload'])
                for _c, m, _p, _r in notify_test.NOTIFICATIONS]


class NotifierAPITest(NotifierTestCase):
    """The calls the download and cache code make."""

    def test_fetch_and_evict(self):
        n = self.notifier
        n.fetch_start(IMAGE, 8 * units.Mi)
        n.fetch_progress(IMAGE, 4 * units.Mi, 8 * units.Mi, 2.0)
        n.fetch_end(IMAGE, 8 * units.Mi, 4.0, 1)
        n.fetch_error(OTHER, units.Mi, 0.5, 3,
                      exception.ImageDownloadFailed(image_id=OTHER,
                                                    reason='stalled'))
        n.evict(IMAGE, 'rbd', 'size')
        v = '1.0'
        self.assertEqual([
            ('image.fetch.start', 'INFO',
             {'version': v, 'image_id': IMAGE, 'total_bytes': 8 * units.Mi}),
            ('image.fetch.progress', 'INFO',
             {'version': v, 'image_id': IMAGE, 'bytes': 4 * units.Mi,
              'total_bytes': 8 * units.Mi, 'seconds': 2.0, 'mb_per_s': 2.0}),
            ('image.fetch.end', 'INFO',
             {'version': v, 'image_id': IMAGE, 'bytes': 8 * units.Mi,
              'seconds': 4.0, 'mb_per_s': 2.0, 'retries': 1}),
            ('image.fetch.error', 'ERROR',
             {'version': v, 'image_id': OTHER, 'bytes': units.Mi,
              'seconds': 0.5, 'mb_per_s': 2.0, 'retries': 3,
              'error_class': 'ImageDownloadFailed',
              'error_message': 'Download of image %s failed: stalled' %
              OTHER}),
            ('image_cache.evict', 'INFO',
             {'version': v, 'image_id': IMAGE, 'where': 'rbd',
              'reason': 'size'}),
        ], self.sent())

    def test_progress_is_sent_at_most_every_progress_interval(self):
        self.flags(progress_interval=5, group='glance')
        n = notifications.Notifications(self.conf, 'compute-1')
        clock = iter([100.0, 101.0, 104.9, 105.0, 107.0, 110.5])
        with mock.patch('time.monotonic', lambda: next(clock)):
            report = n.fetch_progress_reporter(IMAGE, 100)
            for done in (10, 20, 30, 40, 50):
                report(done)
        self.assertEqual([(30, 5.0), (50, 10.5)],
                         [(p['bytes'], p['seconds'])
                          for _e, _p, p in self.sent()])

    def test_snapshot_progress_every_interval_and_at_the_end(self):
        self.flags(progress_interval=5, group='glance')
        n = notifications.Notifications(self.conf, 'compute-1')
        clock = iter([100.0, 101.0, 106.0, 107.0, 108.0])
        with mock.patch('time.monotonic', lambda: next(clock)):
            report = n.snapshot_progress_reporter(None, INSTANCE, IMAGE,
                                                  'copy')
            # librbd's on_progress: an int back, 0 to go on.
            self.assertEqual([0, 0, 0, 0],
                             [report(done, 100) for done in (10, 50, 60,
                                                             100)])
        self.assertEqual(
            [('root_disk.snapshot.progress', 'INFO',
              {'version': '1.0', 'instance_uuid': INSTANCE,
               'image_id': IMAGE, 'step': 'copy', 'percent': percent,
               'seconds': seconds})
             for percent, seconds in ((50.0, 6.0), (100.0, 8.0))],
            self.sent())

    def test_off_by_default_and_with_noop(self):
        group = 'oslo_messaging_notifications'
        for driver in (None, ['noop']):
            self.conf.clear_override('driver', group=group)
            if driver:
                self.flags(driver=driver, group=group)
            notifier = mock.Mock()
            n = notifications.Notifications(self.conf, 'compute-1',
                                            notifier=notifier)
            n.fetch_start(IMAGE, 1)
            n.evict(IMAGE, 'file', 'age')
            n.create_error(None, IMAGE, IMAGE, 1, ValueError('x'))
            self.assertEqual([], notifier.prepare.return_value.mock_calls)
        self.assertEqual([], notify_test.NOTIFICATIONS)

    def test_a_broken_driver_never_reaches_the_caller(self):
        with mock.patch.object(notify_test.TestDriver, 'notify',
                               side_effect=ConnectionError('broker gone')):
            self.notifier.evict(IMAGE, 'file', 'deleted')

    def test_sends_are_retried_a_bounded_number_of_times(self):
        self.notifier.evict(IMAGE, 'file', 'deleted')
        [(_c, _m, _p, retry)] = notify_test.NOTIFICATIONS
        self.assertEqual(notifications.NOTIFY_RETRY, retry)


class ReadmeSamplesTest(test_cache_images.AgentTestCase):
    """The docs' sample of each event has the shape the code sends."""

    EVENTS = ['root_disk.create.start', 'root_disk.create.end',
              'root_disk.create.error', 'root_disk.delete.end',
              'image.fetch.start', 'image.fetch.progress', 'image.fetch.end',
              'image.fetch.error', 'image_cache.evict', 'cache_images.start',
              'cache_images.progress', 'cache_images.end',
              'image_cache.lazy_base.published',
              'image_cache.lazy_base.quarantined']

    def emit_every_event(self):
        url = self.cluster.add_glance_image(IMAGE, b'boot')
        self.glance.add(IMAGE, b'boot', direct_url=url)
        disk = self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE,
                                         IMAGE, 1)
        # The pool's create result carries timings; the payload passes
        # them on as a list of strings.
        self.assertIsInstance(self.sent('root_disk.create.end')['payload']
                              ['timings'], list)
        del disk
        self.assertRaises(exception.ImageNotFound, self.api.create_root_disk,
                          self.ctxt, 'test-host', INSTANCE.replace('5', '6'),
                          OTHER, 1)
        self.api.delete_root_disk(self.ctxt, 'test-host', INSTANCE)
        self.cache_image.outcomes = {
            OTHER: exception.ImageUnacceptable(image_id=OTHER, reason='x')}
        self.api.cache_images(self.ctxt, 'test-host', [IMAGE, OTHER])
        n = self.manager.notifications
        n.fetch_start(IMAGE, 100)
        n.fetch_progress(IMAGE, 50, 100, 1.0)
        n.fetch_end(IMAGE, 100, 2.0, 0)
        n.fetch_error(IMAGE, 10, 1.0, 3, exception.ImageDownloadFailed(
            image_id=IMAGE, reason='stalled'))
        n.evict(IMAGE, 'file', 'deleted')
        n.lazy_base(IMAGE, 'vms', IMAGE + '_base', 'published')
        n.lazy_base(IMAGE, 'vms', IMAGE + '_base.x.imaged-part',
                    'quarantined', exception.ImageDataMismatch(
                        image_id=IMAGE, reason='its hash does not match'))

    def sent(self, event_type):
        return [m for _c, m, _p, _r in notify_test.NOTIFICATIONS
                if m['event_type'] == event_type][-1]

    def test_every_event_is_documented_with_the_keys_sent(self):
        samples = readme_samples()
        self.assertEqual(sorted(self.EVENTS), sorted(samples))
        self.emit_every_event()
        for event_type in self.EVENTS:
            sample, message = samples[event_type], self.sent(event_type)
            self.assertEqual(
                (event_type, sample['priority'], shape(sample['payload'])),
                (event_type, message['priority'], shape(message['payload'])))
            self.assertEqual('imaged.compute-1', sample['publisher_id'])
            self.assertEqual(notifications.PAYLOAD_VERSION,
                             sample['payload']['version'])


class FetchReportTest(NotifierTestCase):

    def test_a_download_with_one_retry(self):
        with notifications.FetchReport(self.notifier, IMAGE, 6) as report:
            report.attempt()
            self.assertEqual([b'ab'], list(report.count([b'ab'])))
            report.attempt()
            self.assertEqual([b'abc', b'def'],
                             list(report.count([b'abc', b'def'])))
        events = self.sent()
        self.assertEqual(['image.fetch.start', 'image.fetch.end'],
                         [e for e, _p, _x in events])
        self.assertEqual((IMAGE, 6, 1),
                         tuple(events[1][2][k] for k in
                               ('image_id', 'bytes', 'retries')))

    def test_a_failed_download_sends_the_error_and_raises_it(self):
        def broken():
            yield b'x' * 10
            raise exception.ImageDownloadFailed(image_id=IMAGE,
                                                reason='reset')

        def fetch():
            with notifications.FetchReport(self.notifier, IMAGE,
                                           None) as report:
                report.attempt()
                list(report.count(broken()))
        self.assertRaises(exception.ImageDownloadFailed, fetch)
        [_start, (event, priority, payload)] = self.sent()
        self.assertEqual(('image.fetch.error', 'ERROR', 10, 0,
                          'ImageDownloadFailed'),
                         (event, priority, payload['bytes'],
                          payload['retries'], payload['error_class']))

    def test_without_a_notifier_it_only_counts(self):
        with notifications.FetchReport(None, IMAGE, 3) as report:
            report.attempt()
            list(report.count([b'abc']))
        self.assertEqual(3, report.bytes)
        self.assertEqual([], notify_test.NOTIFICATIONS)
