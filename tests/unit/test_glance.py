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

"""GlanceAPI over a fake HTTP transport: credentials, locations, copy, errors.

The requests made by the real glanceclient and keystoneauth code go to a
small requests adapter that answers like Glance; no server, no network.
"""

import io
import json
import urllib.parse

import fixtures
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import identity
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import plugin
from keystoneauth1 import service_token
from keystoneauth1 import token_endpoint
import requests

from imaged import context as imaged_context
from imaged import exception
from imaged.image import glance
from imaged.image import record as image_record
from imaged import policy
from tests import base

IMAGE = '3c4f6b12-5d51-4c0e-9b1a-0b8c7e7c3a01'
ENDPOINT = 'http://glance.test:9292'
SCHEMA = {'name': 'image', 'properties': {}, 'additionalProperties': True}


def versions(*ids):
    return {'versions': [{'id': v, 'status': 'SUPPORTED'} for v in ids]}


class FakeGlanceHTTP(requests.adapters.BaseAdapter):
    """Answers ``(method, path)`` from a dict; records every request."""

    def __init__(self):
        super().__init__()
        self.sent = []
        self.routes = {
            ('GET', '/versions'): (200, versions('v2.16', 'v2.17')),
            ('GET', '/v2/schemas/image'): (200, SCHEMA),
            ('GET', '/v2/images/%s' % IMAGE): (200, {'id': IMAGE}),
        }

    def answer(self, method, path, *answers):
        """Answer the next requests in turn; the last one from then on."""
        self.routes[(method, path)] = list(answers)

    def send(self, request, **kwargs):
        self.sent.append(request)
        path = urllib.parse.urlsplit(request.url).path
        route = self.routes.get((request.method, path), (404, 'no route'))
        if isinstance(route, list):
            route = route.pop(0) if len(route) > 1 else route[0]
        if isinstance(route, Exception):
            raise route
        status, body = route
        resp = requests.Response()
        resp.status_code = status
        resp.request = request
        resp.url = request.url
        if isinstance(body, str):
            resp.headers['Content-Type'] = 'text/plain'
            resp._content = body.encode()
        else:
            resp.headers['Content-Type'] = 'application/json'
            resp._content = json.dumps(body).encode()
        return resp

    def close(self):
        pass

    def headers_of(self, method, path):
        return [r.headers for r in self.sent
                if r.method == method and
                urllib.parse.urlsplit(r.url).path == path]


class FakeIdentity(plugin.BaseAuthPlugin):
    """A keystoneauth plugin with a fixed token, no Keystone behind it."""

    def __init__(self, token):
        super().__init__()
        self.token = token

    def get_token(self, session):
        return self.token

    def get_endpoint(self, session, **kwargs):
        return None


class GlanceTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(connect_retries=2, status_code_retries=2, group='glance')
        self.sleeps = []
        # keystoneauth retries every request and sleeps between tries.
        self.useFixture(fixtures.MonkeyPatch(
            'keystoneauth1.session.time.sleep', self.sleeps.append))
        self.http = FakeGlanceHTTP()

    def api(self, glance_auth=None, service_user_auth=None):
        """A GlanceAPI whose [glance]/[service_user] plugins are given."""
        if glance_auth is not None or service_user_auth is not None:
            plugins = {'glance': glance_auth,
                       'service_user': service_user_auth}
            self.useFixture(fixtures.MonkeyPatch(
                'keystoneauth1.loading.load_auth_from_conf_options',
                lambda conf, group, **kw: plugins[group]))
        api = glance.GlanceAPI(self.conf)
        api.session().session.mount(ENDPOINT, self.http)
        return api

    def user_context(self, token='user-token'):
        return imaged_context.RequestContext(auth_token=token)


class AuthPluginTest(GlanceTestCase):
    """Which keystoneauth plugin a request carries."""

    def password_flags(self, group, username):
        self.conf.register_opts(
            ks_loading.get_auth_plugin_conf_options('password'), group=group)
        self.flags(group=group, auth_type='password',
                   auth_url='http://keystone.test:5000/v3',
                   username=username, password='secret',
                   project_name='service', user_domain_name='Default',
                   project_domain_name='Default')

    def test_user_token_goes_with_a_service_token_of_service_user(self):
        self.password_flags('glance', 'imaged')
        self.password_flags('service_user', 'imaged-svc')
        auth = self.api().auth.auth_for(self.user_context())
        self.assertIsInstance(auth, service_token.ServiceTokenAuthWrapper)
        self.assertIsInstance(auth.user_auth, token_endpoint.Token)
        self.assertEqual('user-token', auth.user_auth.token)
        self.assertEqual(ENDPOINT, auth.user_auth.endpoint)
        self.assertIsInstance(auth.service_auth, identity.Password)
        self.assertEqual('imaged-svc',
                         auth.service_auth.get_cache_id_elements()['username'])

    def test_service_token_from_glance_group_without_service_user(self):
        self.password_flags('glance', 'imaged')
        auth = self.api().auth.auth_for(self.user_context())
        self.assertIsInstance(auth, service_token.ServiceTokenAuthWrapper)
        self.assertEqual('imaged',
                         auth.service_auth.get_cache_id_elements()['username'])

    def test_no_caller_token_is_the_service_user_alone_for_imaged(self):
        # imaged's own business (no context), a trusted caller, and a
        # tokenless caller for the one public image it was cleared for.
        self.password_flags('glance', 'imaged')
        api = self.api()
        trusted = self.user_context(token=None)
        trusted.caller = policy.trusted()
        anonymous = self.user_context(token=None)
        anonymous.caller = policy.Caller('anonymous')
        anonymous.caller.may_use(image_record.ImageRecord(
            id='public-image', visibility='public'))
        for context, image_id in ((None, None), (trusted, 'any-image'),
                                  (anonymous, 'public-image')):
            auth = api.auth.auth_for(context, image_id)
            self.assertIsInstance(auth, identity.Password)
            self.assertEqual('imaged',
                             auth.get_cache_id_elements()['username'])

    def test_no_caller_token_never_falls_back_to_imaged_s_user(self):
        self.password_flags('glance', 'imaged')
        api = self.api()
        anonymous = self.user_context(token=None)
        anonymous.caller = policy.Caller('anonymous')
        never_identified = self.user_context(token=None)
        for context in (anonymous, never_identified):
            e = self.assertRaises(exception.NotAuthorized, api.auth.auth_for,
                                  context, 'private-image')
            self.assertIn('private-image', str(e))
        # Nor through a request: nothing is sent.
        self.assertRaises(exception.NotAuthorized, api.show, anonymous,
                          'private-image')

    def test_service_token_switched_off_sends_the_caller_token_alone(self):
        self.password_flags('glance', 'imaged')
        self.flags(send_service_user_token=False, group='service_user')
        auth = self.api().auth.auth_for(self.user_context())
        self.assertIsInstance(auth, token_endpoint.Token)

    def test_no_credentials_anywhere_sends_the_caller_token_alone(self):
        # tests.base: [glance] auth_type = none, a no-auth Glance.
        auth = self.api().auth.auth_for(self.user_context())
        self.assertIsInstance(auth, token_endpoint.Token)

    def test_headers_on_the_wire(self):
        api = self.api(glance_auth=FakeIdentity('imaged-token'),
                       service_user_auth=FakeIdentity('service-token'))
        api.show(self.user_context(), IMAGE)
        sent = self.http.headers_of('GET', '/v2/images/%s' % IMAGE)[-1]
        self.assertEqual('user-token', sent['X-Auth-Token'])
        self.assertEqual('service-token', sent['X-Service-Token'])
        api.show(None, IMAGE)
        sent = self.http.headers_of('GET', '/v2/images/%s' % IMAGE)[-1]
        self.assertEqual('imaged-token', sent['X-Auth-Token'])
        self.assertNotIn('X-Service-Token', sent)


class LocationsAPITest(GlanceTestCase):

    path = '/v2/images/%s/locations' % IMAGE

    def setUp(self):
        super().setUp()
        self.glance_api = self.api(
            glance_auth=FakeIdentity('imaged-token'),
            service_user_auth=FakeIdentity('service-token'))

    def locations(self):
        return self.glance_api.image_locations(self.user_context(), IMAGE)

    def test_locations_asked_as_imaged_never_with_the_user_token(self):
        url = 'rbd://fsid/images/%s/snap' % IMAGE
        self.http.answer('GET', self.path, (200, [
            {'url': url, 'metadata': {'store': 'ceph'}}]))
        found, why = self.locations()
        self.assertEqual([{'url': url, 'metadata': {'store': 'ceph'}}],
                         found)
        self.assertIsNone(why)
        sent = self.http.headers_of('GET', self.path)
        self.assertEqual(['imaged-token'], [h['X-Auth-Token'] for h in sent])
        self.assertNotIn('X-Service-Token', sent[0])

    def assert_refused(self, status, words):
        self.http.answer('GET', self.path, (status, 'refused'))
        found, why = self.locations()
        self.assertIsNone(found)
        self.assertIn(words, why)
        return why

    def test_403_names_the_policy(self):
        self.assert_refused(403, 'fetch_image_location')

    def test_404_says_who_cannot_see_it(self):
        self.assert_refused(404, 'not visible to imaged')

    def test_501_says_glance_is_too_old(self):
        self.assert_refused(501, '2.17')

    def test_api_older_than_2_17_is_not_even_asked(self):
        self.http.answer('GET', '/versions', (200, versions('v2.16')))
        found, why = self.locations()
        self.assertIsNone(found)
        self.assertIn('2.17', why)
        self.assertEqual([], self.http.headers_of('GET', self.path))

    def test_record_and_locations_cost_one_request_each(self):
        # What the clone path asks on every call: no schema, no /versions
        # once Glance said it has the locations API.
        self.http.answer('GET', self.path, (200, []))
        for _i in range(3):
            self.assertEqual(
                IMAGE, self.glance_api.show(self.user_context(), IMAGE).id)
            self.assertEqual(([], None), self.locations())
        paths = [urllib.parse.urlsplit(r.url).path for r in self.http.sent]
        self.assertEqual(['/v2/images/%s' % IMAGE, '/versions', self.path] +
                         ['/v2/images/%s' % IMAGE, self.path] * 2, paths)

    def test_503_retried_then_not_cloneable(self):
        self.http.answer('GET', self.path, (503, 'busy'))
        found, why = self.locations()
        self.assertIsNone(found)
        self.assertIn('3 attempts', why)
        self.assertEqual([0.5, 1.0], self.sleeps)


class FakeAccess(FakeIdentity):
    """A token whose roles are known, as keystoneauth's identity plugins
    tell them (``get_access(session).role_names``)."""

    def __init__(self, roles=None, error=None):
        super().__init__('imaged-token')
        self.roles, self.error = roles, error

    def get_access(self, session):
        if self.error is not None:
            raise self.error
        return type('Access', (), {'role_names': self.roles})()


class AddLocationTest(GlanceTestCase):

    url = 'rbd://fsid/images/%s/snap' % IMAGE

    def setUp(self):
        super().setUp()
        self.glance_api = self.api(
            glance_auth=FakeIdentity('imaged-token'),
            service_user_auth=FakeIdentity('service-token'))

    def test_the_locations_api_with_the_service_token(self):
        path = '/v2/images/%s/locations' % IMAGE
        self.http.answer('POST', path, (202, ''))
        self.glance_api.add_location(self.user_context(), IMAGE, self.url)
        [sent] = [r for r in self.http.sent if r.method == 'POST']
        self.assertEqual({'url': self.url}, json.loads(sent.body))
        self.assertEqual(('user-token', 'service-token'),
                         (sent.headers['X-Auth-Token'],
                          sent.headers['X-Service-Token']))
        self.assertEqual([], [r for r in self.http.sent
                              if r.method == 'PATCH'])

    def test_an_older_glance_gets_the_locations_patch(self):
        self.http.answer('GET', '/versions', (200, versions('v2.16')))
        path = '/v2/images/%s' % IMAGE
        self.http.answer('PATCH', path, (200, {'id': IMAGE}))
        self.glance_api.add_location(self.user_context(), IMAGE, self.url)
        [sent] = [r for r in self.http.sent if r.method == 'PATCH']
        self.assertEqual(
            [{'op': 'add', 'path': '/locations/-',
              'value': {'url': self.url, 'metadata': {}}}],
            json.loads(sent.body))
        self.assertEqual([], [r for r in self.http.sent
                              if r.method == 'POST'])

    def test_an_older_glance_that_hides_locations_refuses_typed(self):
        self.http.answer('GET', '/versions', (200, versions('v2.16')))
        self.http.answer('PATCH', '/v2/images/%s' % IMAGE, (
            403, "It's not allowed to add locations if locations are "
                 "invisible."))
        e = self.assertRaises(exception.LocationRefused,
                              self.glance_api.add_location,
                              self.user_context(), IMAGE, self.url)
        self.assertIn('403', str(e))


class SeesEveryImageTest(GlanceTestCase):
    """Whether a 404 for imaged's user means the image is gone."""

    def test_admin_role_sees_every_image(self):
        api = self.api(glance_auth=FakeAccess(['service', 'Admin']))
        self.assertTrue(api.sees_every_image())

    def test_the_roles_are_those_of_imaged_s_token(self):
        # What imaged-status reports (its fake Glance has the same call).
        api = self.api(glance_auth=FakeAccess(['service', 'Admin']))
        self.assertEqual(['admin', 'service'], api.user_roles())

    def test_service_role_alone_does_not(self):
        api = self.api(glance_auth=FakeAccess(['service', 'reader']))
        self.assertFalse(api.sees_every_image())

    def test_glance_without_keystone_shows_everything(self):
        self.flags(group='glance', auth_type='none',
                   endpoint_override=ENDPOINT)
        self.assertTrue(self.api().sees_every_image())

    def test_keystone_unreachable_is_typed(self):
        api = self.api(glance_auth=FakeAccess(
            error=ks_exc.ConnectFailure('refused')))
        error = self.assertRaises(exception.BackendUnavailable,
                                  api.sees_every_image)
        self.assertIn('roles of imaged', str(error))


class CopyToStoreTest(GlanceTestCase):

    path = '/v2/images/%s/import' % IMAGE

    def setUp(self):
        super().setUp()
        self.glance_api = self.api(glance_auth=FakeIdentity('imaged-token'))

    def test_copy_image_request_carries_the_caller_s_token(self):
        # Glance's copy_image policy judges the caller, not imaged's admin.
        self.http.answer('POST', self.path, (202, ''))
        answer = self.glance_api.copy_to_store(IMAGE, 'ceph',
                                               self.user_context())
        self.assertEqual((glance.COPY_STARTED, None), answer)
        request = [r for r in self.http.sent if r.method == 'POST'][0]
        self.assertEqual({'method': {'name': 'copy-image'},
                          'stores': ['ceph'],
                          'all_stores_must_succeed': False},
                         json.loads(request.body))
        self.assertEqual('user-token', request.headers['X-Auth-Token'])
        self.assertEqual('imaged-token', request.headers['X-Service-Token'])

    def test_copy_without_a_caller_token_is_imaged_s(self):
        self.http.answer('POST', self.path, (202, ''))
        self.glance_api.copy_to_store(IMAGE, 'ceph', None)
        request = [r for r in self.http.sent if r.method == 'POST'][0]
        self.assertEqual('imaged-token', request.headers['X-Auth-Token'])
        self.assertNotIn('X-Service-Token', request.headers)

    def test_409_is_busy(self):
        self.http.answer('POST', self.path, (409, 'Image has active task'))
        answer, detail = self.glance_api.copy_to_store(IMAGE, 'ceph')
        self.assertEqual(glance.COPY_BUSY, answer)
        self.assertIn('active task', detail)

    def test_403_names_the_copy_image_policy(self):
        self.http.answer('POST', self.path, (403, 'no'))
        answer, detail = self.glance_api.copy_to_store(IMAGE, 'ceph')
        self.assertEqual(glance.COPY_REFUSED, answer)
        self.assertIn('copy_image', detail)

    def test_400_is_refused(self):
        self.http.answer('POST', self.path,
                         (400, "Image is already present at store 'ceph'"))
        answer, detail = self.glance_api.copy_to_store(IMAGE, 'ceph')
        self.assertEqual(glance.COPY_REFUSED, answer)
        self.assertIn('already present', detail)


class RBDStoresTest(GlanceTestCase):
    """Glance's RBD stores, from GET /v2/info/stores/detail."""

    path = '/v2/info/stores/detail'

    def setUp(self):
        super().setUp()
        self.sleeps = []
        self.useFixture(fixtures.MonkeyPatch('time.sleep',
                                             self.sleeps.append))
        self.glance_api = self.api(glance_auth=FakeIdentity('imaged-token'))

    def test_rbd_stores_with_pool_and_fsid(self):
        self.http.answer('GET', self.path, (200, {'stores': [
            {'id': 'local', 'type': 'file',
             'properties': {'data_dir': '/x'}},
            {'id': 'ceph', 'type': 'rbd', 'default': True,
             'properties': {'pool': 'images', 'fsid': 'f-1',
                            'chunk_size': 8}},
            {'id': 'old', 'type': 'rbd', 'properties': {'pool': 'img2',
                                                        'fsid': None}},
        ]}))
        self.assertEqual(
            [{'id': 'ceph', 'pool': 'images', 'fsid': 'f-1'},
             {'id': 'old', 'pool': 'img2', 'fsid': None}],
            self.glance_api.rbd_stores())
        sent = self.http.headers_of('GET', self.path)[0]
        self.assertEqual('imaged-token', sent['X-Auth-Token'])

    def test_glance_that_does_not_tell_is_none(self):
        for status in (403, 404, 501):
            self.http.answer('GET', self.path, (status, 'no'))
            self.assertIsNone(self.glance_api.rbd_stores())

    def test_glance_unreachable_is_typed(self):
        self.http.answer('GET', self.path, (503, 'busy'))
        self.assertRaises(exception.BackendUnavailable,
                          self.glance_api.rbd_stores)


class ErrorTypingTest(GlanceTestCase):
    """Nothing but imaged.exception classes leave GlanceAPI."""

    path = '/v2/images/%s' % IMAGE

    def setUp(self):
        super().setUp()
        self.glance_api = self.api()

    def show_raises(self, cls, *answers):
        self.http.answer('GET', self.path, *answers)
        return self.assertRaises(cls, self.glance_api.show, None, IMAGE)

    def test_404_and_403(self):
        self.show_raises(exception.ImageNotFound, (404, 'gone'))
        self.show_raises(exception.ImageNotAuthorized, (403, 'no'))
        self.show_raises(exception.ImageNotAuthorized, (401, 'who'))

    def test_other_4xx_names_the_image_and_the_answer(self):
        for status in (400, 405, 409, 413):
            e = self.show_raises(exception.GlanceRequestFailed,
                                 (status, 'odd'))
            self.assertIn(IMAGE, str(e))
            self.assertIn(str(status), str(e))

    def test_501_is_not_retried(self):
        self.show_raises(exception.GlanceRequestFailed, (501, 'no'))
        self.assertEqual([], self.sleeps)

    def test_an_upload_is_never_sent_twice(self):
        # Its body is a stream: a retry would send what is left of it.
        self.http.answer('PUT', self.path + '/file', (503, 'busy'))
        self.assertRaises(exception.BackendUnavailable,
                          self.glance_api.upload, None, IMAGE,
                          io.BytesIO(b'x' * 10), 10)
        self.http.answer('PUT', self.path + '/file',
                         ks_exc.ConnectFailure('refused'))
        self.assertRaises(exception.BackendUnavailable,
                          self.glance_api.upload, None, IMAGE,
                          io.BytesIO(b'x' * 10), 10)
        self.assertEqual(2, len([r for r in self.http.sent
                                 if r.method == 'PUT']))
        self.assertEqual([], self.sleeps)

    def test_5xx_and_unknown_statuses_are_retried(self):
        for status in (500, 502, 503, 504, 429):
            self.sleeps.clear()
            e = self.show_raises(exception.BackendUnavailable,
                                 (status, 'later'))
            self.assertEqual([0.5, 1.0], self.sleeps)
            self.assertIn(IMAGE, str(e))

    def test_retry_then_success(self):
        self.http.answer('GET', self.path, (503, 'later'),
                         (200, {'id': IMAGE, 'status': 'active'}))
        self.assertEqual('active',
                         self.glance_api.show(None, IMAGE).status)

    def test_connection_failures_are_retried_then_typed(self):
        for error in (ks_exc.ConnectFailure('refused'),
                      ks_exc.ConnectTimeout('slow'),
                      requests.exceptions.ReadTimeout('slow')):
            self.sleeps.clear()
            self.show_raises(exception.BackendUnavailable, error)
            self.assertEqual([0.5, 1.0], self.sleeps)

    def test_keystone_errors_are_typed(self):
        errors = {ks_exc.AuthorizationFailure('bad password'): 'Keystone',
                  ks_exc.Unauthorized('bad password'): 'Keystone',
                  ks_exc.EndpointNotFound('no image'): 'catalog',
                  ks_exc.SSLError('bad cert'): 'Glance',
                  ks_exc.DiscoveryFailure('what'): 'Glance'}
        for error, words in errors.items():
            self.sleeps.clear()
            e = self.show_raises(exception.BackendUnavailable, error)
            self.assertIn(words, str(e))

    def test_errors_opening_the_download_are_typed(self):
        self.http.answer('GET', self.path + '/file', (409, 'odd'))
        self.assertRaises(exception.GlanceRequestFailed,
                          self.glance_api.open_response, None, IMAGE)
        self.http.answer('GET', self.path + '/file',
                         ks_exc.AuthorizationFailure('bad'))
        self.assertRaises(exception.BackendUnavailable,
                          self.glance_api.open_response, None, IMAGE)

    def test_catalog_without_glance(self):
        self.flags(endpoint_override=None, group='glance')
        api = self.api(glance_auth=FakeIdentity('t'))
        e = self.assertRaises(exception.BackendUnavailable, api.show, None,
                              IMAGE)
        self.assertIn('endpoint', str(e))
