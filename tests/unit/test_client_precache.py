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

"""``imaged-client precache`` with a fake ImageAgentAPI."""

import io
import json
import os
import threading
from unittest import mock

import oslo_messaging as messaging

from imaged.cmd import client
from imaged.cmd import fleet_precache as precache
from imaged import exception
from tests import base

A = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a01'
B = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a02'


class FakeAPI:
    """cache_images answers per host: a dict, or an exception to raise."""

    def __init__(self, answers=None, barrier=None):
        self.answers = answers or {}
        self.barrier = barrier
        self.calls = []
        self.tokens = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def cache_images(self, ctxt, host, image_ids):
        with self._lock:
            self.tokens.append(getattr(ctxt, 'auth_token', None))
            self.calls.append((host, list(image_ids)))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.barrier is not None:
                self.barrier.wait()
            answer = self.answers.get(host)
            if isinstance(answer, Exception):
                raise answer
            return answer or {i: 'cached' for i in image_ids}
        finally:
            with self._lock:
                self.in_flight -= 1


class Terminal(io.StringIO):
    def isatty(self):
        return True


class PrecacheRunTest(base.TestCase):

    def run_precache(self, api, hosts, image_ids=(A, B), concurrency=4,
                     stderr=None):
        self.stdout, self.stderr = io.StringIO(), stderr or io.StringIO()
        return precache.run(api, {}, hosts, list(image_ids), concurrency,
                            self.stdout, self.stderr)

    def lines(self):
        return {a['host']: a for a in
                map(json.loads, self.stdout.getvalue().splitlines())}

    def test_every_host_ready_exits_0_with_a_json_line_each(self):
        api = FakeAPI({'h2': {A: 'existing', B: 'cached'}})
        self.assertEqual(0, self.run_precache(api, ['h1', 'h2']))
        lines = self.lines()
        self.assertEqual({'h1', 'h2'}, set(lines))
        self.assertEqual(({A: 'existing', B: 'cached'}, 'ok', None),
                         (lines['h2']['images'], lines['h2']['result'],
                          lines['h2']['error']))
        # The table goes to stderr when stdout is for machines.
        self.assertIn('h2', self.stderr.getvalue())
        self.assertIn('existing', self.stderr.getvalue())

    def test_a_silent_host_is_skipped_and_the_exit_is_1(self):
        api = FakeAPI({'down': messaging.MessagingTimeout('no reply')})
        self.assertEqual(1, self.run_precache(api, ['up', 'down']))
        lines = self.lines()
        self.assertEqual(('skipped', {A: 'skipped', B: 'skipped'},
                          'MessagingTimeout'),
                         (lines['down']['result'], lines['down']['images'],
                          lines['down']['error']['class']))
        self.assertEqual('ok', lines['up']['result'])

    def test_a_failing_host_or_image_fails_the_run(self):
        remote = type('BackendUnavailable_Remote',
                      (exception.BackendUnavailable,), {})
        api = FakeAPI({
            'h1': remote('Ceph is unavailable: timed out\nTraceback...'),
            'h2': {A: 'cached', B: 'unsupported'},
            'h3': exception.RPCVersionCapped(version='1.1', cap='1.0')})
        self.assertEqual(1, self.run_precache(api, ['h1', 'h2', 'h3']))
        lines = self.lines()
        self.assertEqual(
            {'class': 'BackendUnavailable',
             'message': 'Ceph is unavailable: timed out'},
            lines['h1']['error'])
        self.assertEqual({A: 'error', B: 'error'}, lines['h1']['images'])
        self.assertEqual(('failed', {A: 'cached', B: 'unsupported'}),
                         (lines['h2']['result'], lines['h2']['images']))
        self.assertEqual('RPCVersionCapped', lines['h3']['error']['class'])

    def test_a_missing_image_in_the_answer_is_not_ready(self):
        api = FakeAPI({'h1': {A: 'cached'}})
        self.assertEqual(1, self.run_precache(api, ['h1']))

    def test_at_most_concurrency_hosts_at_once(self):
        api = FakeAPI(barrier=threading.Barrier(3, timeout=20))
        hosts = ['h%d' % i for i in range(9)]
        self.assertEqual(0, self.run_precache(api, hosts, concurrency=3))
        self.assertEqual(3, api.most_in_flight)
        self.assertEqual(sorted(hosts), sorted(h for h, _i in api.calls))

    def test_on_a_terminal_a_progress_bar_then_the_table(self):
        api = FakeAPI({'h2': messaging.MessagingTimeout('no reply')})
        self.assertEqual(1, self.run_precache(api, ['h1', 'h2'],
                                              stderr=Terminal()))
        out = self.stdout.getvalue()
        for word in ('h1', 'h2', 'cached', 'skipped', A):
            self.assertIn(word, out)
        self.assertNotIn('{', out)  # no JSON lines on a terminal


class ReadHostsTest(base.TestCase):

    def test_hosts_and_file_merge_without_duplicates(self):
        path = os.path.join(self.tempdir, 'hosts')
        with open(path, 'w') as f:
            f.write('# rack 1\nc1\n  c2  # the big one\n\nc1\nc3\n')
        self.assertEqual(['c0', 'c1', 'c2', 'c3'],
                         precache.read_hosts('c0,c1,', path))


class MainTest(base.TestCase):

    def main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with mock.patch('sys.stdout', out), mock.patch('sys.stderr', err), \
                mock.patch.object(client.rpcapi, 'ImageAgentAPI',
                                  return_value=self.api), \
                mock.patch.object(client, 'CONF'):
            try:
                code = client.main(list(argv))
            except SystemExit as e:
                code = e.code
        return code, out.getvalue(), err.getvalue()

    def setUp(self):
        super().setUp()
        self.api = FakeAPI()

    def test_precache_calls_every_host(self):
        code, out, _err = self.main('precache', '--hosts', 'h1,h2', A,
                                    B.upper())
        self.assertEqual(0, code)
        self.assertEqual([('h1', [A, B]), ('h2', [A, B])],
                         sorted(self.api.calls))
        self.assertEqual(2, len(out.splitlines()))

    def test_token_comes_from_a_file_or_the_environment_never_argv(self):
        self.useFixture(base.fixtures.EnvironmentVariable('OS_AUTH_TOKEN'))
        self.main('precache', '--hosts', 'h1', A)
        self.useFixture(base.fixtures.EnvironmentVariable(
            'OS_AUTH_TOKEN', 'env-token'))
        self.main('precache', '--hosts', 'h1', A)
        path = os.path.join(self.useFixture(
            base.fixtures.TempDir()).path, 'token')
        with open(path, 'w') as f:
            f.write('file-token\n')
        self.main('--auth-token-file', path, 'precache', '--hosts', 'h1', A)
        with mock.patch('sys.stdin', io.StringIO('stdin-token\n')):
            self.main('--auth-token-file', '-', 'precache', '--hosts', 'h1',
                      A)
        self.assertEqual([None, 'env-token', 'file-token', 'stdin-token'],
                         self.api.tokens)
        code, _out, _err = self.main('--auth-token', 'secret', 'precache',
                                     '--hosts', 'h1', A)
        self.assertEqual(2, code)
        code, _out, err = self.main('--auth-token-file', '/nonexistent',
                                    'precache', '--hosts', 'h1', A)
        self.assertEqual(2, code)
        self.assertIn('auth-token-file', err)
        self.assertEqual(4, len(self.api.calls))

    def test_bad_arguments_exit_2_before_any_call(self):
        for argv in (('precache', A),
                     ('precache', '--hosts', 'h1', 'not-a-uuid'),
                     ('precache', '--hosts', 'h1', A, A),
                     ('precache', '--hosts', 'h1', '--concurrency', '0', A),
                     ('precache', '--hosts', ',', A),
                     ('precache', '--hosts-file', '/nonexistent', A),
                     ('capabilities',)):
            code, _out, _err = self.main(*argv)
            self.assertIn(code, (1, 2), argv)
            self.assertEqual([], self.api.calls, argv)
