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

"""The agent killed, stopped or restarted while it works."""

import time

import oslo_messaging as messaging
from oslo_utils import units
from testtools import content

from imaged import exception
from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images
from tests.scenario.faults import base as fault_base

IMAGE_SIZE = 32 * units.Mi
# Glance (through the proxy) sends the image in about 8 s.
SLOW = IMAGE_SIZE // 8


class _SlowDownloadMixin:

    def _slow_download_under_way(self, own_instance):
        """A new image, a fresh agent reading it slowly, and a call for it.

        :param own_instance: whether the disk is removed at the end through
            this agent (it survives the fault), else without it.
        """
        data = images.random_bytes(IMAGE_SIZE)
        image = self.upload(data)
        proxy = self.glance_proxy()
        proxy.rate = SLOW
        agent = self.start_agent(
            {'glance': {'endpoint_override': proxy.endpoint}})
        instance_uuid = self.new_instance(agent.host if own_instance
                                          else None)
        call = self.in_background(self.create_on, agent, image['id'],
                                  instance_uuid=instance_uuid, timeout=120)
        return data, image, proxy, agent, instance_uuid, call


class AgentKilledTest(_SlowDownloadMixin, fault_base.FaultTestCase):

    # Kills an agent of its own: nothing shared is disturbed.
    exclusive = False

    def test_sigkill_mid_download_leaves_nothing_and_the_retry_succeeds(self):
        data, image, proxy, agent, instance_uuid, call = \
            self._slow_download_under_way(own_instance=True)
        base.wait_for(lambda: proxy.served > IMAGE_SIZE // 4, 60,
                      interval=0.05, what='the download to be under way')
        self.assertLess(proxy.served, IMAGE_SIZE * 3 // 4)
        partial_files = agent.tmp_files()
        agent.kill()
        self.addDetail('tmp-files-when-killed', content.text_content(
            repr(partial_files)))
        self.assertTrue(call['done'].wait(60), 'the call never ended')
        self.assertIn('error', call)
        # Dead, it left no file or disk that looks finished.
        self.assertNotIn(image['id'], agent.base_files())
        self.assertEqual([], [
            n for n in self.ceph.names_with(instance_uuid, image['id'])
            if not n.endswith(base.PARTIAL_SUFFIX)])

        proxy.heal()
        self.restart_agent(agent)
        # Its start-up removed the partial files before serving, and
        # removes the partial images in the background (a killed
        # process's watch on them lingers for up to ~30 s).
        self.assertCleanCache(agent, image['id'])
        self.assertNothingInPool(instance_uuid)
        base.wait_for(lambda: not [
            n for n in self.ceph.names_with(image['id'])
            if n.endswith(base.PARTIAL_SUFFIX)], 90, interval=1,
            what='the partial images to be removed')

        disk = self.create_on(agent, image['id'],
                              instance_uuid=instance_uuid)
        self.assertEqual('download', disk['strategy'])
        self.assertDiskHolds(disk['name'], data, size_bytes=units.Gi)
        self.assertCleanCache(agent, image['id'], complete=data)
        self.assertEqual(IMAGE_SIZE, self.cached(host=agent.host)[
            image['id']]['size_bytes'])


class AgentStoppedTest(_SlowDownloadMixin, fault_base.FaultTestCase):

    # Stops an agent of its own: nothing shared is disturbed.
    exclusive = False

    def test_sigterm_lets_a_call_in_flight_finish_before_exit(self):
        # The agent will be gone: the test itself removes the disk.
        data, image, proxy, agent, instance_uuid, call = \
            self._slow_download_under_way(own_instance=False)
        base.wait_for(lambda: proxy.served > IMAGE_SIZE // 8, 60,
                      interval=0.05, what='the download to be under way')
        agent.terminate()
        started = time.monotonic()
        self.assertTrue(call['done'].wait(90), 'the call never ended')
        returncode = agent.process.wait(90)
        self.addDetail('exit', content.text_content(
            'imaged exited with %s after %.1fs' % (
                returncode, time.monotonic() - started)))
        self.assertEqual(set(), agent.pids())
        if 'error' in call:
            # Cleanly refused: a typed error, and nothing half-made.
            self.assertIsInstance(call['error'], exception.ImagedException)
            self.assertNotIn(base.disk_name(instance_uuid),
                             self.ceph.names())
        else:
            self.assertEqual('download', call['result']['strategy'])
            self.assertDiskHolds(call['result']['name'], data)
        self.assertEqual([], agent.tmp_files())
        self.assertEqual([], [
            n for n in self.ceph.names_with(instance_uuid, image['id'])
            if n.endswith(base.PARTIAL_SUFFIX)])


class AgentUnderTestRestartedTest(fault_base.FaultTestCase):

    def test_restarted_agent_keeps_its_disks_and_cache(self):
        data = images.random_bytes(4 * units.Mi)
        image = self.upload(data)
        first = self.create_root_disk(image['id'])
        with self.stopped('daemon'):
            self.assertIsNone(self._answers(), 'the agent still answers')
        base.wait_for(self._answers, 120, what='the agent to answer again')
        self.assertIn(image['id'], self.cached())
        again = self.create_root_disk(image['id'],
                                      instance_uuid=first['instance_uuid'])
        self.assertEqual('existing', again['strategy'])
        second = self.create_root_disk(image['id'])
        self.assertDiskHolds(second['name'], data)
        self.assertDownloads(1, image['id'])

    def _answers(self):
        try:
            return self.caller(timeout=5).call(self.ctxt, 'get_capabilities')
        except messaging.MessagingTimeout:
            return None
