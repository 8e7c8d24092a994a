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

"""Agents of several compute hosts share one pool, as in production."""

from oslo_utils import units

from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images
from tests.scenario.faults import base as fault_base

IMAGE_SIZE = 8 * units.Mi


class SharedPoolTest(fault_base.FaultTestCase):

    # Agents and image of its own: nothing shared is disturbed.
    exclusive = False

    def test_two_hosts_making_disks_from_one_new_image_at_once_both_succeed(
            self):
        data = images.random_bytes(IMAGE_SIZE)
        image = self.upload(data)
        proxy = self.glance_proxy()
        proxy.rate = IMAGE_SIZE // 2  # two seconds each: they overlap
        options = {'glance': {'endpoint_override': proxy.endpoint}}
        agents = [self.start_agent(options), self.start_agent(options)]
        calls = [self.in_background(self.create_on, agent, image['id'])
                 for agent in agents]
        for call in calls:
            self.assertTrue(call['done'].wait(120), 'a call never ended')
        errors = [repr(call['error']) for call in calls if 'error' in call]
        self.assertEqual([], errors)
        for call in calls:
            self.assertDiskHolds(call['result']['name'], data)
        # The loser removes its partial copy at once, or, if Ceph still
        # holds it busy, its periodic cleanup does.
        base.wait_for(lambda: not [
            n for n in self.ceph.names_with(image['id'])
            if n.endswith(base.PARTIAL_SUFFIX)], 90, interval=1,
            what='the partial images to be removed')
