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

"""What ImageAgentAPI sends: how long it waits, in the request context."""

import fixtures
import oslo_messaging as messaging

from imaged import context
from imaged import exception
from imaged import rpcapi
from imaged import validate
from tests.unit import test_manager

HOST = 'h1'
INSTANCE = test_manager.INSTANCE
IMAGE = test_manager.IMAGE


class CallTimeoutSentTest(test_manager.FakeTransportTestCase):

    def setUp(self):
        super().setUp()
        self.flags(long_rpc_timeout=900, rpc_response_timeout=30)
        self.api = rpcapi.ImageAgentAPI(self.conf)
        self.ctxt = context.RequestContext(user_id='u', project_id='p',
                                           request_id='req-1')
        self.sent = []
        prepare = self.api._prepare

        def recording_prepare(*args, **kwargs):
            client = prepare(*args, **kwargs)
            client.call = lambda ctxt, method, **kw: self.sent.append(
                (method, ctxt))
            return client
        self.api._prepare = recording_prepare

    def call_timeouts(self):
        return {method: ctxt[context.CALL_TIMEOUT]
                for method, ctxt in self.sent}

    def test_long_calls_say_the_long_timeout_short_ones_the_short(self):
        self.api.create_root_disk(self.ctxt, HOST, INSTANCE, IMAGE, 1)
        self.api.delete_root_disk(self.ctxt, HOST, INSTANCE)
        self.api.cache_images(self.ctxt, HOST, [IMAGE])
        self.api.get_capabilities(self.ctxt, HOST)
        self.api.list_cached_images(self.ctxt, HOST)
        self.assertEqual({'create_root_disk': 900, 'delete_root_disk': 900,
                          'cache_images': 900, 'get_capabilities': 30,
                          'list_cached_images': 30}, self.call_timeouts())

    def test_the_callers_context_is_sent_whole_and_left_unchanged(self):
        self.api.create_root_disk(self.ctxt, HOST, INSTANCE, IMAGE, 1)
        [(_method, sent)] = self.sent
        self.assertEqual(dict(self.ctxt.to_dict(),
                              **{context.CALL_TIMEOUT: 900}), sent)
        self.assertNotIn(context.CALL_TIMEOUT, self.ctxt.to_dict())
        self.assertIsNone(self.ctxt.call_timeout)

    def test_a_plain_dict_context_works(self):
        self.api.get_capabilities({'request_id': 'req-2'}, HOST)
        self.assertEqual({'request_id': 'req-2', context.CALL_TIMEOUT: 30},
                         self.sent[0][1])

    def test_a_timeout_beyond_the_agents_bound_is_sent_as_the_bound(self):
        self.flags(long_rpc_timeout=context.MAX_CALL_TIMEOUT * 2)
        self.api.create_root_disk(self.ctxt, HOST, INSTANCE, IMAGE, 1)
        self.assertEqual(context.MAX_CALL_TIMEOUT,
                         self.call_timeouts()['create_root_disk'])

    def test_the_agent_reads_back_what_the_client_sent(self):
        sent = context.with_call_timeout(self.ctxt, 900)
        received = context.from_dict(sent)
        self.assertEqual((900, 'req-1'), (received.call_timeout,
                                          received.request_id))
        self.assertIsNone(context.from_dict({}).call_timeout)


class DeadWorkerRetryTest(test_manager.FakeTransportTestCase):
    """A long call whose heartbeats stop is sent again (issue 24)."""

    def setUp(self):
        super().setUp()
        self.flags(long_rpc_timeout=900, rpc_response_timeout=30,
                   rpc_retries=2)
        self.api = rpcapi.ImageAgentAPI(self.conf)
        self.ctxt = context.RequestContext(user_id='u', project_id='p')
        self.sent = []
        self.answers = []  # what each call does: an exception or a value
        self.clock = [1000.0]
        self.useFixture(fixtures.MockPatch(
            'imaged.rpcapi.time.monotonic', lambda: self.clock[0]))
        prepare = self.api._prepare

        def scripted_prepare(*args, **kwargs):
            client = prepare(*args, **kwargs)

            def call(ctxt, method, **kw):
                self.sent.append((method, kw, ctxt))
                outcome, seconds = self.answers.pop(0)
                self.clock[0] += seconds
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome
            client.call = call
            return client
        self.api._prepare = scripted_prepare

    def heartbeats_stop(self):
        # oslo.messaging's call monitor: no heartbeat for
        # rpc_response_timeout seconds, long before the call's own bound.
        return (messaging.MessagingTimeout('no reply'), 30.5)

    def test_a_create_whose_worker_died_is_sent_again_and_answered(self):
        disk = {'name': INSTANCE + '_disk', 'strategy': 'existing'}
        self.answers = [self.heartbeats_stop(), (disk, 2.0)]
        self.assertEqual(disk, self.api.create_root_disk(
            self.ctxt, HOST, INSTANCE, IMAGE, 1))
        self.assertEqual(2, len(self.sent))
        first, second = self.sent
        # The same arguments, and a fresh deadline each time.
        self.assertEqual(first[:2], second[:2])
        self.assertEqual(900, second[2][context.CALL_TIMEOUT])

    def test_every_long_call_is_retried(self):
        for method, call in (
                ('delete_root_disk', lambda: self.api.delete_root_disk(
                    self.ctxt, HOST, INSTANCE)),
                ('flatten_root_disk', lambda: self.api.flatten_root_disk(
                    self.ctxt, HOST, INSTANCE)),
                ('snapshot_root_disk', lambda: self.api.snapshot_root_disk(
                    self.ctxt, HOST, INSTANCE, IMAGE)),
                ('cache_images', lambda: self.api.cache_images(
                    self.ctxt, HOST, [IMAGE]))):
            self.sent = []
            self.answers = [self.heartbeats_stop(), ('done', 1.0)]
            self.assertEqual('done', call())
            self.assertEqual([method, method], [m for m, _k, _c in self.sent])

    def test_at_most_rpc_retries_times(self):
        self.answers = [self.heartbeats_stop()] * 3
        self.assertRaises(messaging.MessagingTimeout,
                          self.api.create_root_disk, self.ctxt, HOST,
                          INSTANCE, IMAGE, 1)
        self.assertEqual(3, len(self.sent))

    def test_no_retry_when_turned_off(self):
        self.flags(rpc_retries=0)
        self.answers = [self.heartbeats_stop()]
        self.assertRaises(messaging.MessagingTimeout,
                          self.api.create_root_disk, self.ctxt, HOST,
                          INSTANCE, IMAGE, 1)
        self.assertEqual(1, len(self.sent))

    def test_a_call_past_its_whole_bound_is_not_sent_again(self):
        # Heartbeats came all along: the work itself took too long.
        self.answers = [(messaging.MessagingTimeout('no reply'), 900.0)]
        self.assertRaises(messaging.MessagingTimeout,
                          self.api.create_root_disk, self.ctxt, HOST,
                          INSTANCE, IMAGE, 1)
        self.assertEqual(1, len(self.sent))

    def test_short_calls_are_never_sent_again(self):
        # They send no heartbeat: a timeout cannot tell a dead worker.
        self.answers = [(messaging.MessagingTimeout('no reply'), 5.0)]
        self.assertRaises(messaging.MessagingTimeout,
                          self.api.get_capabilities, self.ctxt, HOST)
        self.assertEqual(1, len(self.sent))

    def test_an_agents_error_is_not_retried(self):
        self.answers = [(exception.RootDiskNotFound(name='x', pool='vms'),
                         0.1)]
        self.assertRaises(exception.RootDiskNotFound,
                          self.api.flatten_root_disk, self.ctxt, HOST,
                          INSTANCE)
        self.assertEqual(1, len(self.sent))


class TrustedCertsTest(test_manager.FakeTransportTestCase):
    """create_root_disk's trusted_certs (RPC 1.3, issue 28)."""

    CERT = '11111111-2222-4333-8444-555555555555'

    def setUp(self):
        super().setUp()
        self.api = rpcapi.ImageAgentAPI(self.conf)
        self.ctxt = context.RequestContext(user_id='u', project_id='p')
        self.sent = []
        prepare = self.api._prepare

        def recording_prepare(*args, **kwargs):
            client = prepare(*args, **kwargs)
            client.call = lambda ctxt, method, **kw: self.sent.append(
                (kwargs.get('version'), kw))
            return client
        self.api._prepare = recording_prepare

    def test_sent_as_1_3_only_when_given(self):
        self.api.create_root_disk(self.ctxt, HOST, INSTANCE, IMAGE, 1)
        self.api.create_root_disk(self.ctxt, HOST, INSTANCE, IMAGE, 1,
                                  trusted_certs=[self.CERT])
        [(old_version, old), (new_version, new)] = self.sent
        self.assertEqual(('1.0', '1.3'), (old_version, new_version))
        self.assertNotIn('trusted_certs', old)
        self.assertEqual([self.CERT], new['trusted_certs'])

    def test_capped_below_1_3_it_is_refused_not_dropped(self):
        self.flags(imaged='1.2', group='upgrade_levels')
        api = rpcapi.ImageAgentAPI(self.conf)
        self.assertRaises(exception.RPCVersionCapped, api.create_root_disk,
                          self.ctxt, HOST, INSTANCE, IMAGE, 1,
                          trusted_certs=[self.CERT])

    def test_the_agent_checks_them(self):
        self.assertIsNone(validate.validate_certificate_ids(None))
        self.assertEqual([self.CERT], validate.validate_certificate_ids(
            [self.CERT.upper()]))
        for bad in ('not-a-list', ['x'], [self.CERT] * 51):
            self.assertRaises(exception.InvalidInput,
                              validate.validate_certificate_ids, bad)
