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

"""The RPC API end to end over oslo.messaging's in-memory transport."""

import threading
import time
from unittest import mock

import fixtures
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import oslo_messaging as messaging
from oslo_messaging import conffixture  # noqa: F401
from oslo_utils import units

from imaged.cmd import imaged as imaged_cmd
from imaged import context
from imaged import exception
from imaged.imagecache import files as image_cache
from imaged import manager as imaged_manager
from imaged import rpc
from imaged import rpcapi
from imaged import service as imaged_service
from imaged.storage import rbd as rbd_storage
from tests import base
from tests.unit import fakes
from tests.unit import parts

INSTANCE = '5f0c1d2e-3a4b-4c5d-9e6f-7a8b9c0d1e2f'
IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'


class FakeTransportTestCase(base.TestCase):
    """oslo.messaging's in-memory transport, fresh for each test."""

    def setUp(self):
        super().setUp()
        self.useFixture(messaging.conffixture.ConfFixture(self.conf))
        self.flags(transport_url='fake:/')
        rpc.cleanup()
        self.addCleanup(rpc.cleanup)


class RPCTestCase(FakeTransportTestCase):
    """Runs a real ImagedService on ``fake:/`` with fake Ceph and Glance."""

    options = {}  # [DEFAULT] options the service starts with

    def setUp(self):
        super().setUp()
        self.flags(**self.options)
        self.cluster = fakes.FakeCluster()
        self.glance = fakes.FakeGlance()
        storage = rbd_storage.RBDDriver(
            self.conf, 'test-host', rados_module=self.cluster.rados,
            rbd_module=self.cluster.rbd)
        cache = image_cache.BaseFiles(self.conf)
        self.manager = imaged_manager.ImageAgentManager(
            parts.agent(self.conf, self.glance, storage, cache))
        self.service = imaged_service.ImagedService(self.conf, self.manager)
        self.service.start()
        self.addCleanup(self.service.stop)
        self.api = rpcapi.ImageAgentAPI(self.conf)
        self.ctxt = context.RequestContext(user_id='u', project_id='p')

    def call(self, method, **kwargs):
        client = self.api.client.prepare(server='test-host', timeout=10)
        return client.call(self.ctxt, method, **kwargs)


class RPCAPITest(RPCTestCase):

    def test_create_and_delete_root_disk(self):
        url = self.cluster.add_glance_image(IMAGE, b'boot')
        self.glance.add(IMAGE, b'boot', direct_url=url)
        result = self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE,
                                           IMAGE, 1)
        self.assertEqual('clone', result['strategy'])
        self.assertEqual(units.Gi, result['size_bytes'])
        self.assertIsNone(self.api.delete_root_disk(self.ctxt, 'test-host',
                                                    INSTANCE))
        self.assertEqual({}, self.cluster.pools['vms'])

    def test_delete_missing_disk_is_not_an_error(self):
        self.assertIsNone(self.api.delete_root_disk(self.ctxt, 'test-host',
                                                    INSTANCE))

    def test_list_cached_images(self):
        self.glance.add(IMAGE, b'boot')
        self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE, IMAGE, 1)
        [entry] = self.api.list_cached_images(self.ctxt, 'test-host')
        self.assertEqual((IMAGE, 4), (entry['image_id'],
                                      entry['size_bytes']))

    def test_get_capabilities(self):
        caps = self.api.get_capabilities(self.ctxt, 'test-host')
        self.assertEqual({'version', 'host', 'backend', 'fsid', 'pool',
                          'cache', 'calls', 'flattens', 'problems'},
                         set(caps))
        self.assertEqual(('test-host', 'rbd', fakes.FSID, 'vms', []),
                         (caps['host'], caps['backend'], caps['fsid'],
                          caps['pool'], caps['problems']))
        self.assertEqual({'path', 'used_bytes', 'free_bytes'},
                         set(caps['cache']))
        self.assertEqual({'long_running': 0, 'long_queued': 0,
                          'max_concurrent_long_calls': 32,
                          'max_queued_long_calls': 256, 'long_refused': 0,
                          'long_expired': 0}, caps['calls'])
        self.assertEqual({'queued': 0, 'running': 0, 'max_queued': 256,
                          'max_running': 1, 'dropped': 0}, caps['flattens'])

    def test_get_capabilities_reports_unreachable_ceph(self):
        self.cluster.reachable = False
        caps = self.api.get_capabilities(self.ctxt, 'test-host')
        self.assertIn('Ceph', caps['problems'][0])
        caps = self.api.get_capabilities(self.ctxt, 'test-host')
        self.assertIsNone(caps['fsid'])
        self.assertIn('Ceph is unavailable', caps['problems'][0])
        self.cluster.reachable = True
        caps = self.api.get_capabilities(self.ctxt, 'test-host')
        self.assertEqual((fakes.FSID, []), (caps['fsid'], caps['problems']))

    def test_a_healthy_answer_is_reused_briefly_a_problem_never(self):
        with mock.patch.object(self.manager.storage, 'status',
                               return_value=(fakes.FSID, [])) as status:
            self.api.get_capabilities(self.ctxt, 'test-host')
            self.api.get_capabilities(self.ctxt, 'test-host')
            self.assertEqual(1, status.call_count)
            self.manager._healthy = None
            status.return_value = (fakes.FSID, ['Ceph has no OSD up'])
            for _i in range(2):
                caps = self.api.get_capabilities(self.ctxt, 'test-host')
                self.assertEqual(['Ceph has no OSD up'], caps['problems'])
            self.assertEqual(3, status.call_count)

    def test_typed_errors_reach_the_caller(self):
        e = self.assertRaises(exception.ImageNotFound,
                              self.api.create_root_disk, self.ctxt,
                              'test-host', INSTANCE, IMAGE, 1)
        self.assertIn(IMAGE, str(e))
        self.cluster.reachable = False
        self.assertRaises(exception.BackendUnavailable,
                          self.api.delete_root_disk, self.ctxt, 'test-host',
                          INSTANCE)

    def test_unknown_method(self):
        self.assertRaises(messaging.NoSuchMethod, self.call, 'format_disk')

    def test_private_method_cannot_be_called(self):
        self.assertRaises(messaging.NoSuchMethod, self.call,
                          '_long_call')

    def test_empty_context_is_accepted(self):
        client = self.api.client.prepare(server='test-host', timeout=10)
        caps = client.call({}, 'get_capabilities')
        self.assertEqual('test-host', caps['host'])


class BadInputTest(RPCTestCase):

    def assertInvalid(self, argument, method='create_root_disk', **kwargs):
        e = self.assertRaises(exception.InvalidInput, self.call, method,
                              **kwargs)
        self.assertIn(argument, str(e))
        self.assertEqual({}, self.cluster.pools['vms'])
        self.assertEqual(0, self.glance.downloads)
        return e

    def create(self, **overrides):
        kwargs = dict(instance_uuid=INSTANCE, image_id=IMAGE, size_gb=1)
        kwargs.update(overrides)
        return kwargs

    def test_bad_instance_uuids(self):
        for bad in ('', 'abc', '../../etc', INSTANCE + 'x', 42,
                    INSTANCE.replace('-', ''), '{%s}' % INSTANCE):
            self.assertInvalid('instance_uuid',
                               **self.create(instance_uuid=bad))

    def test_bad_image_ids(self):
        for bad in ('../../etc/passwd', '/etc/passwd', 'img', None, 1.5):
            self.assertInvalid('image_id', **self.create(image_id=bad))

    def test_bad_sizes(self):
        self.flags(max_root_disk_gb=100)
        for bad in (0, -1, 101, 10 ** 30, 1.5, '10', True, None, [1]):
            self.assertInvalid('size_gb', **self.create(size_gb=bad))

    def test_missing_arguments(self):
        self.assertInvalid('image_id', instance_uuid=INSTANCE, size_gb=1)
        self.assertInvalid('instance_uuid', method='delete_root_disk')

    def test_unexpected_arguments(self):
        self.assertInvalid('force', **self.create(force=True))
        self.assertInvalid('verbose', method='get_capabilities', verbose=1)

    def test_upper_case_uuid_is_normalised(self):
        url = self.cluster.add_glance_image(IMAGE, b'boot')
        self.glance.add(IMAGE, b'boot', direct_url=url)
        result = self.call('create_root_disk', **self.create(
            instance_uuid=INSTANCE.upper(), image_id=IMAGE.upper()))
        self.assertEqual(INSTANCE + '_disk', result['name'])

    @settings(max_examples=150, deadline=None)
    @given(instance_uuid=st.one_of(st.text(max_size=60), st.integers(),
                                   st.none(), st.lists(st.integers())),
           image_id=st.one_of(st.text(max_size=60), st.floats(), st.none()),
           size_gb=st.one_of(st.integers(), st.floats(), st.text(max_size=5),
                             st.none(), st.booleans()))
    def test_any_hostile_arguments_get_a_typed_error(self, instance_uuid,
                                                     image_id, size_gb):
        try:
            self.call('create_root_disk', instance_uuid=instance_uuid,
                      image_id=image_id, size_gb=size_gb)
        except (exception.InvalidInput, exception.ImageNotFound):
            pass
        self.assertEqual({}, self.cluster.pools['vms'])


class RPCClientTest(FakeTransportTestCase):

    def test_long_calls_use_long_timeout_and_heartbeats(self):
        self.flags(long_rpc_timeout=900, rpc_response_timeout=30)
        api = rpcapi.ImageAgentAPI(self.conf)
        prepared = api._prepare('h1', long_call=True)
        self.assertEqual(('h1', 900, 30, '1.0'),
                         (prepared.target.server, prepared.timeout,
                          prepared.call_monitor_timeout,
                          prepared.target.version))

    def test_version_cap_comes_from_upgrade_levels(self):
        self.flags(imaged='1.0', group='upgrade_levels')
        self.assertEqual('1.0', rpcapi.ImageAgentAPI(self.conf).client
                         .version_cap)

    def test_server_version_is_the_client_version(self):
        self.assertEqual(rpcapi.RPC_API_VERSION,
                         imaged_manager.ImageAgentManager.target.version)


class EntryPointTest(base.TestCase):

    def test_build_manager_wires_the_pieces(self):
        manager = imaged_cmd.build_manager(self.conf)
        self.assertEqual('test-host', manager.host)
        self.assertIs(manager.storage, manager.root_disks.storage)
        # One of each long-lived part, handed to all that use it.
        self.assertIs(manager.flattens, manager.root_disks.flattens)
        self.assertIs(manager.files, manager.image_cache.files)
        self.assertIs(manager.files, manager.snapshots.files)
        self.assertIs(manager.root_disks.access, manager.snapshots.access)
        self.assertIs(manager.root_disks.access, manager.flattening.access)
        self.assertIs(manager.notifications,
                      manager.image_cache.notifications)
        self.assertIs(manager.glance, manager.root_disks.glance)


class HostileContextTest(RPCTestCase):

    def test_bad_context_fields_get_invalid_input(self):
        client = self.api.client.prepare(server='test-host', timeout=10)
        for ctxt, field in [({'request_id': {'nested': 1}}, 'request_id'),
                            ({'auth_token': 5}, 'auth_token'),
                            ({'auth_token': 'tok\r\nX-Injected: 1'},
                             'auth_token'),
                            ({'user_name': 'a\x00b'}, 'user_name')]:
            e = self.assertRaises(exception.InvalidInput, client.call, ctxt,
                                  'get_capabilities')
            self.assertIn(field, str(e))

    def test_bad_call_timeouts_get_invalid_input(self):
        client = self.api.client.prepare(server='test-host', timeout=10)
        for bad in (0, -5, 'soon', True, [10], float('nan'), float('inf'),
                    context.MAX_CALL_TIMEOUT + 1):
            e = self.assertRaises(exception.InvalidInput, client.call,
                                  {context.CALL_TIMEOUT: bad},
                                  'get_capabilities')
            self.assertIn('imaged_call_timeout', str(e))

    def test_call_timeouts_in_range_are_accepted(self):
        client = self.api.client.prepare(server='test-host', timeout=10)
        for good in (0.5, 1, 1800, context.MAX_CALL_TIMEOUT):
            client.call({context.CALL_TIMEOUT: good}, 'get_capabilities')

    def test_only_the_api_can_be_called(self):
        for name in ('init_host', 'housekeeping', 'leftovers', 'conf',
                     'root_disks'):
            self.assertRaises(messaging.NoSuchMethod, self.call, name)


class LazyRecoveryAtStartTest(RPCTestCase):
    """Start-up looks for the lazy bases a killed agent left (the real
    ones: tests/functional/test_lazy_first_disk.py); Ceph failing there
    never stops the agent from serving."""

    def setUp(self):
        self.recovered = []
        self.useFixture(fixtures.MockPatch(
            'imaged.imagecache.lazy.LazyFirstDisks.recover',
            side_effect=self.recover))
        self.logged = self.useFixture(fixtures.FakeLogger())
        super().setUp()

    def recover(self, ctxt):
        self.recovered.append(ctxt)
        raise exception.BackendUnavailable(backend='Ceph', reason='down')

    def test_the_agent_serves_and_says_so(self):
        self.assertEqual(1, len(self.recovered))
        self.assertTrue(self.recovered[0].is_admin)  # imaged's own
        self.call('get_capabilities')
        self.assertIn('Lazy bases left by a killed agent: not looked for',
                      self.logged.output)


class BusyAgentTest(RPCTestCase):
    """Long calls held up never keep short calls waiting."""

    options = {'max_concurrent_long_calls': 1, 'max_queued_long_calls': 1}

    def setUp(self):
        super().setUp()
        self.release = threading.Event()
        self.addCleanup(self.release.set)
        self.started = []
        self.deadlines = []

        def create(ctxt, instance_uuid, image_id, size_gb):
            self.started.append(instance_uuid)
            self.deadlines.append(ctxt.deadline)
            self.release.wait(20)
            return {'instance_uuid': instance_uuid, 'image_id': image_id,
                    'pool': 'vms', 'name': instance_uuid + '_disk',
                    'size_bytes': units.Gi, 'strategy': 'clone',
                    'parent': None, 'timings': []}
        self.useFixture(fixtures.MockPatchObject(
            self.manager.root_disks, 'create', side_effect=create))

    def create(self, instance_uuid, ctxt=None):
        outcome = {}

        def run():
            try:
                if ctxt is None:
                    outcome['disk'] = self.api.create_root_disk(
                        self.ctxt, 'test-host', instance_uuid, IMAGE, 1)
                else:
                    outcome['disk'] = self.api.client.prepare(
                        server='test-host', timeout=30).call(
                            ctxt, 'create_root_disk',
                            instance_uuid=instance_uuid, image_id=IMAGE,
                            size_gb=1)
            except Exception as e:
                outcome['error'] = e
        thread = threading.Thread(target=run)
        thread.start()
        self.addCleanup(thread.join, 30)
        return thread, outcome

    def calls(self):
        return self.manager.long_calls.stats()

    def wait_for(self, **stats):
        end = time.monotonic() + 10
        while not stats.items() <= self.calls().items():
            self.assertLess(time.monotonic(), end, self.calls())
            time.sleep(0.01)

    def test_short_calls_answer_while_long_calls_wait_and_overflow(self):
        first, _ = self.create(INSTANCE)
        self.wait_for(long_running=1)
        second, queued = self.create(IMAGE)
        self.wait_for(long_queued=1)
        started = time.monotonic()
        e = self.assertRaises(exception.AgentBusy, self.api.create_root_disk,
                              self.ctxt, 'test-host', IMAGE.replace('0', '1'),
                              IMAGE, 1)
        self.assertIn('test-host', str(e))
        caps = self.api.get_capabilities(self.ctxt, 'test-host')
        self.assertEqual((1, 1, 1), (caps['calls']['long_running'],
                                     caps['calls']['long_queued'],
                                     caps['calls']['long_refused']))
        self.assertEqual([], self.api.list_cached_images(self.ctxt,
                                                         'test-host'))
        self.assertIsNone(self.api.delete_root_disk(
            self.ctxt, 'test-host', IMAGE.replace('0', '2')))
        self.assertLess(time.monotonic() - started, 5)
        self.release.set()
        second.join(10)
        self.assertEqual(IMAGE, queued['disk']['instance_uuid'])
        self.assertEqual([INSTANCE, IMAGE], self.started)

    def test_a_queued_call_past_its_callers_wait_answers_timeout(self):
        self.create(INSTANCE)
        self.wait_for(long_running=1)
        ctxt = context.with_call_timeout(self.ctxt, 1)
        thread, outcome = self.create(IMAGE, ctxt=ctxt)
        thread.join(10)
        self.assertIsInstance(outcome['error'], exception.Timeout)
        self.assertEqual([INSTANCE], self.started)
        self.assertEqual(1, self.calls()['long_expired'])

    def test_the_deadline_comes_from_the_time_the_client_waits(self):
        self.flags(long_rpc_timeout=100)
        self.release.set()
        self.api.create_root_disk(self.ctxt, 'test-host', INSTANCE, IMAGE, 1)
        self.assertTrue(90 < self.deadlines[-1].remaining() <= 95,
                        self.deadlines[-1])

    def test_a_raw_client_is_taken_to_wait_long_rpc_timeout(self):
        self.flags(long_rpc_timeout=200)
        self.release.set()
        thread, _ = self.create(INSTANCE, ctxt={})
        thread.join(10)
        self.assertTrue(190 < self.deadlines[-1].remaining() <= 195,
                        self.deadlines[-1])

    def test_cache_images_waits_its_turn_too(self):
        self.create(INSTANCE)
        self.wait_for(long_running=1)
        self.useFixture(fixtures.MockPatchObject(
            self.manager.precache, 'run', return_value={IMAGE: 'existing'}))
        result = {}
        thread = threading.Thread(target=lambda: result.update(
            self.api.cache_images(self.ctxt, 'test-host', [IMAGE])))
        thread.start()
        self.wait_for(long_queued=1)
        self.assertEqual({}, result)
        self.release.set()
        thread.join(10)
        self.assertEqual({IMAGE: 'existing'}, result)


class ExecutorThreadsTest(RPCTestCase):

    def test_threads_for_every_long_call_and_short_calls_by_default(self):
        self.assertEqual(50 + rpc.SHORT_CALL_THREADS,
                         rpc.executor_threads(self.conf, 50))

    def test_too_few_threads_set_by_the_operator_are_raised(self):
        self.flags(executor_thread_pool_size=8)
        with self.assertLogs('imaged.rpc', level='WARNING') as logs:
            self.assertEqual(50 + rpc.SHORT_CALL_THREADS,
                             rpc.executor_threads(self.conf, 50))
        self.assertIn('executor_thread_pool_size = 8', logs.output[0])

    def test_more_threads_set_by_the_operator_are_kept(self):
        self.flags(executor_thread_pool_size=500)
        self.assertEqual(500, rpc.executor_threads(self.conf, 50))
