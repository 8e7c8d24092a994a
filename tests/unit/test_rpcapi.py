"""What ImageAgentAPI sends: how long it waits, in the request context."""

from imaged import context
from imaged import rpcapi
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
