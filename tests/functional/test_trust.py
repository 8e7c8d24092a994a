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

"""Trust boundaries (issue 15), on the real stack.

imaged holds a Ceph key for the whole ``vms`` pool and an admin Keystone
user; these tests plant what a hostile or careless image owner could, and
check that imaged acts only with the caller's rights: no clone of another
tenant's disk, no disk of an image the caller cannot see, no token on the
bus or in the log.
"""

import io
import json
import os
import re
import sqlite3
import threading
import uuid

import oslo_messaging as messaging
from oslo_utils import units

from imaged import exception
from imaged import rpc
from tests.functional import base
from tests.functional import keystone_stack

# A Keystone fernet token, as it would appear in a log line.
FERNET = re.compile(r'gAAAAA[A-Za-z0-9_=-]{100,}')
TOPIC = 'imaged-trust-%s' % uuid.uuid4().hex[:8]


class Listener:
    """Every notification on ``TOPIC``, as the broker delivered it."""

    def __init__(self):
        self.received = []
        self.arrived = threading.Condition()
        transport = messaging.get_notification_transport(base.CONF)
        self.listener = messaging.get_notification_listener(
            transport, [messaging.Target(topic=TOPIC)], [self],
            serializer=rpc.RequestContextSerializer())

    def _got(self, ctxt, publisher_id, event_type, payload, metadata):
        with self.arrived:
            self.received.append({'ctxt': ctxt.to_dict(),
                                  'publisher_id': publisher_id,
                                  'event_type': event_type,
                                  'payload': payload})
            self.arrived.notify_all()

    info = error = warn = _got

    def wait_for(self, event_type, timeout=60):
        with self.arrived:
            ok = self.arrived.wait_for(lambda: any(
                n['event_type'] == event_type for n in self.received),
                timeout)
        if not ok:
            raise AssertionError('no %s notification within %ss' %
                                 (event_type, timeout))


class TrustBoundaryTest(base.FunctionalTestCase):

    daemon_options = {
        'glance': keystone_stack.glance_options(),
        'oslo_messaging_notifications': {'driver': 'messagingv2',
                                         'topics': TOPIC},
    }

    def setUp(self):
        super().setUp()
        self.images = keystone_stack.Images(self)
        env = base.stack()
        self.fsid = env['CEPH_FSID']
        self.db = os.path.join(base.STACK_DIR, 'glance', 'glance.sqlite')

    def victim_disk(self, data):
        """Another instance's disk in ``vms``, with a protected snapshot."""
        name = '%s_disk' % uuid.uuid4()
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            self.ceph.rbd.RBD().create(ioctx, name, units.Mi)
            self.addCleanup(self.ceph.remove, name)
            with self.ceph.rbd.Image(ioctx, name) as image:
                image.write(data, 0)
                image.create_snap('snap')
                image.protect_snap('snap')
        return name

    def plant_location(self, image_id, url):
        """Point the image's only location at ``url`` in Glance's database,
        as a cloud that lets owners set locations (or an older Glance)
        would; the real one comes back before the image is deleted."""
        def set_location(value):
            with sqlite3.connect(self.db, timeout=30) as db:
                db.execute('UPDATE image_locations SET value = ? WHERE '
                           'image_id = ? AND deleted = 0', (value, image_id))
        [real] = self.images.locations(image_id)
        set_location(url)
        self.addCleanup(set_location, real)
        self.assertEqual([url], self.images.locations(image_id))

    def test_location_at_another_tenant_s_disk_is_refused(self):
        secret = b'another tenant\'s data' * 100
        victim = self.victim_disk(secret)
        image = self.images.create(base.random_raw(units.Mi), store='ceph')
        self.plant_location(image['id'], 'rbd://%s/%s/%s/snap' % (
            self.fsid, self.ceph.pool, victim))
        instance_uuid = self.new_instance()

        def ours():
            # Other tests make images in the pool at the same time.
            return {name for name in self.ceph.names()
                    if image['id'] in name or instance_uuid in name or
                    name.startswith(victim)}
        before = ours()
        e = self.assertRaises(exception.ImageUnacceptable,
                              self.api.create_root_disk, self.ctxt,
                              self.host, instance_uuid, image['id'], 1)
        self.assertIn('pool %s' % self.ceph.pool, str(e))
        self.assertIn(image['id'], str(e))
        self.assertEqual(before, ours())
        self.assertEqual({victim}, before)
        self.assertEqual(0, self.images.downloads(image['id']))
        self.assertIn('has a location in pool %s' % self.ceph.pool,
                      self.daemon.log())

    def test_private_image_of_another_project_gives_nothing(self):
        # Private to the service project; the caller is the demo user.
        image = self.images.service.images.create(
            name='imaged-test-%s' % uuid.uuid4().hex[:8],
            disk_format='raw', container_format='bare',
            visibility='private')
        self.addCleanup(self.images.service.images.delete, image['id'])
        self.images.service.images.upload(
            image['id'], io.BytesIO(base.random_raw(units.Mi)),
            image_size=units.Mi, backend='local')
        instance_uuid = self.new_instance()
        self.assertRaises((exception.ImageNotFound,
                           exception.ImageNotAuthorized),
                          self.api.create_root_disk, self.ctxt, self.host,
                          instance_uuid, image['id'], 1)
        answer = self.api.cache_images(self.ctxt, self.host, [image['id']])
        self.assertNotIn(answer[image['id']], ('cached', 'existing'))
        self.assertNotIn(image['id'], self.cached_ids())
        self.assertNotIn('%s_disk' % instance_uuid, self.ceph.names())
        self.assertNotIn('%s_base' % image['id'], self.ceph.names())
        self.assertEqual(0, self.images.downloads(image['id']))

    def test_no_token_on_the_bus_or_in_the_log(self):
        listener = Listener()
        listener.listener.start()
        self.addCleanup(listener.listener.wait)
        self.addCleanup(listener.listener.stop)
        access = keystone_stack.fresh_token()  # used by this test alone
        ctxt = keystone_stack.user_context(access)
        data = base.random_raw(units.Mi)
        image = self.images.create(data, store='local')
        disk = self.api.create_root_disk(ctxt, self.host,
                                         self.new_instance(), image['id'], 1)
        self.assertEqual(data, self.ceph.read(disk['name'], 0, len(data)))
        self.assertRaises(exception.ImageNotFound, self.api.create_root_disk,
                          ctxt, self.host, self.new_instance(),
                          str(uuid.uuid4()), 1)
        listener.wait_for('root_disk.create.end')
        listener.wait_for('root_disk.create.error')
        sent = json.dumps(listener.received)
        self.assertIn('image.fetch.end', sent)
        self.assertNotIn(access.auth_token, sent)
        self.assertIsNone(FERNET.search(sent))
        for n in listener.received:
            self.assertIsNone(n['ctxt'].get('auth_token'), n)
        env = base.stack()
        log = self.daemon.log()
        self.assertIn(image['id'], log)  # the log is the agent's, at debug
        for secret in (access.auth_token, env['IMAGED_PASSWORD'],
                       env['DEMO_PASSWORD']):
            self.assertNotIn(secret, log)
        self.assertEqual([], FERNET.findall(log))
