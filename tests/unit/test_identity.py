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

"""TokenValidator: Keystone's answer about a caller's token, remembered for
the token's life, bounded in entries and time; Keystone down is a typed
error."""

import datetime
import logging

import fixtures
from keystoneauth1 import exceptions as ks_exc

from imaged import deadline
from imaged import exception
from imaged import identity
from tests import base

NOW = 1_800_000_000.0  # seconds since the epoch
IMAGED_AUTH = object()  # imaged's own keystoneauth plugin


def token_body(user, project, roles, expires_in):
    expires = datetime.datetime.fromtimestamp(NOW + expires_in,
                                              datetime.timezone.utc)
    return {'token': {
        'expires_at': expires.strftime('%Y-%m-%dT%H:%M:%S.000000Z'),
        'issued_at': '2027-01-15T08:00:00.000000Z',
        'user': {'id': user, 'name': user, 'domain': {'id': 'default'}},
        'project': {'id': project, 'name': project,
                    'domain': {'id': 'default'}},
        'roles': [{'id': r, 'name': r} for r in roles],
        'methods': ['password']}}


class FakeResponse:
    def __init__(self, status_code, body=None, token=None):
        self.status_code = status_code
        self._body = body
        self.headers = {'X-Subject-Token': token} if token else {}

    def json(self):
        return self._body


class FakeKeystoneSession:
    """``session.get('/auth/tokens...')`` over a dict of tokens."""

    def __init__(self):
        self.tokens = {}  # token -> body
        self.asked = []   # (url, subject token, auth, endpoint_filter)
        self.timeouts = []  # each request's socket timeout
        self.error = None  # raised instead of answering
        self.status = None  # answered instead of the token

    def get(self, url, headers=None, auth=None, endpoint_filter=None,
            raise_exc=True, **kwargs):
        token = headers['X-Subject-Token']
        self.asked.append((url, token, auth, endpoint_filter))
        self.timeouts.append(kwargs.get('timeout'))
        if self.error is not None:
            raise self.error
        if self.status is not None:
            return FakeResponse(self.status)
        if token not in self.tokens:
            return FakeResponse(404)
        return FakeResponse(200, self.tokens[token], token)


class TokenValidatorTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(
            level=logging.DEBUG, format='%(levelname)s %(message)s'))
        self.session = FakeKeystoneSession()
        self.wall = [NOW]
        self.mono = [100.0]
        self.session.tokens['alice-token'] = token_body(
            'alice', 'project-a', ['member', 'reader'], 3600)
        self.session.tokens['bob-token'] = token_body(
            'bob', 'project-b', ['member'], 3600)

    def validator(self):
        return identity.TokenValidator(
            self.conf, self.session, IMAGED_AUTH,
            wall_clock=lambda: self.wall[0], clock=lambda: self.mono[0])

    def wait(self, seconds):
        self.wall[0] += seconds
        self.mono[0] += seconds

    def test_project_user_and_roles_are_keystone_s(self):
        found = self.validator().validate('alice-token')
        self.assertEqual(('alice', 'project-a', {'member', 'reader'}),
                         (found.user_id, found.project_id, set(found.roles)))
        self.assertEqual(NOW + 3600, found.expires)
        [(url, token, auth, endpoint)] = self.session.asked
        # As keystonemiddleware: imaged's own user asks, allow_expired.
        self.assertEqual('/auth/tokens?allow_expired=1', url)
        self.assertEqual('alice-token', token)
        self.assertIs(IMAGED_AUTH, auth)
        self.assertEqual(('identity', 'public', (3, 0)),
                         (endpoint['service_type'], endpoint['interface'],
                          endpoint['version']))

    def test_an_answer_is_remembered_and_keyed_without_the_token(self):
        validator = self.validator()
        for _ in range(3):
            self.assertEqual('alice',
                             validator.validate('alice-token').user_id)
        self.assertEqual(1, len(self.session.asked))
        self.assertNotIn('alice-token', list(validator._cache.keys()))

    def test_forgotten_when_the_token_expires(self):
        self.session.tokens['short'] = token_body('carol', 'project-c',
                                                  ['member'], 60)
        validator = self.validator()
        validator.validate('short')
        self.wait(59)
        validator.validate('short')
        self.assertEqual(1, len(self.session.asked))
        self.wait(2)
        validator.validate('short')
        self.assertEqual(2, len(self.session.asked))

    def test_never_remembered_past_token_cache_time(self):
        self.flags(token_cache_time=300, group='callers')
        validator = self.validator()
        validator.validate('alice-token')  # valid for an hour
        self.wait(299)
        validator.validate('alice-token')
        self.assertEqual(1, len(self.session.asked))
        self.wait(2)
        validator.validate('alice-token')
        self.assertEqual(2, len(self.session.asked))

    def test_token_cache_time_0_asks_every_time(self):
        self.flags(token_cache_time=0, group='callers')
        validator = self.validator()
        validator.validate('alice-token')
        validator.validate('alice-token')
        self.assertEqual(2, len(self.session.asked))

    def test_bounded_in_entries(self):
        self.flags(token_cache_size=2, group='callers')
        self.session.tokens['carol-token'] = token_body(
            'carol', 'project-c', ['member'], 3600)
        validator = self.validator()
        for token in ('alice-token', 'bob-token', 'carol-token'):
            validator.validate(token)
        self.assertEqual(2, len(validator._cache))
        validator.validate('carol-token')  # kept
        self.assertEqual(3, len(self.session.asked))
        validator.validate('alice-token')  # the least recently used went
        self.assertEqual(4, len(self.session.asked))

    def test_an_expired_token_keystone_still_validates_is_accepted(self):
        # A call waited in the queue past its token's expiry: Keystone
        # answers within its allow_expired_window, and imaged remembers it
        # no longer than token_cache_time.
        self.session.tokens['expired'] = token_body('dave', 'project-d',
                                                    ['member'], -120)
        validator = self.validator()
        self.assertEqual('dave', validator.validate('expired').user_id)
        self.assertIn('expired 120 s ago', self.log.output)
        self.wait(self.conf.callers.token_cache_time + 1)
        validator.validate('expired')
        self.assertEqual(2, len(self.session.asked))

    def test_unknown_token_is_not_authorized_and_not_remembered(self):
        validator = self.validator()
        for _ in range(2):
            e = self.assertRaises(exception.NotAuthorized,
                                  validator.validate, 'forged-token')
            self.assertNotIn('forged-token', str(e))
        self.assertEqual(2, len(self.session.asked))
        self.assertNotIn('forged-token', self.log.output)

    def test_keystone_down_is_a_typed_error_never_a_fallback(self):
        validator = self.validator()
        for error in (ks_exc.ConnectFailure('refused'),
                      ks_exc.ConnectTimeout('timed out'),
                      ks_exc.SSLError('certificate')):
            self.session.error = error
            e = self.assertRaises(exception.KeystoneUnavailable,
                                  validator.validate, 'alice-token')
            self.assertIsInstance(e, exception.BackendUnavailable)
            self.assertIn(type(error).__name__, str(e))
        self.session.error = None
        for status in (500, 503, 401, 403):
            self.session.status = status
            e = self.assertRaises(exception.KeystoneUnavailable,
                                  validator.validate, 'alice-token')
            self.assertIn(str(status), str(e))
        # Nothing was remembered while Keystone could not tell.
        self.session.status = None
        self.assertEqual('alice', validator.validate('alice-token').user_id)
        self.assertEqual(8, len(self.session.asked))

    def test_a_remembered_answer_outlives_a_keystone_outage(self):
        validator = self.validator()
        validator.validate('alice-token')
        self.session.error = ks_exc.ConnectFailure('refused')
        self.assertEqual('alice', validator.validate('alice-token').user_id)
        self.assertRaises(exception.KeystoneUnavailable, validator.validate,
                          'bob-token')

    def test_an_answer_that_is_not_a_token_is_typed(self):
        self.session.tokens['odd'] = {'not': 'a token'}
        self.assertRaises(exception.KeystoneUnavailable,
                          self.validator().validate, 'odd')

    def test_calls_with_one_new_token_ask_keystone_once(self):
        import threading
        answered = threading.Event()
        asked = []
        real_get = self.session.get

        def slow_get(*args, **kwargs):
            asked.append(1)
            answered.wait(5)
            return real_get(*args, **kwargs)
        self.session.get = slow_get
        validator = self.validator()
        found = []
        threads = [threading.Thread(target=lambda: found.append(
            validator.validate('alice-token'))) for _ in range(8)]
        for thread in threads:
            thread.start()
        deadline = 100
        while not asked and deadline:
            deadline -= 1
            threading.Event().wait(0.01)
        answered.set()
        for thread in threads:
            thread.join(10)
        self.assertEqual(8, len(found))
        self.assertEqual({'alice'}, {f.user_id for f in found})
        self.assertEqual(1, len(asked))
        self.assertEqual({}, validator._asking)


class DeadlineTest(TokenValidatorTest):
    """The caller's deadline bounds a validation as a whole."""

    def deadline(self, seconds):
        return deadline.Deadline(seconds, clock=lambda: self.mono[0])

    def test_without_a_deadline_a_request_waits_the_session_timeout(self):
        self.conf.set_override('timeout', 20, 'glance')
        self.validator().validate('alice-token')
        self.assertEqual([20], self.session.timeouts)

    def test_every_attempt_fits_in_what_is_left_of_the_deadline(self):
        self.conf.set_override('timeout', 20, 'glance')
        self.conf.set_override('connect_retries', 3, 'glance')
        self.conf.set_override('status_code_retries', 1, 'glance')
        found = self.validator().validate('alice-token', self.deadline(8))
        self.assertEqual('alice', found.user_id)
        self.assertEqual([2.0], self.session.timeouts)  # 4 attempts in 8 s

    def test_a_passed_deadline_asks_keystone_nothing(self):
        call = self.deadline(5)
        self.wait(6)
        error = self.assertRaises(exception.Timeout,
                                  self.validator().validate, 'alice-token',
                                  call)
        self.assertIn("token by Keystone", str(error))
        self.assertEqual([], self.session.asked)

    def test_keystone_too_slow_for_the_deadline_is_a_timeout(self):
        call = self.deadline(5)

        def too_slow(*args, **kwargs):
            self.wait(6)  # keystoneauth's attempts used the time up
            raise ks_exc.ConnectTimeout('timed out')
        self.session.get = too_slow
        error = self.assertRaises(exception.Timeout,
                                  self.validator().validate, 'alice-token',
                                  call)
        self.assertIn('after 6.0 seconds', str(error))

    def test_the_wait_for_another_validation_ends_with_the_deadline(self):
        import threading
        answered = threading.Event()
        asking = threading.Event()
        real_get = self.session.get

        def slow_get(*args, **kwargs):
            asking.set()
            answered.wait(30)
            return real_get(*args, **kwargs)
        self.session.get = slow_get
        validator = self.validator()
        first = threading.Thread(target=validator.validate,
                                 args=('alice-token',))
        first.start()
        self.addCleanup(first.join, 30)
        self.addCleanup(answered.set)
        self.assertTrue(asking.wait(30))
        # A real clock: the second call waits on a lock for 0.2 s at most.
        self.assertRaises(exception.Timeout, validator.validate,
                          'alice-token', deadline.Deadline(0.2))
