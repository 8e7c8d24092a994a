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

"""RabbitMQ, Glance and Ceph going away and coming back."""

import time
import uuid

from oslo_utils import units

from imaged import exception
from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images
from tests.scenario.faults import base as fault_base

# How long a caller may wait for a typed error while a service is down.
REFUSAL_SECONDS = 60
# How long the agent may take to notice a service is back.
RECOVERY_SECONDS = 90


class RabbitMQRestartTest(fault_base.FaultTestCase):

    def test_agents_reconnect_by_themselves_after_a_broker_restart(self):
        image = self.upload(images.random_bytes(units.Mi), store='clone')
        agent = self.start_agent()
        processes = agent.pids()
        self.restart('rabbitmq')
        for host in (self.host, agent.host):
            base.wait_for(lambda: self._answers(host), RECOVERY_SECONDS,
                          what='%s to answer after the restart' % host)
        # The same processes: nobody restarted the agent.
        self.assertEqual(processes, agent.pids())
        for host in (self.host, agent.host):
            instance_uuid = str(uuid.uuid4())
            self.addCleanup(self.remove_disk, instance_uuid, host)
            disk = self.api.create_root_disk(self.ctxt, host, instance_uuid,
                                             image['id'], 1)
            self.assertEqual('clone', disk['strategy'])

    def _answers(self, host):
        try:
            return self.api.client.prepare(server=host, timeout=5).call(
                self.ctxt, 'get_capabilities')
        except Exception:  # the broker, or our connection to it, not back
            return None


class GlanceDownTest(fault_base.FaultTestCase):

    def test_glance_stopped_mid_download_and_before_a_call(self):
        during = images.random_bytes(16 * units.Mi)
        after = images.random_bytes(units.Mi)
        during_image = self.upload(during)
        after_image = self.upload(after)
        proxy = self.glance_proxy()
        proxy.rate = units.Mi  # still under way when Glance is stopped
        agent = self.start_agent(
            {'glance': {'endpoint_override': proxy.endpoint}})
        instance_uuid = self.new_instance(agent.host)
        call = self.in_background(self.create_on, agent, during_image['id'],
                                  instance_uuid=instance_uuid)
        base.wait_for(lambda: proxy.served > 2 * units.Mi, 60,
                      interval=0.05, what='the download to be under way')
        with self.stopped('glance'):
            self.assertTrue(call['done'].wait(REFUSAL_SECONDS),
                            'no answer while Glance is down')
            self.assertIsInstance(call.get('error'), (
                exception.ImageDownloadFailed, exception.BackendUnavailable))
            self.assertRefusedInTime(
                exception.BackendUnavailable, REFUSAL_SECONDS,
                self.create_on, agent, after_image['id'])
            caps = self.api.get_capabilities(self.ctxt, agent.host)
            self.assertNotEqual([], caps['problems'])
            self.assertIn('Glance', ' '.join(caps['problems']))
        for image in (during_image, after_image):
            self.assertCleanCache(agent, image['id'])
            self.assertNothingInPool(image['id'])
        self.assertNothingInPool(instance_uuid)

        proxy.heal()
        for image, data in ((during_image, during), (after_image, after)):
            disk = self.create_on(agent, image['id'])
            self.assertDiskHolds(disk['name'], data)
            self.assertCleanCache(agent, image['id'], complete=data)
        self.assertEqual([], self.api.get_capabilities(
            self.ctxt, agent.host)['problems'])

    def test_downloads_cut_short_fail_typed_and_cache_nothing(self):
        data = images.random_bytes(8 * units.Mi)
        image = self.upload(data)
        proxy = self.glance_proxy()
        proxy.cut_after = 3 * units.Mi
        agent = self.start_agent(
            {'glance': {'endpoint_override': proxy.endpoint}})
        instance_uuid = self.new_instance(agent.host)
        e = self.assertRefusedInTime(
            exception.ImageDownloadFailed, REFUSAL_SECONDS, self.create_on,
            agent, image['id'], 1, instance_uuid)
        self.assertIn(image['id'], str(e))
        self.assertCleanCache(agent, image['id'])
        self.assertNothingInPool(image['id'], instance_uuid)
        self.assertNotCached(image['id'], host=agent.host)

        proxy.heal()
        disk = self.create_on(agent, image['id'], instance_uuid=instance_uuid)
        self.assertDiskHolds(disk['name'], data)
        self.assertCleanCache(agent, image['id'], complete=data)


class CephDownTest(fault_base.FaultTestCase):

    def test_ceph_without_osds_gives_typed_errors_and_recovers_unaided(self):
        data = images.random_bytes(units.Mi)
        image = self.upload(data)
        agent = self.start_agent({'rbd': {'connect_timeout': '5'}})
        processes = agent.pids()
        instance_uuid = self.new_instance(agent.host)
        with self.stopped('ceph_osd'):
            self.assertRefusedInTime(
                (exception.BackendUnavailable, exception.StorageError),
                REFUSAL_SECONDS, self.create_on, agent, image['id'], 1,
                instance_uuid)
            started = time.monotonic()
            caps = self.api.get_capabilities(self.ctxt, agent.host)
            self.assertLess(time.monotonic() - started, REFUSAL_SECONDS)
            self.assertNotEqual([], caps['problems'])
        base.wait_for(
            lambda: not self.api.get_capabilities(
                self.ctxt, agent.host)['problems'],
            RECOVERY_SECONDS, interval=2, what='the problems to clear')
        disk = self.create_on(agent, image['id'], instance_uuid=instance_uuid)
        self.assertDiskHolds(disk['name'], data)
        self.assertEqual(processes, agent.pids())
        self.assertEqual([], [n for n in self.ceph.names_with(image['id'])
                              if n.endswith(base.PARTIAL_SUFFIX)])
