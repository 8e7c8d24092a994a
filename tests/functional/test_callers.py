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

"""Who the caller is (issue 26), on the real stack with Keystone.

Two projects with a user each, made for the class with the stack's admin:
alice and bob. The agent believes Keystone, not the message: a call without
a token is anonymous (public images only), a disk belongs to the project
whose token made it, and another project's token, or a context that claims
bob's project with alice's token, gets ``NotAuthorized`` with bob's disk
untouched. A location that names another image in Glance's pool is refused.
"""

import io
import re
import uuid

from glanceclient import client as glance_client_module
from keystoneauth1.identity import v3 as ks_v3
from keystoneauth1 import session as ks_session
from oslo_utils import units

from imaged import context
from imaged import exception
from tests.functional import base
from tests.functional import keystone_stack

# A Keystone fernet token, as it would appear in a log line.
FERNET = re.compile(r'gAAAAA[A-Za-z0-9_=-]{100,}')
MARK = b'written by bob\'s guest'


def admin_session():
    env = base.stack()
    return ks_session.Session(auth=ks_v3.Password(
        auth_url=env['OS_AUTH_URL'], username=env['KEYSTONE_ADMIN_USER'],
        password=env['KEYSTONE_ADMIN_PASSWORD'],
        project_name=env['KEYSTONE_ADMIN_PROJECT'],
        user_domain_name=env['OS_USER_DOMAIN_NAME'],
        project_domain_name=env['OS_PROJECT_DOMAIN_NAME']), timeout=30)


# Keystone's SQLite database drops a connection now and then while another
# worker writes to it: every request is tried again.
RETRIES = {'connect_retries': 5, 'connect_retry_delay': 1.0,
           'status_code_retries': 5, 'status_code_retry_delay': 1.0,
           'retriable_status_codes': [500, 502, 503]}


class Tenant:
    """A project with one member, made with the admin's session; removed
    by :meth:`remove`."""

    def __init__(self, admin, name):
        env = base.stack()
        keystone = env['OS_AUTH_URL']
        self.admin = admin
        self.name = 'imaged-%s-%s' % (name, uuid.uuid4().hex[:8])
        self.password = uuid.uuid4().hex
        self.project_id = self._make('projects', 'project', {
            'name': self.name, 'domain_id': 'default'})
        self.user_id = self._make('users', 'user', {
            'name': self.name, 'password': self.password,
            'domain_id': 'default', 'default_project_id': self.project_id})
        [member] = admin.get(keystone + '/roles', params={'name': 'member'},
                             **RETRIES).json()['roles']
        admin.put('%s/projects/%s/users/%s/roles/%s' % (
            keystone, self.project_id, self.user_id, member['id']),
            **RETRIES)
        self.session = ks_session.Session(auth=ks_v3.Password(
            auth_url=keystone, username=self.name, password=self.password,
            project_id=self.project_id, user_domain_id='default'),
            timeout=30)
        self.glance = glance_client_module.Client(
            '2', session=self.session, endpoint_override=env['GLANCE_URL'])

    def context(self, **claims):
        """The RPC context this tenant's user sends: its token, and what it
        claims (its own project and user unless told otherwise)."""
        values = {'project_id': self.project_id, 'user_id': self.user_id,
                  'auth_token': self.session.get_token()}
        values.update(claims)
        return context.RequestContext(**values)

    def _make(self, collection, kind, body):
        """The id of the new ``kind``: made, or found by its name when a
        retried POST made it already."""
        url = '%s/%s' % (base.stack()['OS_AUTH_URL'], collection)
        resp = self.admin.post(url, json={kind: body}, raise_exc=False,
                               **RETRIES)
        if resp.status_code == 409:
            [found] = self.admin.get(url, params={'name': body['name']},
                                     **RETRIES).json()[collection]
            return found['id']
        resp.raise_for_status()
        return resp.json()[kind]['id']

    def remove(self):
        keystone = base.stack()['OS_AUTH_URL']
        for path in ('/users/%s' % self.user_id,
                     '/projects/%s' % self.project_id):
            self.admin.delete(keystone + path, raise_exc=False, **RETRIES)


class CallersTest(base.FunctionalTestCase):

    daemon_options = {'glance': keystone_stack.glance_options()}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin = admin_session()
        cls.alice = Tenant(cls.admin, 'alice')
        cls.bob = Tenant(cls.admin, 'bob')

    @classmethod
    def tearDownClass(cls):
        for tenant in (cls.alice, cls.bob):
            tenant.remove()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.images = keystone_stack.Images(self)
        self.fsid = base.stack()['CEPH_FSID']
        self.glance_pool = base.stack()['CEPH_IMAGES_POOL']

    def image_of(self, tenant, data, store, **props):
        client = tenant.glance if tenant is not None else \
            glance_client_module.Client(
                '2', session=self.admin,
                endpoint_override=base.stack()['GLANCE_URL'])
        image = client.images.create(
            name='imaged-test-%s' % uuid.uuid4().hex[:8], disk_format='raw',
            container_format='bare', **props)
        self.addCleanup(self.delete_image, client, image['id'])
        if data is not None:
            client.images.upload(image['id'], io.BytesIO(data),
                                 image_size=len(data), backend=store)
        return dict(client.images.get(image['id']))

    @staticmethod
    def delete_image(client, image_id):
        try:
            client.images.delete(image_id)
        except Exception:  # already gone
            pass

    def children(self, image_id):
        """The clones of Glance's snapshot of ``image_id``."""
        with self.ceph.cluster.open_ioctx(self.glance_pool) as ioctx:
            with self.ceph.rbd.Image(ioctx, image_id, snapshot='snap',
                                     read_only=True) as image:
                return list(image.list_children())

    def disk_project(self, name):
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            with self.ceph.rbd.Image(ioctx, name, read_only=True) as image:
                return image.metadata_get('imaged.project_id')

    def names_with(self, *ids):
        return sorted(name for name in self.ceph.names() +
                      self.ceph.names(self.glance_pool)
                      if any(i in name for i in ids))

    # -- no token -------------------------------------------------------------

    def test_a_tokenless_call_gets_public_images_only(self):
        data = base.random_raw(2 * units.Mi)
        anonymous = context.RequestContext()
        for store, visibility in (('local', 'private'), ('ceph', 'shared')):
            private = self.image_of(self.bob, data, store,
                                    visibility=visibility)
            instance_uuid = self.new_instance()
            e = self.assertRaises(exception.NotAuthorized,
                                  self.api.create_root_disk, anonymous,
                                  self.host, instance_uuid, private['id'], 1)
            self.assertIn('public and community images only', str(e))
            self.assertEqual([], self.names_with(instance_uuid))
            self.assertEqual(0, self.images.downloads(private['id']))
        # A project claimed without its token is nobody's claim.
        self.assertRaises(exception.NotAuthorized, self.api.create_root_disk,
                          context.RequestContext(
                              project_id=self.bob.project_id),
                          self.host, self.new_instance(), private['id'], 1)

        public = self.image_of(None, data, 'ceph', visibility='public')
        disk = self.api.create_root_disk(anonymous, self.host,
                                         self.new_instance(), public['id'],
                                         1)
        self.assertEqual('clone', disk['strategy'])
        self.assertEqual(data[:units.Mi],
                         self.ceph.read(disk['name'], 0, units.Mi))
        self.assertEqual('-', self.disk_project(disk['name']))
        self.assertEqual(0, self.images.downloads(public['id']))
        # Nobody's disk: a tokenless call may delete it.
        self.api.delete_root_disk(anonymous, self.host,
                                  disk['instance_uuid'])
        self.assertNotIn(disk['name'], self.ceph.names())

    # -- a disk belongs to a project ------------------------------------------

    def bobs_disk(self):
        image = self.image_of(self.bob, base.random_raw(2 * units.Mi), 'ceph')
        disk = self.api.create_root_disk(self.bob.context(), self.host,
                                         self.new_instance(), image['id'], 1)
        self.assertEqual('clone', disk['strategy'])
        self.assertEqual(self.bob.project_id, self.disk_project(disk['name']))
        self.ceph.write(disk['name'], 4 * units.Mi, MARK)
        return image, disk

    def assert_bobs_disk_intact(self, image, disk):
        self.assertIn(disk['name'], self.ceph.names())
        self.assertEqual(MARK, self.ceph.read(disk['name'], 4 * units.Mi,
                                              len(MARK)))
        self.assertEqual((self.glance_pool, image['id'], 'snap'),
                         self.ceph.parent(disk['name']))
        self.assertEqual(self.bob.project_id, self.disk_project(disk['name']))

    def test_alice_gets_nothing_of_bob_s_disk(self):
        image, disk = self.bobs_disk()
        instance_uuid = disk['instance_uuid']
        queued = self.image_of(self.alice, None, None)
        self.assertEqual('queued', queued['status'])
        alice_own = self.image_of(self.alice, base.random_raw(units.Mi),
                                  'ceph')
        log_before = len(self.daemon.log())
        forged = {'project_id': self.bob.project_id,
                  'user_id': self.bob.user_id}
        for ctxt in (self.alice.context(),
                     self.alice.context(project_id=self.bob.project_id),
                     self.alice.context(**forged)):
            for call, args in (
                    (self.api.snapshot_root_disk, (queued['id'],)),
                    (self.api.flatten_root_disk, ()),
                    (self.api.delete_root_disk, ()),
                    (self.api.create_root_disk, (alice_own['id'], 1)),
                    (self.api.create_root_disk, (image['id'], 4))):
                e = self.assertRaises(exception.NotAuthorized, call, ctxt,
                                      self.host, instance_uuid, *args)
                for secret in (self.bob.project_id, image['id']):
                    self.assertNotIn(secret, str(e))
        self.assert_bobs_disk_intact(image, disk)
        self.assertEqual('queued', self.images.service.images.get(
            queued['id'])['status'])
        self.assertEqual([], self.names_with(queued['id']))
        log = self.daemon.log()[log_before:]
        self.assertIn('its context claims project_id %s, but its token is '
                      'of project_id %s' % (self.bob.project_id,
                                            self.alice.project_id), log)
        self.assertNotIn(self.alice.session.get_token(), log)
        self.assertEqual([], FERNET.findall(log))

        # Bob's own token acts on it, and so does a service user's.
        self.api.flatten_root_disk(self.bob.context(), self.host,
                                   instance_uuid)
        self.assertIsNone(self.ceph.parent(disk['name']))
        self.api.delete_root_disk(base.service_context(), self.host,
                                  instance_uuid)
        self.assertNotIn(disk['name'], self.ceph.names())

    def test_a_token_keystone_does_not_know_is_refused(self):
        image = self.image_of(self.bob, base.random_raw(units.Mi), 'ceph')
        instance_uuid = self.new_instance()
        self.assertRaises(exception.NotAuthorized, self.api.create_root_disk,
                          self.bob.context(auth_token='gAAAAAforged'),
                          self.host, instance_uuid, image['id'], 1)
        self.assertEqual([], self.names_with(instance_uuid))

    # -- a location names its own image ---------------------------------------

    def test_a_location_naming_another_glance_image_is_refused(self):
        # Bob's private image, and alice's image whose only location is
        # set (with the service-only locations API, as imaged's user: a
        # Glance that lets owners set locations would take it from her) to
        # bob's snapshot in Glance's own pool.
        bobs = self.image_of(self.bob, base.random_raw(2 * units.Mi), 'ceph')
        hers = self.image_of(self.alice, None, None)
        url = 'rbd://%s/%s/%s/snap' % (self.fsid, self.glance_pool,
                                       bobs['id'])
        keystone_stack.session('IMAGED').post(
            '%s/v2/images/%s/locations' % (base.stack()['GLANCE_URL'],
                                           hers['id']), json={'url': url})
        base.wait_for(lambda: self.alice.glance.images.get(
            hers['id'])['status'] == 'active', 60, interval=0.5,
            what='Glance to make the image active')
        self.assertEqual([url], self.images.locations(hers['id']))
        instance_uuid = self.new_instance()
        e = self.assertRaises(exception.ImageUnacceptable,
                              self.api.create_root_disk,
                              self.alice.context(), self.host, instance_uuid,
                              hers['id'], 1)
        self.assertIn(hers['id'], str(e))
        self.assertIn('names %s@snap' % bobs['id'], str(e))
        self.assertEqual([], self.names_with(instance_uuid))
        self.assertEqual([], self.children(bobs['id']))
        self.assertEqual(0, self.images.downloads(hers['id']))
        self.assertIn('Image %s has a location in Glance\'s pool %s that '
                      'names another image' % (hers['id'], self.glance_pool),
                      self.daemon.log())
