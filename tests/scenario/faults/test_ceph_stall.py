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

"""The Ceph OSD stalls (SIGSTOP) or dies (SIGKILL) under calls in flight.

One agent has two downloads streaming into the pool and a clone started
during the outage, while get_capabilities is polled: it must live on (the
same processes), answer every call with a result or a typed error, and make
disks again once Ceph is back. A second agent, with a download of its own,
gets SIGTERM during the outage and must stop within its
graceful_shutdown_timeout.
"""

import time

from oslo_utils import units
from testtools import content
from testtools import matchers

from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images
from tests.scenario.faults import base as fault_base

IMAGE_SIZE = 32 * units.Mi
RATE = 2 * units.Mi  # per download: still under way when the OSD stops
CONNECT_TIMEOUT = 5  # [rbd] connect_timeout of the agents
OUTAGE = 4 * CONNECT_TIMEOUT
GRACEFUL = 30  # [DEFAULT] graceful_shutdown_timeout: above the write bound
# Seconds a call may take once Ceph is back (or, with the OSD dead, in the
# outage) before it counts as one that never answers.
BOUND = 120
# Slack beyond graceful_shutdown_timeout for a busy 2-core machine.
EXIT_SLACK = 15


class CephStallTest(fault_base.PoolFaultTestCase):

    def _agent(self, proxy):
        return self.start_agent({
            'DEFAULT': {'graceful_shutdown_timeout': str(GRACEFUL)},
            'rbd': {'connect_timeout': str(CONNECT_TIMEOUT)},
            'glance': {'endpoint_override': proxy.endpoint}})

    def _under_way(self, proxy, image_ids):
        base.wait_for(
            lambda: all(proxy.data_requests(i) for i in image_ids) and
            proxy.served > len(image_ids) * 2 * units.Mi, 60, interval=0.1,
            what='the downloads of %s to be under way' % ', '.join(image_ids))

    def _outage_under_load(self, outage, wait_in_outage):
        """Calls in flight through ``outage``; then the same calls again.

        :param wait_in_outage: whether the calls must end while the OSD is
            still out (a dead OSD bounds nothing by itself).
        """
        datas = [images.random_bytes(IMAGE_SIZE) for _ in range(2)]
        downloads = [self.upload(data) for data in datas]
        clone_data = images.random_bytes(4 * units.Mi)
        clone_image = self.upload(clone_data, store='clone')
        stopped_data = images.random_bytes(IMAGE_SIZE)
        stopped_image = self.upload(stopped_data)
        proxy = self.glance_proxy()
        proxy.rate = RATE
        agent, stopped = self._agent(proxy), self._agent(proxy)
        processes = agent.pids()

        calls = [self.create_in_background(agent, image['id'])
                 for image in downloads]
        stopped_call = self.create_in_background(stopped,
                                                 stopped_image['id'])
        self._under_way(proxy, [image['id'] for image in downloads] +
                        [stopped_image['id']])
        poller = fault_base.CapabilitiesPoller(self.api, self.ctxt,
                                               agent.host)
        self.addCleanup(poller.stop)
        with outage():
            outage_started = time.monotonic()
            calls.append(self.create_in_background(agent, clone_image['id']))
            time.sleep(CONNECT_TIMEOUT + 1)
            self.assertStopsWithin(stopped, GRACEFUL + EXIT_SLACK)
            time.sleep(max(0, OUTAGE - (time.monotonic() - outage_started)))
            if wait_in_outage:
                ended_in_outage = [call['done'].wait(max(
                    1, BOUND - (time.monotonic() - outage_started)))
                    for call in calls]
        for call in calls + [stopped_call]:
            self.assertTrue(call['done'].wait(BOUND),
                            'a call never answered: %r' % call)
        if wait_in_outage:
            self.assertEqual([True] * len(calls), ended_in_outage,
                             'calls still in flight %ds into the outage' %
                             BOUND)
        time.sleep(2)  # a poll or two after the outage
        poller.stop()
        self.addDetail('get_capabilities', content.text_content('\n'.join(
            '%5.1fs %s %s' % o for o in poller.outcomes)))
        self.expectThat([o for o in poller.outcomes
                         if o[1].startswith('UNTYPED')], matchers.Equals([]))
        # SIGTERM let the stopped agent answer its call before it exited.
        self.assertTyped(calls + [stopped_call])
        self.assertEqual(processes, agent.pids(), 'the agent restarted')

        # What succeeded holds the image; once Ceph serves again (its PGs
        # active, a read of ours answered), everything works again.
        self.unstick_laggy_pgs()
        self.wait_ceph_serves(agent)
        proxy.heal()
        expected = datas + [clone_data]
        for call, data in zip(calls, expected):
            if 'result' in call:
                self.assertDiskHolds(call['result']['name'], data)
        for image, data in zip(downloads + [clone_image], expected):
            disk = self.create_on(agent, image['id'])
            self.assertDiskHolds(disk['name'], data)
        self.assertEqual('clone', disk['strategy'])
        # The stopped agent, started again, finds its leftovers and works.
        self.restart_agent(stopped)
        disk = self.create_on(stopped, stopped_image['id'])
        self.assertDiskHolds(disk['name'], stopped_data)
        self.wait_no_partial_images(
            *[image['id'] for image in downloads + [stopped_image]])
        self.assertStopsWithin(agent, GRACEFUL + EXIT_SLACK)
        self.restart_agent(agent)  # the disks are deleted through it

    def test_osd_stopped_longer_than_connect_timeout_under_load(self):
        self._outage_under_load(self.osd_paused, wait_in_outage=False)

    def test_osd_killed_under_load_then_started_again(self):
        self._outage_under_load(self.osd_killed, wait_in_outage=True)
