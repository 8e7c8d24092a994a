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

"""Clones from a Glance with its secure defaults (issue 8), on the real stack.

Glance behind Keystone shows no location in image records. The agents here
find them through the service-only locations API, or have Glance copy an
image into its Ceph store, and are called with the demo user's token.
"""

import shutil
import tempfile
import threading
import uuid

from oslo_utils import units

from tests.functional import base
from tests.functional import keystone_stack


def steps(disk):
    return [step.rsplit(' ', 1)[0] for step in disk.get('timings', [])]


class SecureGlanceTestCase(base.FunctionalTestCase):

    glance_extra = {}

    @classmethod
    def setUpClass(cls):
        cls.daemon_options = {
            'glance': keystone_stack.glance_options(**cls.glance_extra)}
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.ctxt = keystone_stack.user_context()
        self.images = keystone_stack.Images(self)
        env = base.stack()
        self.fsid = env['CEPH_FSID']
        self.glance_pool = env['CEPH_IMAGES_POOL']

    def glance_snapshot(self, image_id):
        return 'rbd://%s/%s/%s/snap' % (self.fsid, self.glance_pool,
                                        image_id)

    def start_agent(self, options):
        """Another agent on the same pool: its own host and state."""
        workdir = tempfile.mkdtemp(prefix='imaged-func-')
        self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
        host = 'func-%s' % uuid.uuid4().hex[:8]
        daemon = base.Daemon(workdir, host, options)
        daemon.start()
        self.addCleanup(daemon.stop)
        self.wait_until_serving(self.api, self.ctxt, host, daemon)
        return host

    def create_on(self, host, image_id, size_gb=1):
        instance_uuid = self.new_instance()
        return self.api.create_root_disk(self.ctxt, host, instance_uuid,
                                         image_id, size_gb)


class HiddenLocationsTest(SecureGlanceTestCase):

    def test_raw_image_in_ceph_store_is_cloned_through_the_api(self):
        data = base.random_raw(2 * units.Mi)
        image = self.images.create(data, store='ceph')
        self.assertNotIn('direct_url', image)
        self.assertFalse(image.get('locations'))
        disk = self.create_root_disk(image['id'])
        self.assertEqual('clone', disk['strategy'])
        self.assertEqual(self.glance_snapshot(image['id']), disk['parent'])
        self.assertIn('locations api', steps(disk))
        self.assertEqual(data[:units.Mi],
                         self.ceph.read(disk['name'], 0, units.Mi))
        self.assertEqual(0, self.images.downloads(image['id']))
        self.assertEqual(1, self.images.requests(image['id'], 'GET',
                                                 '/locations'))

    def test_file_store_image_without_rbd_store_name_is_downloaded(self):
        data = base.random_raw(units.Mi)
        image = self.images.create(data, store='local')
        disk = self.create_root_disk(image['id'])
        self.assertEqual('download', disk['strategy'])
        self.assertNotIn('copy-image', ' '.join(steps(disk)))
        self.assertEqual({'local'}, self.images.stores(image['id']))
        self.assertEqual(1, self.images.downloads(image['id']))


class RememberedLocationGoneTest(SecureGlanceTestCase):

    def test_a_copy_removed_from_the_ceph_store_is_looked_up_again(self):
        # The clone's location is remembered ([glance]
        # cloneable_location_ttl); Glance then removes the image from its
        # Ceph store (DELETE /v2/stores/ceph/<id>), the image still in its
        # file store: the next disk finds the snapshot gone, looks the
        # image up again and downloads it.
        data = base.random_raw(2 * units.Mi)
        image = self.images.create(data, store='local')
        self.images.service.images.image_import(image['id'], 'copy-image',
                                                stores=['ceph'])
        base.wait_for(lambda: 'ceph' in self.images.stores(image['id']),
                      60, interval=0.5, what='the copy into the Ceph store')
        first = self.create_root_disk(image['id'])
        self.assertEqual('clone', first['strategy'])
        # Glance cannot remove a snapshot a disk is cloned from.
        self.api.delete_root_disk(self.ctxt, self.host,
                                  first['instance_uuid'])
        self.images.service.images.delete_from_store('ceph', image['id'])
        self.assertEqual({'local'}, self.images.stores(image['id']))
        later = self.create_root_disk(image['id'])
        self.assertEqual('download', later['strategy'])
        self.assertEqual(data[:units.Mi],
                         self.ceph.read(later['name'], 0, units.Mi))
        self.assertIn('no longer at the location imaged found',
                      self.daemon.log())


class CopyImageTest(SecureGlanceTestCase):

    glance_extra = {'rbd_store_name': 'ceph', 'copy_poll_interval': '0.5',
                    'copy_timeout': '120'}

    def test_file_store_image_is_copied_once_and_cloned_by_two_hosts(self):
        data = base.random_raw(16 * units.Mi)
        image = self.images.create(data, store='local')
        other = self.start_agent({'glance': keystone_stack.glance_options(
            **self.glance_extra)})
        disks = {}

        def create(host):
            disks[host] = self.create_on(host, image['id'])
        threads = [threading.Thread(target=create, args=(host,))
                   for host in (self.host, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        self.assertEqual(2, len(disks), 'a create failed: see the logs')
        self.assertEqual({'local', 'ceph'}, self.images.stores(image['id']))
        self.assertIn(self.glance_snapshot(image['id']),
                      self.images.locations(image['id']))
        for disk in disks.values():
            self.assertEqual('clone', disk['strategy'])
            self.assertEqual(self.glance_snapshot(image['id']),
                             disk['parent'])
            self.assertEqual(data[:units.Mi],
                             self.ceph.read(disk['name'], 0, units.Mi))
        # One host asked for the copy; the other waited for it, or came
        # late enough to find it done already.
        self.assertIn('copy-image', [step for disk in disks.values()
                                     for step in steps(disk)])
        self.assertEqual(0, self.images.downloads(image['id']))
        # Ours and maybe the other host's (then a 409): never a third.
        posts = self.images.requests(image['id'], 'POST', '/import')
        self.assertIn(posts, (1, 2))

        # A later disk on either host clones the copy without asking.
        later = self.create_on(other, image['id'])
        self.assertEqual('clone', later['strategy'])
        self.assertNotIn('copy-image', steps(later))
        self.assertEqual(posts, self.images.requests(image['id'], 'POST',
                                                     '/import'))

    def test_copy_someone_else_asked_for_is_waited_for(self):
        # Large enough that the copy is still running when the agent asks.
        data = base.random_raw(160 * units.Mi)
        image = self.images.create(data, store='local')
        # As another host would: imaged's user asks Glance first.
        self.images.service.images.image_import(image['id'], 'copy-image',
                                                stores=['ceph'])
        disk = self.create_root_disk(image['id'])
        self.assertEqual('clone', disk['strategy'])
        self.assertEqual(self.glance_snapshot(image['id']), disk['parent'])
        self.assertIn('copy-image', steps(disk))
        self.assertEqual(0, self.images.downloads(image['id']))
        # Ours was never accepted: at most a 409 next to the first one.
        log = open(base.stack()['GLANCE_ACCESS_LOG']).read().splitlines()
        statuses = [line.split('"')[2].split()[0] for line in log
                    if 'POST /v2/images/%s/import' % image['id'] in line]
        self.assertEqual('202', statuses[0])
        self.assertLessEqual(set(statuses[1:]), {'409'})

    def test_refused_copy_falls_back_to_one_download(self):
        # A store Glance does not know: every copy-image request is a 409.
        host = self.start_agent({'glance': keystone_stack.glance_options(
            rbd_store_name='no-such-store', copy_poll_interval='0.2')})
        data = base.random_raw(units.Mi)
        image = self.images.create(data, store='local')
        disk = self.create_on(host, image['id'])
        self.assertEqual('download', disk['strategy'])
        self.assertIn('copy-image refused', steps(disk))
        self.assertEqual(data, self.ceph.read(disk['name'], 0, len(data)))
        self.assertEqual(1, self.images.downloads(image['id']))
        self.assertEqual({'local'}, self.images.stores(image['id']))
