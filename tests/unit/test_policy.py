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

"""Who may do what (imaged.policy), over the RPC API on fakes: the caller
is whom Keystone says its token belongs to, a call without a token is
anonymous, and a disk belongs to the project that made it."""

import logging

import fixtures

from imaged import context
from imaged import exception
from imaged import identity
from imaged import policy
from tests.unit import test_manager

INSTANCE = test_manager.INSTANCE
OTHER_INSTANCE = '6a0c1d2e-3a4b-4c5d-9e6f-7a8b9c0d1e2f'
BOBS_IMAGE = test_manager.IMAGE  # private, cloneable
BOBS_FILE_IMAGE = '1c1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'  # private, download
PUBLIC_IMAGE = '2d1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'
ALICES_QUEUED = '7d3c1990-7e1b-4a52-9c1e-5b0f6b3a2c11'
DATA = b'guest' * 1000
DISK = INSTANCE + '_disk'


class FakeKeystone:
    """``validate(token)`` over a dict of tokens."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.down = False
        self.asked = 0
        self.deadlines = []

    def validate(self, token, deadline):
        self.asked += 1
        self.deadlines.append(deadline)
        if self.down:
            raise exception.KeystoneUnavailable(reason='connection refused')
        if token not in self.tokens:
            raise exception.NotAuthorized(action='act with this token',
                                          reason='Keystone does not know it')
        return self.tokens[token]


class AuthorizationTest(test_manager.RPCTestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(
            level=logging.INFO, format='%(levelname)s %(message)s'))
        self.keystone = FakeKeystone({
            'alice-token': identity.Identity('alice', 'project-a',
                                             ['member', 'reader']),
            'bob-token': identity.Identity('bob', 'project-b', ['member']),
            'nova-token': identity.Identity('nova', 'service', ['service']),
            'admin-token': identity.Identity('admin', 'admin', ['admin'])})
        self.manager.callers = policy.Callers(self.conf, self.glance,
                                              validator=self.keystone)
        url = self.cluster.add_glance_image(BOBS_IMAGE, DATA)
        self.glance.add(BOBS_IMAGE, DATA, direct_url=url,
                        visibility='private', owner='project-b')
        self.glance.add(BOBS_FILE_IMAGE, DATA, visibility='private',
                        owner='project-b')
        url = self.cluster.add_glance_image(PUBLIC_IMAGE, DATA)
        self.glance.add(PUBLIC_IMAGE, DATA, direct_url=url,
                        visibility='public', owner='project-b')
        self.glance.add(ALICES_QUEUED, status='queued', owner='project-a',
                        container_format='bare', visibility='private')
        self.vms = self.cluster.pools['vms']

    @staticmethod
    def of(who, **claims):
        """The context ``who`` sends; ``None``: no token."""
        if who is None:
            return context.RequestContext(**claims)
        return context.RequestContext(auth_token='%s-token' % who, **claims)

    def rpc(self, ctxt, method, **kwargs):
        client = self.api.client.prepare(server='test-host', timeout=10)
        return client.call(ctxt, method, **kwargs)

    def create(self, ctxt, image_id=BOBS_IMAGE, instance=INSTANCE, size_gb=1):
        return self.rpc(ctxt, 'create_root_disk', instance_uuid=instance,
                        image_id=image_id, size_gb=size_gb)

    def bobs_disk(self):
        self.create(self.of('bob'))
        disk = self.vms[DISK]
        disk.blocks[4096] = b'written by bob\'s guest'
        return disk

    def assert_refused(self, ctxt, method, **kwargs):
        e = self.assertRaises(exception.NotAuthorized, self.rpc, ctxt,
                              method, **kwargs)
        # Nothing about the disk is told: not its project, its image or
        # its size.
        for secret in ('project-b', BOBS_IMAGE, str(2 ** 30)):
            self.assertNotIn(secret, str(e))
        return e

    def assert_bobs_disk_intact(self, disk):
        self.assertIs(disk, self.vms[DISK])
        self.assertEqual(b'written by bob\'s guest',
                         disk.read(4096, len(b'written by bob\'s guest')))
        self.assertEqual(url_parent(self.cluster, BOBS_IMAGE),
                         disk.parent_disk)
        self.assertEqual({}, disk.snapshots)

    # -- a disk belongs to its token's project -------------------------------

    def test_a_disk_records_its_token_s_project_not_the_message_s(self):
        self.create(self.of('bob'))
        self.assertEqual({'imaged.image_id': BOBS_IMAGE,
                          'imaged.project_id': 'project-b'},
                         self.vms[DISK].metadata)
        # Its owner gets it back, and acts on it.
        self.assertEqual('existing', self.create(self.of('bob'))['strategy'])
        self.rpc(self.of('bob'), 'flatten_root_disk', instance_uuid=INSTANCE)
        self.rpc(self.of('bob'), 'delete_root_disk', instance_uuid=INSTANCE)
        self.assertNotIn(DISK, self.vms)

    def test_another_project_s_token_gets_nothing_of_the_disk(self):
        disk = self.bobs_disk()
        alice = self.of('alice')
        self.assert_refused(alice, 'snapshot_root_disk',
                            instance_uuid=INSTANCE, image_id=ALICES_QUEUED)
        self.assert_refused(alice, 'flatten_root_disk',
                            instance_uuid=INSTANCE)
        self.assert_refused(alice, 'delete_root_disk',
                            instance_uuid=INSTANCE)
        # Not "made from another image", not "smaller than asked": refused
        # before the disk is read out.
        for image_id, size_gb in ((PUBLIC_IMAGE, 1), (BOBS_IMAGE, 9)):
            self.assert_refused(alice, 'create_root_disk',
                                instance_uuid=INSTANCE, image_id=image_id,
                                size_gb=size_gb)
        self.assert_bobs_disk_intact(disk)
        self.assertEqual('queued', self.glance.images[ALICES_QUEUED]['status'])
        self.assertNotIn(ALICES_QUEUED, self.cluster.pools['images'])

    def test_a_forged_project_or_user_in_the_context_is_refused(self):
        disk = self.bobs_disk()
        for claims in ({'project_id': 'project-b'},
                       {'user_id': 'bob'},
                       {'project_id': 'project-b', 'user_id': 'bob'}):
            alice = self.of('alice', **claims)
            for method, kwargs in (
                    ('snapshot_root_disk', {'image_id': ALICES_QUEUED}),
                    ('flatten_root_disk', {}),
                    ('delete_root_disk', {})):
                e = self.assert_refused(alice, method,
                                        instance_uuid=INSTANCE, **kwargs)
                self.assertIn('is not its token\'s', str(e))
        self.assert_bobs_disk_intact(disk)
        self.assertEqual('queued', self.glance.images[ALICES_QUEUED]['status'])
        self.assertIn('WARNING snapshot_root_disk refused: its context '
                      'claims project_id project-b, but its token is of '
                      'project_id project-a', self.log.output)
        self.assertNotIn('alice-token', self.log.output)

    def test_a_token_keystone_does_not_know_is_refused(self):
        self.assertRaises(exception.NotAuthorized, self.create,
                          self.of('forged'))
        self.assertNotIn(DISK, self.vms)

    def test_keystone_down_is_a_typed_error_not_imaged_s_rights(self):
        disk = self.bobs_disk()
        self.keystone.down = True
        for method in ('flatten_root_disk', 'delete_root_disk'):
            self.assertRaises(exception.KeystoneUnavailable, self.rpc,
                              self.of('bob'), method, instance_uuid=INSTANCE)
        self.assertRaises(exception.KeystoneUnavailable, self.create,
                          self.of('bob'), instance=OTHER_INSTANCE)
        self.assertNotIn(OTHER_INSTANCE + '_disk', self.vms)
        self.assertIs(disk, self.vms[DISK])

    def test_the_token_is_validated_within_the_call_s_deadline(self):
        self.create(self.of('bob'))  # no call timeout: the long one
        deadline = self.keystone.deadlines[-1]
        self.assertLess(deadline.seconds, self.conf.long_rpc_timeout)
        self.assertGreater(deadline.seconds, 0)

    def test_service_and_admin_tokens_act_on_any_disk(self):
        self.bobs_disk()
        self.rpc(self.of('admin'), 'flatten_root_disk',
                 instance_uuid=INSTANCE)
        self.assertEqual('existing',
                         self.create(self.of('nova'))['strategy'])
        self.rpc(self.of('nova'), 'delete_root_disk', instance_uuid=INSTANCE)
        self.assertNotIn(DISK, self.vms)
        # Its project stays the one that made it.
        self.create(self.of('bob'))
        self.rpc(self.of('nova'), 'flatten_root_disk', instance_uuid=INSTANCE)
        self.assertEqual('project-b',
                         self.vms[DISK].metadata['imaged.project_id'])

    def test_an_old_disk_is_adopted_by_the_first_service_call(self):
        self.bobs_disk()
        del self.vms[DISK].metadata['imaged.project_id']  # made before
        self.assert_refused(self.of('bob'), 'flatten_root_disk',
                            instance_uuid=INSTANCE)
        self.assert_refused(self.of(None), 'delete_root_disk',
                            instance_uuid=INSTANCE)
        self.assertNotIn('imaged.project_id', self.vms[DISK].metadata)
        self.rpc(self.of('nova'), 'flatten_root_disk', instance_uuid=INSTANCE)
        self.assertEqual('service',
                         self.vms[DISK].metadata['imaged.project_id'])
        self.assertIn('now belongs to project service', self.log.output)

    # -- no token, no one's rights -------------------------------------------

    def test_a_tokenless_call_makes_disks_of_public_images_only(self):
        for image_id in (BOBS_FILE_IMAGE, BOBS_IMAGE):
            e = self.assertRaises(exception.NotAuthorized, self.create,
                                  self.of(None), image_id=image_id)
            self.assertIn('public and community images only', str(e))
            self.assertIn(image_id, str(e))
        self.assertEqual([], [n for n in self.vms if n.endswith('_disk')])
        self.assertEqual(0, self.glance.downloads)
        # A project claimed without a token is nobody's.
        self.assertRaises(exception.NotAuthorized, self.create,
                          self.of(None, project_id='project-b'))
        disk = self.create(self.of(None), image_id=PUBLIC_IMAGE)
        self.assertEqual('clone', disk['strategy'])
        self.assertEqual(policy.NOBODY,
                         self.vms[DISK].metadata['imaged.project_id'])
        self.glance.images[PUBLIC_IMAGE]['visibility'] = 'community'
        self.assertEqual('existing', self.create(
            self.of(None), image_id=PUBLIC_IMAGE)['strategy'])
        # Nobody's disk: anyone may flatten or delete it.
        self.rpc(self.of(None), 'flatten_root_disk', instance_uuid=INSTANCE)
        self.rpc(self.of(None), 'delete_root_disk', instance_uuid=INSTANCE)
        self.assertNotIn(DISK, self.vms)

    def test_a_tokenless_call_acts_on_no_project_s_disk(self):
        disk = self.bobs_disk()
        anonymous = self.of(None)
        self.assert_refused(anonymous, 'snapshot_root_disk',
                            instance_uuid=INSTANCE, image_id=ALICES_QUEUED)
        self.assert_refused(anonymous, 'flatten_root_disk',
                            instance_uuid=INSTANCE)
        self.assert_refused(anonymous, 'delete_root_disk',
                            instance_uuid=INSTANCE)
        self.assert_refused(anonymous, 'create_root_disk',
                            instance_uuid=INSTANCE, image_id=PUBLIC_IMAGE,
                            size_gb=1)
        self.assert_bobs_disk_intact(disk)

    def test_a_tokenless_snapshot_is_refused_even_of_nobody_s_disk(self):
        self.create(self.of(None), image_id=PUBLIC_IMAGE)
        self.assertRaises(exception.NotAuthorized, self.rpc, self.of(None),
                          'snapshot_root_disk', instance_uuid=INSTANCE,
                          image_id=ALICES_QUEUED)
        self.assertEqual('queued', self.glance.images[ALICES_QUEUED]['status'])

    def test_tokenless_calls_act_as_imaged_only_when_the_operator_says(self):
        disk = self.bobs_disk()
        self.flags(tokenless_calls_act_as_imaged=True, group='callers')
        self.create(self.of(None), image_id=BOBS_FILE_IMAGE,
                    instance=OTHER_INSTANCE)
        self.assertEqual(1, self.glance.downloads)
        self.rpc(self.of(None), 'delete_root_disk', instance_uuid=INSTANCE)
        self.assertNotIn(DISK, self.vms)
        del disk

    def test_list_cached_images_needs_a_service_or_admin_token(self):
        for ctxt in (self.of(None), self.of('alice'),
                     self.of('alice', roles=['admin'], is_admin=True)):
            e = self.assertRaises(exception.NotAuthorized, self.rpc, ctxt,
                                  'list_cached_images')
            self.assertIn('"admin" or "service" role', str(e))
        for who in ('nova', 'admin'):
            self.assertEqual([], self.rpc(self.of(who), 'list_cached_images'))

    def test_precache_without_a_token_stays_an_operator_s_call(self):
        # It gives nobody a disk: imaged reads the images as itself.
        result = self.rpc(self.of(None), 'cache_images',
                          image_ids=[BOBS_FILE_IMAGE])
        self.assertEqual(1, self.glance.downloads)
        self.assertEqual({BOBS_FILE_IMAGE: 'cached'}, result)
        # Which still gives a tokenless caller no disk of it.
        self.assertRaises(exception.NotAuthorized, self.create,
                          self.of(None), image_id=BOBS_FILE_IMAGE)
        self.assertNotIn(DISK, self.vms)

    def test_get_capabilities_is_anyone_s(self):
        self.assertEqual('test-host',
                         self.rpc(self.of(None), 'get_capabilities')['host'])
        self.assertEqual(0, self.keystone.asked)


def url_parent(cluster, image_id):
    return cluster.pools['images'][image_id]


class RulesTest(test_manager.base.TestCase):
    """The rules alone."""

    def test_check_disk_owner(self):
        bob = policy.Caller('user', 'project-b', 'bob', ['member'])
        alice = policy.Caller('user', 'project-a', 'alice', ['member'])
        nova = policy.Caller('user', 'service', 'nova', ['service'])
        anonymous = policy.Caller('anonymous')
        trusted = policy.trusted()
        self.assertIsNone(policy.check_disk_owner(bob, 'project-b', 'x'))
        for caller in (alice, anonymous):
            self.assertRaises(exception.NotAuthorized,
                              policy.check_disk_owner, caller, 'project-b',
                              'x')
        for caller in (alice, bob, anonymous, nova, trusted):
            self.assertIsNone(policy.check_disk_owner(caller, policy.NOBODY,
                                                      'x'))
        # An old disk: refused to all but admin and service tokens, whose
        # project adopts it; trusted callers leave it as it is.
        for caller in (alice, bob, anonymous):
            self.assertRaises(exception.NotAuthorized,
                              policy.check_disk_owner, caller, None, 'x')
        self.assertEqual('service', policy.check_disk_owner(nova, None, 'x'))
        self.assertIsNone(policy.check_disk_owner(trusted, None, 'x'))
        self.assertIsNone(policy.check_disk_owner(nova, 'project-b', 'x'))

    def test_new_disk_owner(self):
        self.assertEqual('project-b', policy.Caller(
            'user', 'project-b').owner_of_new_disk())
        self.assertEqual(policy.NOBODY,
                         policy.Caller('anonymous').owner_of_new_disk())


class IdentifyTest(test_manager.base.TestCase):
    """Callers.identify on each kind of deployment."""

    def test_without_keystone_every_caller_is_trusted_as_before(self):
        from tests.unit import fakes
        callers = policy.Callers(self.conf, fakes.FakeGlance())
        self.assertFalse(callers.keystone)
        ctxt = context.RequestContext(project_id='p', user_id='u')
        caller = callers.identify(ctxt, 'create_root_disk')
        self.assertEqual(('trusted', 'p'), (caller.kind, caller.project_id))
        self.assertTrue(caller.privileged)
        self.assertIs(caller, ctxt.caller)

    def test_keystone_s_answer_replaces_the_context_s_claims(self):
        keystone = FakeKeystone({'t': identity.Identity(
            'bob', 'project-b', ['Member', 'reader'])})
        callers = policy.Callers(self.conf, None, validator=keystone)
        ctxt = context.RequestContext(auth_token='t', roles=['admin'],
                                      is_admin=True)
        caller = callers.identify(ctxt, 'delete_root_disk')
        self.assertEqual(('user', 'project-b', 'bob'),
                         (caller.kind, caller.project_id, caller.user_id))
        self.assertFalse(caller.privileged)
        self.assertEqual(('project-b', 'bob', ['member', 'reader'], False),
                         (ctxt.project_id, ctxt.user_id, ctxt.roles,
                          ctxt.is_admin))

    def test_tokenless_claims_are_nobody_s_unless_the_bus_is_trusted(self):
        callers = policy.Callers(self.conf, None,
                                 validator=FakeKeystone({}))
        ctxt = context.RequestContext(project_id='p', user_id='u',
                                      roles=['admin'], is_admin=True)
        caller = callers.identify(ctxt, 'create_root_disk')
        self.assertTrue(caller.anonymous)
        self.assertEqual((None, None, [], False),
                         (ctxt.project_id, ctxt.user_id, ctxt.roles,
                          ctxt.is_admin))
        self.flags(tokenless_calls_act_as_imaged=True, group='callers')
        caller = callers.identify(context.RequestContext(), 'x')
        self.assertEqual('trusted', caller.kind)
        self.assertTrue(caller.reads_as_imaged('any-image'))
