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

"""Fleet operations on the real stack: precache, notifications, purge.

Agents are real ``imaged`` processes with their own host names; they send
notifications on the real RabbitMQ, on a topic of this test run only, and a
real oslo.messaging notification listener receives them.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid

import fixtures
import kombu
import oslo_messaging as messaging
from oslo_utils import units
import testtools
import testtools.content

from imaged import rpcapi
from tests.functional import base
from tests.unit import test_notifications

CLIENT = os.path.join(os.path.dirname(sys.executable), 'imaged-client')
# Glance does not tell "never there" from "deleted": either is a 404.
READY = ('cached', 'existing')


class Listener:
    """Collects the notifications sent on one topic, on the real broker."""

    def __init__(self, topic):
        self.topic = topic
        self.messages = []
        self._lock = threading.Lock()
        transport = messaging.get_notification_transport(base.CONF)
        self.listener = messaging.get_notification_listener(
            transport, [messaging.Target(topic=topic)], [self])
        self.listener.start()

    def _keep(self, ctxt, publisher_id, event_type, payload, metadata,
              priority):
        with self._lock:
            self.messages.append({'publisher_id': publisher_id,
                                  'event_type': event_type,
                                  'priority': priority,
                                  'payload': payload})

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._keep(ctxt, publisher_id, event_type, payload, metadata, 'INFO')

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._keep(ctxt, publisher_id, event_type, payload, metadata,
                   'ERROR')

    def events(self, **match):
        with self._lock:
            return [m for m in self.messages
                    if all(m['payload'].get(k) == v for k, v in
                           match.items())]

    def wait_for(self, event_type, timeout=60, **match):
        def found():
            return [m for m in self.events(**match)
                    if m['event_type'] == event_type]
        return base.wait_for(found, timeout, what=event_type)

    def stop(self):
        self.listener.stop()
        self.listener.wait()
        # The listener's queues are this run's alone: leave none behind.
        url = base.stack()['TRANSPORT_URL'].replace('rabbit://', 'amqp://')
        with kombu.Connection(url) as conn:
            channel = conn.channel()
            for priority in ('info', 'error'):
                channel.queue_delete('%s.%s' % (self.topic, priority))


class FleetTestCase(testtools.TestCase):
    """Starts the class's agents; all send notifications to ``listener``."""

    agents = ()  # (name, extra options)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        base.configure_client()
        cls.workdir = tempfile.mkdtemp(prefix='imaged-fleet-')
        cls.topic = 'imaged-fleet-%s' % uuid.uuid4().hex[:8]
        cls.listener = Listener(cls.topic)
        cls.api = rpcapi.ImageAgentAPI(base.CONF)
        cls.ctxt = base.user_context()
        cls.daemons = {}
        try:
            for name, options in cls.agents:
                cls.daemons[name] = cls.start_agent(name, options)
            cls.ceph = base.Ceph()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def start_agent(cls, name, options=None, host=None):
        host = host or 'fleet-%s-%s' % (name, uuid.uuid4().hex[:6])
        workdir = os.path.join(cls.workdir, name)
        os.makedirs(workdir, exist_ok=True)
        settings = {'oslo_messaging_notifications': {
            'driver': 'messagingv2', 'topics': cls.topic}}
        for group, values in (options or {}).items():
            settings.setdefault(group, {}).update(values)
        daemon = base.Daemon(workdir, host, settings).start()
        try:
            base.FunctionalTestCase.wait_until_serving(cls.api, cls.ctxt,
                                                       host, daemon)
        except Exception:
            daemon.kill()
            raise
        return daemon

    @classmethod
    def tearDownClass(cls):
        for daemon in cls.daemons.values():
            daemon.stop()
        if getattr(cls, 'ceph', None) is not None:
            cls.ceph.close()
        cls.listener.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(600, gentle=True))
        self.glance = base.Glance(self)
        self.addOnException(self.attach_agent_logs)

    def attach_agent_logs(self, exc_info):
        for name, daemon in self.daemons.items():
            lines = [line for line in daemon.log().splitlines()
                     if ' DEBUG ' not in line]
            self.addDetail('%s.log' % name, testtools.content.text_content(
                '\n'.join(lines[-80:])))

    def host(self, name):
        return self.daemons[name].host

    def base_url(self, image_id):
        env = base.stack()
        return 'rbd://%s/%s/%s_base/snap' % (env['CEPH_FSID'],
                                             env['CEPH_VMS_POOL'], image_id)

    def forget_base(self, image_id):
        """Leave no base image behind (the disks cloned from it go first:
        cleanups run last-in first-out)."""
        self.addCleanup(self.remove_base, image_id)

    def remove_base(self, image_id):
        rbd = self.ceph.rbd
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            try:
                with rbd.Image(ioctx, '%s_base' % image_id) as image:
                    for snap in list(image.list_snaps()):
                        if image.is_protected_snap(snap['name']):
                            image.unprotect_snap(snap['name'])
                        image.remove_snap(snap['name'])
                rbd.RBD().remove(ioctx, '%s_base' % image_id)
            except rbd.ImageNotFound:
                pass

    def create_root_disk(self, name, image_id, size_gb=1):
        instance_uuid = str(uuid.uuid4())
        self.addCleanup(self.ceph.remove, '%s_disk' % instance_uuid)
        return self.api.create_root_disk(self.ctxt, self.host(name),
                                         instance_uuid, image_id, size_gb)

    def cached(self, name):
        return {e['image_id'] for e in
                self.api.list_cached_images(base.service_context(),
                                            self.host(name))}


class PrecacheTest(FleetTestCase):

    agents = (('a', None), ('b', None))

    def images(self):
        """A raw image in Glance's Ceph store and a qcow2 in its file
        store: one cloneable, one to download."""
        from tests.functional import test_root_disks
        self.data = base.random_raw(2 * units.Mi)
        cloneable = self.glance.create(base.random_raw(units.Mi),
                                       backend='ceph')
        download = self.glance.create(
            test_root_disks.qcow2_holding(self.data), disk_format='qcow2',
            backend='local')
        self.forget_base(download['id'])
        return cloneable['id'], download['id']

    def test_precache_two_agents_then_root_disks_need_no_download(self):
        cloneable, download = self.images()
        answers = {}

        def precache(name):
            answers[name] = self.api.cache_images(
                self.ctxt, self.host(name), [cloneable, download])
        threads = [threading.Thread(target=precache, args=(name,))
                   for name in ('a', 'b')]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        for name in ('a', 'b'):
            self.assertEqual('existing', answers[name][cloneable])
            self.assertIn(answers[name][download], READY)
        # Each agent fetched it at most once (both at once may both
        # download today: the base lock is not held while downloading).
        fetched = self.glance.downloads(download)
        self.assertIn(fetched, (1, 2))
        for name in ('a', 'b'):
            clone = self.create_root_disk(name, cloneable)
            self.assertEqual('clone', clone['strategy'])
            disk = self.create_root_disk(name, download)
            self.assertEqual(self.base_url(download), disk['parent'])
            self.assertEqual(self.data,
                             self.ceph.read(disk['name'], 0, len(self.data)))
        self.assertEqual(fetched, self.glance.downloads(download))
        self.assertEqual(0, self.glance.downloads(cloneable))

    def test_the_fan_out_tool_reports_a_stopped_agent_skipped(self):
        cloneable, download = self.images()
        stopped = self.start_agent('stopped')
        self.addCleanup(stopped.kill)
        stopped.stop()
        config = os.path.join(self.workdir, 'client.conf')
        with open(config, 'w') as f:
            f.write('[DEFAULT]\ntransport_url = %s\n' %
                    base.stack()['TRANSPORT_URL'])
        proc = subprocess.run(
            [CLIENT, '--config-file', config, 'precache', '--hosts',
             ','.join([self.host('a'), stopped.host, self.host('b')]),
             '--concurrency', '2', '--timeout', '10', cloneable, download],
            capture_output=True, text=True, timeout=600)
        self.assertEqual(1, proc.returncode, proc.stderr)
        lines = {a['host']: a for a in
                 map(json.loads, proc.stdout.splitlines())}
        self.assertEqual({self.host('a'), self.host('b'), stopped.host},
                         set(lines))
        self.assertEqual(('skipped', 'MessagingTimeout'),
                         (lines[stopped.host]['result'],
                          lines[stopped.host]['error']['class']))
        for name in ('a', 'b'):
            self.assertEqual('ok', lines[self.host(name)]['result'],
                             proc.stdout)
            self.assertEqual('existing',
                             lines[self.host(name)]['images'][cloneable])
        self.assertIn('skipped', proc.stderr)  # the table
        self.assertIn(self.glance.downloads(download), (1, 2))


class NotificationsTest(FleetTestCase):

    agents = (('a', None),)

    def assertDocumented(self, message):
        sample = test_notifications.readme_samples()[message['event_type']]
        shape = test_notifications.shape
        self.assertEqual((sample['priority'], shape(sample['payload'])),
                         (message['priority'], shape(message['payload'])),
                         message['event_type'])
        self.assertEqual('imaged.%s' % self.host('a'),
                         message['publisher_id'])

    def test_root_disk_events_reach_a_listener(self):
        image = self.glance.create(base.random_raw(units.Mi), backend='ceph')
        disk = self.create_root_disk('a', image['id'])
        self.api.delete_root_disk(self.ctxt, self.host('a'),
                                  disk['instance_uuid'])
        missing = str(uuid.uuid4())
        # Any error: what is checked is its notification below.
        self.assertRaises(Exception, self.create_root_disk, 'a',  # noqa: H202
                          missing)
        for event_type, match in (
                ('root_disk.create.start', {'image_id': image['id']}),
                ('root_disk.create.end', {'image_id': image['id']}),
                ('root_disk.delete.end',
                 {'instance_uuid': disk['instance_uuid']}),
                ('root_disk.create.error', {'image_id': missing})):
            [message] = self.listener.wait_for(event_type, **match)
            self.assertDocumented(message)
        [end] = self.listener.wait_for('root_disk.create.end',
                                       image_id=image['id'])
        self.assertEqual(('clone', disk['parent']),
                         (end['payload']['strategy'],
                          end['payload']['parent']))
        self.assertIn('/%s/%s/' % (base.stack()['CEPH_IMAGES_POOL'],
                                   image['id']), disk['parent'])

    def test_a_dead_notification_broker_does_not_hang_calls(self):
        dead = 'rabbit://guest:guest@127.0.0.1:%d/' % base.free_port()
        self.daemons['deaf'] = daemon = self.start_agent(
            'deaf', {'oslo_messaging_notifications': {'transport_url': dead}})
        instance_uuid = str(uuid.uuid4())
        # delete_root_disk of a missing disk: nothing to do but notify.
        self.assertIsNone(self.api.delete_root_disk(
            self.ctxt, daemon.host, instance_uuid))
        self.assertIn('Could not send notification to %s' % self.topic,
                      daemon.log())

    def test_cache_images_and_fetch_events_reach_a_listener(self):
        image = self.glance.create(base.random_raw(3 * units.Mi),
                                   backend='local')
        self.forget_base(image['id'])
        answer = self.api.cache_images(self.ctxt, self.host('a'),
                                       [image['id']])
        self.assertEqual({image['id']: 'cached'}, answer)
        host = self.host('a')
        for event_type, match in (
                ('cache_images.start', {'host': host, 'total': 1}),
                ('cache_images.progress', {'image_id': image['id']}),
                ('cache_images.end', {'images_cached': [image['id']]}),
                ('image.fetch.start', {'image_id': image['id']}),
                ('image.fetch.end', {'image_id': image['id']})):
            [message] = self.listener.wait_for(event_type, **match)
            self.assertDocumented(message)
        [end] = self.listener.wait_for('image.fetch.end',
                                       image_id=image['id'])
        self.assertEqual((3 * units.Mi, 0), (end['payload']['bytes'],
                                             end['payload']['retries']))


# "always": this agent cleans the pool whichever other agent (the quick
# start's, another test's) holds the pool's cleanup role.
# Seconds a pool-wide cleanup run may take to purge a deleted image.
PURGE_WAIT = 120
SHORT_CLEANUP = {'image_cache': {'manager_interval': '2',
                                 'glance_check_interval': '1',
                                 'remove_unused_base_images_min_age': '0',
                                 'pool_cleanup': 'always'}}


class PurgeTest(FleetTestCase):

    agents = (('a', SHORT_CLEANUP),)

    @classmethod
    def setUpClass(cls):
        # Its agents clean the pool every 2 s: no other test may plant
        # another host's leftovers meanwhile (they would go at once).
        cls.sweeps = base.PoolSweeps(exclusive=True)
        cls.sweeps.setUp()
        try:
            super().setUpClass()
        except Exception:
            cls._release_sweeps()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls._release_sweeps()

    @classmethod
    def _release_sweeps(cls):
        sweeps, cls.sweeps = cls.sweeps, None
        if sweeps is not None:
            sweeps.cleanUp()

    def cache(self, name, image):
        self.forget_base(image['id'])
        answer = self.api.cache_images(self.ctxt, self.host(name),
                                       [image['id']])
        self.assertIn(answer[image['id']], READY)
        self.assertIn(image['id'], self.cached(name))

    def in_pool(self, image_id):
        return '%s_base' % image_id in self.ceph.names()

    def test_an_image_deleted_in_glance_goes_within_a_cleanup_interval(self):
        from tests.functional import test_root_disks
        # qcow2: converted straight into a base image in the pool.
        data = base.random_raw(units.Mi)
        doomed = self.glance.create(test_root_disks.qcow2_holding(data),
                                    disk_format='qcow2', backend='local')
        kept = self.glance.create(base.random_raw(units.Mi), backend='local')
        for image in (doomed, kept):
            self.cache('a', image)
        disk = self.create_root_disk('a', doomed['id'])
        self.glance.delete(doomed['id'])
        # A pool-wide run asks Glance about every base in the pool and
        # reads each one's state: its length grows with what the other
        # tests left there (it once took over 30 s in a full run).
        base.wait_for(lambda: 'Purging cached image %s' % doomed['id']
                      in self.daemons['a'].log(),
                      PURGE_WAIT, what='the purge of the deleted image')
        # Its base leaves the pool at once for the RBD trash, though a disk
        # is still cloned from it (clone format 2); the disk reads right.
        trashed = '%s_base' % doomed['id']
        base.wait_for(lambda: not self.in_pool(doomed['id']) and
                      trashed in self.ceph.trash(), 30,
                      what='the base of the deleted image in the trash')
        self.assertEqual(data[:4096], self.ceph.read(disk['name'], 0, 4096))
        self.api.delete_root_disk(self.ctxt, self.host('a'),
                                  disk['instance_uuid'])
        base.wait_for(lambda: doomed['id'] not in self.cached('a') and
                      trashed not in self.ceph.trash(), PURGE_WAIT,
                      what='the deleted image to leave cache and trash')
        self.assertIn(kept['id'], self.cached('a'))
        self.assertTrue(self.in_pool(kept['id']))
        evictions = self.listener.events(image_id=doomed['id'],
                                         reason='deleted')
        # A qcow2 image is converted straight into its base image in Ceph
        # and keeps no local file: only the base image is evicted.
        self.assertEqual({'rbd'},
                         {m['payload']['where'] for m in evictions
                          if m['event_type'] == 'image_cache.evict'})

    def test_an_image_whose_glance_is_unreachable_stays(self):
        # Not deleted in Glance: an agent that treated "cannot ask" as
        # "gone" would still remove it, and no other agent sharing the
        # pool has a reason to.
        image = self.glance.create(base.random_raw(units.Mi), backend='local')
        self.daemons['blind'] = daemon = self.start_agent('blind')
        self.cache('blind', image)
        daemon.stop()
        # Same host and state, but its Glance is now a dead port.
        options = dict(SHORT_CLEANUP, glance={
            'endpoint_override': 'http://127.0.0.1:%d' % base.free_port(),
            'num_retries': '0', 'timeout': '2'})
        self.daemons['blind'] = blind = self.start_agent(
            'blind', options, host=daemon.host)
        base.wait_for(lambda: blind.log().count(
            'Cannot ask Glance whether cached images were deleted') >= 3,
            60, what='three cleanup runs that could not reach Glance')
        self.assertIn(image['id'], self.cached('blind'))
        self.assertTrue(self.in_pool(image['id']))
        self.assertEqual([], self.listener.events(image_id=image['id'],
                                                  reason='deleted'))
