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

"""Malformed and hostile RPC calls: each gets a typed error, none a trace.

These calls are sent with a raw oslo.messaging client (``ImageAgentAPI``
would not send most of them): what any process on the message bus could
send. A typed error is a class of ``imaged.exception`` rebuilt on the
client, or, for calls the RPC layer itself refuses before reaching imaged
(no such method, unsupported version), oslo.messaging's ``RemoteError``
naming its own exception class.
"""

import uuid

import hypothesis
from hypothesis import strategies as st
import oslo_messaging as messaging

from imaged import exception
from imaged.tempest_plugin.scenario import base

VALID_UUID = '123e4567-e89b-42d3-a456-426614174000'
PATH_LIKE_IDS = [
    '../../../../etc/passwd', '/etc/passwd', 'file:///etc/passwd',
    '.', '..', '.tmp', '', ' ', '%2e%2e%2fetc%2fpasswd',
    VALID_UUID + '/../../../etc/passwd', '../' + VALID_UUID,
    VALID_UUID + '\x00', VALID_UUID + '\n', '\x00' * 36,
    'rbd://fsid/images/%s/snap' % VALID_UUID,
    'http://127.0.0.1:9292/v2/images/%s/file' % VALID_UUID,
]
NON_UUIDS = [
    'not-a-uuid', VALID_UUID.replace('-', ''), '{%s}' % VALID_UUID,
    'urn:uuid:' + VALID_UUID, VALID_UUID[:-1], VALID_UUID + '0',
    ' ' + VALID_UUID, 'x' * 1000000, 12345, 1.5, True, ['a'],
    {'uuid': VALID_UUID},
]
BAD_SIZES = [0, -1, -2 ** 63, 2 ** 63, 10 ** 100, 1.5, 1.0, float('inf'),
             '1', '1 OR 1=1', True, False, [1], {'gb': 1}]
# Public names of the agent's endpoint object that are not RPC API methods.
NOT_API = ['init_host', 'run_periodic_tasks', 'add_periodic_task', 'conf',
           'cache', 'storage', 'glance', 'root_disks', 'host', 'target',
           '__init__', '_clean_image_cache', '_remove_partial_disks',
           'clean_image_cache', 'image_cache', 'long_calls', 'precache',
           'create_root_disks', 'delete_everything', 'housekeeping',
           'leftovers']


class BadInputTestCase(base.ScenarioTestCase):

    def call(self, method, ctxt=None, version=None, **kwargs):
        client = self.caller(timeout=60)
        if version:
            client = client.prepare(version=version)
        return client.call(self.ctxt if ctxt is None else ctxt, method,
                           **kwargs)

    def assertTypedError(self, method, *args, **kwargs):
        """The call fails with a typed error; returns it."""
        try:
            result = self.call(method, *args, **kwargs)
        except exception.ImagedException as e:
            return e
        except messaging.RemoteError as e:
            if e.exc_type in ('NoSuchMethod', 'UnsupportedVersion'):
                return e
            self.fail('%s(%s) failed with an untyped %s: %s' % (
                method, self._show(kwargs), e.exc_type, e.value))
        except messaging.MessagingTimeout:
            self.fail('%s(%s) got no answer' % (method, self._show(kwargs)))
        except Exception as e:
            self.fail('%s(%s) failed with an untyped %s: %s' % (
                method, self._show(kwargs), type(e).__name__,
                str(e).split('\n')[0]))
        self.fail('%s(%s) was accepted: %r' % (method, self._show(kwargs),
                                               result))

    @staticmethod
    def _show(kwargs):
        return ', '.join('%s=%.80r' % item for item in sorted(kwargs.items()))

    def assertInvalid(self, argument, method='create_root_disk', **kwargs):
        e = self.assertTypedError(method, **kwargs)
        self.assertIsInstance(e, exception.InvalidInput)
        self.assertIn(argument, str(e))
        return e

    def assertAgentHealthy(self):
        caps = self.api.get_capabilities(self.ctxt, self.host)
        self.assertEqual([], caps['problems'])


class MalformedArgumentsTest(BadInputTestCase):

    def create_kwargs(self, **overrides):
        instance_uuid = self.new_instance()
        kwargs = {'instance_uuid': instance_uuid,
                  'image_id': str(uuid.uuid4()), 'size_gb': 1}
        kwargs.update(overrides)
        return instance_uuid, kwargs

    def test_instance_ids_that_are_not_canonical_uuids_are_invalid_input(
            self):
        for bad in NON_UUIDS + PATH_LIKE_IDS:
            _instance, kwargs = self.create_kwargs(instance_uuid=bad)
            self.assertInvalid('instance_uuid', **kwargs)
            self.assertInvalid('instance_uuid', 'delete_root_disk',
                               instance_uuid=bad)
        self.assertEqual([], self.ceph.names_with(VALID_UUID))
        self.assertAgentHealthy()

    def test_path_like_image_ids_are_invalid_input_and_leave_no_trace(self):
        for bad in PATH_LIKE_IDS + NON_UUIDS:
            instance_uuid, kwargs = self.create_kwargs(image_id=bad)
            self.assertInvalid('image_id', **kwargs)
            self.assertNoDisk(instance_uuid)
        self.assertNotCached(VALID_UUID)
        self.assertAgentHealthy()

    def test_sizes_that_are_not_whole_gib_in_range_are_invalid_input(self):
        too_big = self.conf.imaged.max_root_disk_gb + 1
        for bad in BAD_SIZES + [too_big]:
            instance_uuid, kwargs = self.create_kwargs(size_gb=bad)
            self.assertInvalid('size_gb', **kwargs)
            self.assertNoDisk(instance_uuid)

    def test_missing_arguments_are_invalid_input(self):
        instance_uuid, full = self.create_kwargs()
        for missing in sorted(full):
            kwargs = dict(full)
            del kwargs[missing]
            self.assertInvalid(missing, **kwargs)
        self.assertInvalid('instance_uuid', 'delete_root_disk')
        self.assertNoDisk(instance_uuid)

    def test_unexpected_arguments_are_invalid_input(self):
        instance_uuid, kwargs = self.create_kwargs(
            base_dir='/etc', path='/etc/passwd')
        self.assertInvalid('base_dir, path', **kwargs)
        self.assertNoDisk(instance_uuid)
        self.assertInvalid('force', 'delete_root_disk',
                           instance_uuid=instance_uuid, force=True)
        self.assertInvalid('path', 'list_cached_images', path='/etc')
        self.assertInvalid('host', 'get_capabilities', host='other')

    def test_unknown_and_private_methods_are_refused_by_name(self):
        # The probe argument makes any method that is reached fail before
        # it does anything: the call proves reachability, harmlessly.
        for method in NOT_API:
            e = self.assertTypedError(method, scenario_probe=1)
            self.assertEqual('NoSuchMethod', getattr(e, 'exc_type', None),
                             '%s reached the agent: %s' % (method, e))
        self.assertAgentHealthy()

    def test_unsupported_rpc_versions_are_refused(self):
        for version in ('1.99', '2.0'):
            e = self.assertTypedError('get_capabilities', version=version)
            self.assertEqual('UnsupportedVersion',
                             getattr(e, 'exc_type', None))


class HostileContextTest(BadInputTestCase):

    def test_empty_context_with_bad_arguments_is_invalid_input(self):
        instance_uuid = self.new_instance()
        self.assertInvalid('image_id', ctxt={}, instance_uuid=instance_uuid,
                           image_id='../../etc/passwd', size_gb=1)
        self.assertNoDisk(instance_uuid)

    def test_empty_context_is_anonymous_public_images_only(self):
        # The record is read with the agent's own credentials...
        image_id = str(uuid.uuid4())
        e = self.assertTypedError('create_root_disk', ctxt={},
                                  instance_uuid=self.new_instance(),
                                  image_id=image_id, size_gb=1)
        self.assertIsInstance(e, exception.ImageNotFound)
        # ...and a private image is no one's to take without a token.
        image = self.upload(b'private' * 1024)
        instance_uuid = self.new_instance()
        e = self.assertTypedError('create_root_disk', ctxt={},
                                  instance_uuid=instance_uuid,
                                  image_id=image['id'], size_gb=1)
        self.assertIsInstance(e, exception.NotAuthorized)
        self.assertNoDisk(instance_uuid)
        self.assertDownloads(0, image['id'])

    def test_a_project_claimed_without_its_token_is_refused(self):
        ctxt = self.glance.request_context().to_dict()
        ctxt['project_id'] = uuid.uuid4().hex
        instance_uuid = self.new_instance()
        e = self.assertTypedError('create_root_disk', ctxt=ctxt,
                                  instance_uuid=instance_uuid,
                                  image_id=str(uuid.uuid4()), size_gb=1)
        self.assertIsInstance(e, exception.NotAuthorized)
        self.assertNoDisk(instance_uuid)

    def test_context_fields_of_the_wrong_type_get_a_typed_error(self):
        contexts = [
            {'is_admin': 'yes', 'roles': 'admin', 'user_id': ['x']},
            {'request_id': {'nested': 1}},
            {'global_request_id': 'not-a-request-id'},
            {'project_id': 12, 'user_id': None, 'read_only': 'no'},
        ]
        for ctxt in contexts:
            instance_uuid = self.new_instance()
            e = self.assertTypedError(
                'create_root_disk', ctxt=ctxt, instance_uuid=instance_uuid,
                image_id=str(uuid.uuid4()), size_gb=1)
            # Refused as bad input, or ignored (the image does not exist).
            self.assertIsInstance(
                e, (exception.InvalidInput, exception.ImageNotFound), ctxt)
            self.assertNoDisk(instance_uuid)
        self.assertAgentHealthy()

    def test_malformed_auth_tokens_are_refused_not_blamed_on_glance(self):
        for token in (5, ['a'], 'token\r\nX-Injected: 1'):
            instance_uuid = self.new_instance()
            e = self.assertTypedError(
                'create_root_disk', ctxt={'auth_token': token},
                instance_uuid=instance_uuid, image_id=str(uuid.uuid4()),
                size_gb=1)
            self.assertIsInstance(
                e, (exception.InvalidInput, exception.ImageNotAuthorized),
                'auth_token %r gave %s: %s' % (token, type(e).__name__, e))
            self.assertNoDisk(instance_uuid)


# -- property-based ----------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=('Cs',)), max_size=60)
_uuids = st.uuids().map(str)
_junk = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), _text,
    st.sampled_from(PATH_LIKE_IDS),
    st.builds(lambda u, s: u + s, _uuids,
              st.sampled_from(['/..', '/', '\x00', ' ', '\n', '0'])),
    _uuids.map(str.upper), _uuids.map(lambda u: u.replace('-', '')),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(_text, st.integers(), max_size=2))
_arguments = st.fixed_dictionaries({}, optional={
    'instance_uuid': st.one_of(_uuids, _junk),
    'image_id': st.one_of(_uuids, _junk),
    'size_gb': st.one_of(st.integers(min_value=1, max_value=64), _junk),
    'extra': _junk,
})


def _canonical(value):
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        return None


class GeneratedArgumentsTest(BadInputTestCase):

    @hypothesis.settings(max_examples=100, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(kwargs=_arguments)
    def test_any_arguments_to_create_root_disk_get_a_typed_error(self,
                                                                 kwargs):
        instance = _canonical(kwargs.get('instance_uuid'))
        if instance is not None:
            self.addCleanup(self.remove_disk, instance)
        e = self.assertTypedError('create_root_disk', **kwargs)
        # Only a well-formed call reaches Glance, which has no such image.
        well_formed = (
            set(kwargs) == {'instance_uuid', 'image_id', 'size_gb'} and
            instance is not None and
            kwargs['instance_uuid'].lower() == instance and
            _canonical(kwargs['image_id']) is not None and
            kwargs['image_id'].lower() == _canonical(kwargs['image_id']) and
            type(kwargs['size_gb']) is int and
            1 <= kwargs['size_gb'] <= self.conf.imaged.max_root_disk_gb)
        self.assertIsInstance(
            e, exception.ImageNotFound if well_formed
            else exception.InvalidInput, kwargs)
        if instance is not None:
            self.assertNoDisk(instance)
