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

"""What the agent tells about itself: capabilities and its base cache."""

import datetime
import uuid

from oslo_utils import units

from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images


class CapabilitiesTest(base.ScenarioTestCase):

    def test_capabilities_describe_a_healthy_agent_and_its_cluster(self):
        caps = self.api.get_capabilities(self.ctxt, self.host)
        self.assertEqual({'version', 'host', 'backend', 'fsid', 'pool',
                          'cache', 'problems', 'calls', 'flattens'},
                         set(caps))
        self.assertLessEqual({'long_running', 'long_queued',
                              'max_concurrent_long_calls',
                              'max_queued_long_calls'}, set(caps['calls']))
        flattens = caps['flattens']
        self.assertEqual({'queued', 'running', 'max_queued', 'max_running',
                          'dropped'}, set(flattens))
        self.assertLessEqual(flattens['queued'], flattens['max_queued'])
        self.assertLessEqual(flattens['running'], flattens['max_running'])
        self.assertEqual((self.host, 'rbd', self.ceph.fsid(),
                          self.conf.imaged_ceph.pool),
                         (caps['host'], caps['backend'], caps['fsid'],
                          caps['pool']))
        self.assertIsInstance(caps['version'], str)
        self.assertNotEqual('', caps['version'])
        self.assertEqual([], caps['problems'])
        cache = caps['cache']
        self.assertEqual({'path', 'used_bytes', 'free_bytes'}, set(cache))
        self.assertTrue(cache['path'].startswith('/'), cache['path'])
        self.assertIsInstance(cache['used_bytes'], int)
        self.assertGreaterEqual(cache['used_bytes'], 0)
        self.assertGreater(cache['free_bytes'], 0)

    def test_empty_context_is_served_like_any_other(self):
        caps = self.caller(timeout=30).call({}, 'get_capabilities')
        self.assertEqual(self.host, caps['host'])


class CachedImagesTest(base.ScenarioTestCase):

    def test_list_names_each_cached_image_with_size_and_last_use(self):
        small = images.random_bytes(units.Mi)
        sparse = images.random_bytes(units.Mi) + bytes(7 * units.Mi)
        before = datetime.datetime.now(datetime.timezone.utc)
        ids = [self.upload(small)['id'], self.upload(sparse)['id']]
        for image_id in ids:
            self.create_root_disk(image_id)
        entries = self.api.list_cached_images(self.operator_context(),
                                              self.host)
        self.assertIsInstance(entries, list)
        by_id = {e['image_id']: e for e in entries if e['where'] == 'rbd'}
        self.assertEqual(len(entries), len({(e['image_id'], e['where'])
                                            for e in entries}),
                         'one entry per image and place')
        for entry in entries:
            self.assertEqual({'image_id', 'size_bytes', 'last_used', 'where'},
                             set(entry))
            self.assertIn(entry['where'], ('file', 'rbd'))
            self.assertEqual(entry['image_id'],
                             str(uuid.UUID(entry['image_id'])))
            last_used = datetime.datetime.fromisoformat(entry['last_used'])
            self.assertIsNotNone(last_used.tzinfo, entry['last_used'])
        for image_id, size in zip(ids, (len(small), len(sparse))):
            self.assertEqual(size, by_id[image_id]['size_bytes'])
            last_used = datetime.datetime.fromisoformat(
                by_id[image_id]['last_used'])
            # Clocks of two hosts: allow a minute of skew.
            self.assertGreater(last_used,
                               before - datetime.timedelta(minutes=1))
