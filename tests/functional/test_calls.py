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

"""Long calls held up never starve short ones; a call ends with its caller.

The long calls are held up for real: the test takes the Ceph-side lock of
an image's base (``imaged.lock.<image_id>``, lock name ``imaged-base``) as
the admin user, so creates from that image wait for it as they would
behind another host making the base.
"""

import statistics
import threading
import time
import uuid

from oslo_utils import units
from testtools import content

from imaged import exception
from imaged.storage import base_state
from imaged.storage import bases
from tests.functional import base

RUNNING = 4
QUEUED = 196  # with the running ones, the 200 creates
SHORT_CALL_BOUND = 2.0  # seconds: the bound for a short call
WAITERS_TIMEOUT = 60  # seconds the queued creates' caller waits
AGENT_LONG_RPC_TIMEOUT = 20


class CallAdmissionTest(base.FunctionalTestCase):

    daemon_options = {
        'DEFAULT': {'max_concurrent_long_calls': str(RUNNING),
                    'max_queued_long_calls': str(QUEUED),
                    # What a caller that says nothing is taken to wait.
                    'long_rpc_timeout': str(AGENT_LONG_RPC_TIMEOUT)},
        'rbd': {'base_lock_timeout': '300'},
    }

    def setUp(self):
        super().setUp()
        self.assertIn('executor threads', self.daemon.log())
        self.calls = []  # threads of the long calls this test sends
        # What is measured here is one attempt of each call: a lost
        # heartbeat (oslo.messaging sends them best effort; 200 calls
        # answered at once on 2 busy cores can delay them) must fail the
        # test, not be retried into an "existing" answer.
        base.CONF.set_override('rpc_retries', 0)
        self.addCleanup(base.CONF.clear_override, 'rpc_retries')

    def hold_base_lock(self, image_id):
        """Take the base lock of ``image_id`` as another host would;
        returns a function that releases it."""
        ioctx = self.ceph.cluster.open_ioctx(self.ceph.pool)
        key, cookie = base_state.lock_object(image_id), uuid.uuid4().hex
        ioctx.lock_exclusive(key, bases.LOCK_NAME, cookie, desc='test_calls',
                             duration=600)
        released = []

        def release():
            if not released:
                ioctx.unlock(key, bases.LOCK_NAME, cookie)
                released.append(True)

        def forget():
            release()
            try:
                ioctx.remove_object(key)
            except Exception:  # already gone with its base
                pass
            ioctx.close()
        self.addCleanup(forget)
        return release

    def forget_base(self, image_id):
        # Runs after the disks' cleanups (last in, first out).
        self.addCleanup(self.ceph.remove, base_state.base_name(image_id))

    def send_create(self, image_id, raw=False):
        """A create in its own thread; returns its outcome dict."""
        instance_uuid = self.new_instance()
        outcome = {'instance_uuid': instance_uuid}

        def run():
            started = time.monotonic()
            try:
                if raw:
                    # A client that does not say how long it waits.
                    outcome['disk'] = self.api.client.prepare(
                        server=self.host, timeout=WAITERS_TIMEOUT).call(
                            self.ctxt, 'create_root_disk',
                            instance_uuid=instance_uuid, image_id=image_id,
                            size_gb=1)
                else:
                    outcome['disk'] = self.api.create_root_disk(
                        self.ctxt, self.host, instance_uuid, image_id, 1)
            except Exception as e:
                outcome['error'] = e
            outcome['seconds'] = time.monotonic() - started
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.calls.append(thread)
        self.addCleanup(thread.join, 600)
        return outcome

    def long_calls(self):
        return self.api.get_capabilities(self.ctxt, self.host)['calls']

    def wait_for_calls(self, what, timeout=60, **expected):
        def reached():
            calls = self.long_calls()
            return all(calls[k] == v for k, v in expected.items())
        base.wait_for(reached, timeout, interval=0.5, what=what)

    def fill_running_places(self, image_id):
        runners = [self.send_create(image_id) for _ in range(RUNNING)]
        self.wait_for_calls('the first creates to run', long_running=RUNNING)
        return runners

    def timed(self, call, *args):
        started = time.monotonic()
        result = call(self.ctxt, self.host, *args)
        return time.monotonic() - started, result

    def short_calls(self, until):
        """Each short call again and again until ``until`` (monotonic):
        ``{name: [(seconds, when)]}``; a missing disk is deleted."""
        seconds = {'get_capabilities': [], 'list_cached_images': [],
                   'delete_root_disk': []}
        calls = {'get_capabilities': (self.api.get_capabilities,),
                 'list_cached_images': (self.api.list_cached_images,),
                 'delete_root_disk': (self.api.delete_root_disk,
                                      str(uuid.uuid4()))}
        # The cache's list is an operator's (a service token's).
        ctxts = {'list_cached_images': base.service_context()}
        while time.monotonic() < until:
            for name, call in calls.items():
                started = time.monotonic()
                call[0](ctxts.get(name, self.ctxt), self.host, *call[1:])
                seconds[name].append((time.monotonic() - started, started))
            time.sleep(0.5)
        return seconds

    def report(self, name, figures):
        text = '%s: %s' % (name, figures)
        self.addDetail(name, content.text_content(text))
        print(text)

    def test_short_calls_answer_while_200_creates_wait(self):
        held = self.glance.create(base.random_raw(units.Mi), backend='local')
        self.forget_base(held['id'])
        other = self.glance.create(base.random_raw(units.Mi), backend='ceph')
        doomed = self.create_root_disk(other['id'])
        idle = self.short_calls(until=time.monotonic() + 5)
        for name, values in idle.items():
            self.report('idle ' + name, 'n=%d max %.3fs' % (
                len(values), max(values)[0]))
        release = self.hold_base_lock(held['id'])

        expired_before = self.long_calls()['long_expired']
        runners = self.fill_running_places(held['id'])
        self.report('runners', 'image %s, disks %s' % (held['id'], ' '.join(
            r['instance_uuid'] for r in runners)))
        self.flags_long_rpc_timeout(WAITERS_TIMEOUT)
        sent = time.monotonic()
        waiters = [self.send_create(held['id']) for _ in range(QUEUED)]
        self.wait_for_calls('%d creates to queue' % QUEUED,
                            long_running=RUNNING, long_queued=QUEUED)
        queued_after = time.monotonic() - sent

        busy_seconds, _ = self.timed_refusal(held['id'])

        # Short calls, again and again while the creates wait.
        took, _ = self.timed(self.api.delete_root_disk,
                             doomed['instance_uuid'])
        self.report('delete of a real disk', '%.3fs' % took)
        self.assertLess(took, SHORT_CALL_BOUND)
        self.assertNotIn(doomed['name'], self.ceph.names())
        seconds = self.short_calls(until=sent + WAITERS_TIMEOUT - 25)
        self.report('setup', '%d creates queued %.1fs after the first was '
                    'sent; refusal of one more in %.3fs' % (
                        QUEUED, queued_after, busy_seconds))
        for name, values in seconds.items():
            slowest = max(values)
            self.report(name, 'n=%d median %.3fs max %.3fs (at +%.1fs)' % (
                len(values), statistics.median([v for v, _t in values]),
                slowest[0], slowest[1] - sent))
            self.assertLess(slowest[0], SHORT_CALL_BOUND, name)

        # The queued creates give up with their caller: Timeout, no disk.
        for thread in self.calls[RUNNING:]:
            thread.join(WAITERS_TIMEOUT + 30)
        self.assertEqual([], [w.get('error', w) for w in waiters
                              if not isinstance(w.get('error'),
                                                exception.Timeout)])
        answered = sorted(w['seconds'] for w in waiters)
        self.report('queued creates', 'answered Timeout after %.1f..%.1fs '
                    '(their caller waits %ds)' % (
                        answered[0], answered[-1], WAITERS_TIMEOUT))
        self.assertIn('long calls on host %s' % self.host,
                      str(waiters[0]['error']))
        calls = self.long_calls()
        self.assertEqual((RUNNING, 0, expired_before + QUEUED), (
            calls['long_running'], calls['long_queued'],
            calls['long_expired']))

        # The running ones finish once the lock is free.
        release()
        for thread in self.calls[:RUNNING]:
            thread.join(300)
        self.assertEqual(['download'] * RUNNING,
                         [r.get('disk', r)['strategy'] for r in runners])
        names = set(self.ceph.names())
        self.assertEqual([], [w['instance_uuid'] for w in waiters
                              if '%s_disk' % w['instance_uuid'] in names])
        self.wait_for_calls('the long calls to end', long_running=0)

    def test_a_caller_that_says_nothing_is_given_long_rpc_timeout(self):
        held = self.glance.create(base.random_raw(units.Mi), backend='local')
        self.forget_base(held['id'])
        release = self.hold_base_lock(held['id'])
        runners = self.fill_running_places(held['id'])
        raw = self.send_create(held['id'], raw=True)
        self.wait_for_calls('the raw create to queue', long_queued=1)
        self.calls[-1].join(WAITERS_TIMEOUT + 30)
        self.assertIsInstance(raw.get('error'), exception.Timeout,
                              raw.get('error'))
        self.report('raw create', 'answered Timeout after %.1fs (agent\'s '
                    'long_rpc_timeout %ds, caller waits %ds)' % (
                        raw['seconds'], AGENT_LONG_RPC_TIMEOUT,
                        WAITERS_TIMEOUT))
        self.assertLess(raw['seconds'], AGENT_LONG_RPC_TIMEOUT + 5)
        release()
        for thread in self.calls[:RUNNING]:
            thread.join(300)
        self.assertEqual(['download'] * RUNNING,
                         [r.get('disk', r)['strategy'] for r in runners])
        self.assertNotIn('%s_disk' % raw['instance_uuid'], self.ceph.names())

    # -- helpers that need the test's own client settings ---------------------

    def flags_long_rpc_timeout(self, seconds):
        """From now on, ImageAgentAPI's long calls wait ``seconds``."""
        previous = base.CONF.long_rpc_timeout
        base.CONF.set_override('long_rpc_timeout', seconds)
        self.addCleanup(base.CONF.set_override, 'long_rpc_timeout', previous)

    def timed_refusal(self, image_id):
        instance_uuid = str(uuid.uuid4())
        started = time.monotonic()
        e = self.assertRaises(exception.AgentBusy, self.api.create_root_disk,
                              self.ctxt, self.host, instance_uuid, image_id, 1)
        took = time.monotonic() - started
        self.assertIn(self.host, str(e))
        self.assertLess(took, SHORT_CALL_BOUND)
        return took, e
