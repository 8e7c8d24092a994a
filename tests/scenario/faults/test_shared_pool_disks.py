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

"""Root disks and bases in a shared pool: what a caller is told.

An agent of the test's own, behind a Glance proxy that counts the data
requests it sees (and Glance's access log, when the config names it): a
refusal must come before any byte moves.
"""

import os
import subprocess
import tempfile

from oslo_utils import units
from testtools import content

from imaged import exception
from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images
from tests.scenario.faults import base as fault_base

MAX_CACHE_GB = 0.01  # [image_cache] max_size_gb of the refusal test's agent


def vmdk_holding(data):
    """A streamOptimized VMDK (what Glance accepts as one) of ``data``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, vmdk = os.path.join(tmp, 'raw'), os.path.join(tmp, 'vmdk')
        with open(raw, 'wb') as f:
            f.write(data)
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'vmdk',
                        '-o', 'subformat=streamOptimized', raw, vmdk],
                       check=True, capture_output=True)
        with open(vmdk, 'rb') as f:
            return f.read()


class DiskOfAnotherImageTest(fault_base.PoolFaultTestCase):

    # Agents and images of its own: nothing shared is disturbed.
    exclusive = False

    def _disk_state(self, name, length):
        return (self.ceph.size(name), self.ceph.parent(name),
                self.metadata(name),
                base.sha256(self.ceph.read(name, 0, length)))

    def test_existing_disk_asked_for_another_image_is_refused_unchanged(
            self):
        first_data = images.random_bytes(2 * units.Mi)
        first = self.upload(first_data, store='clone')
        other = self.upload(images.random_bytes(2 * units.Mi))
        agent = self.start_agent()
        instance_uuid = self.new_instance(agent.host)
        disk = self.create_on(agent, first['id'], instance_uuid=instance_uuid)
        before = self._disk_state(disk['name'], len(first_data))

        e = self.assertRaises(exception.DiskImageMismatch, self.create_on,
                              agent, other['id'], 1, instance_uuid)
        self.assertIn(first['id'], str(e))
        self.assertIn(other['id'], str(e))
        self.assertEqual(before, self._disk_state(disk['name'],
                                                  len(first_data)))
        self.assertDownloads(0, other['id'])
        self.assertNothingInPool(other['id'])
        # Asked again for its own image, it is the idempotent repeat.
        again = self.create_on(agent, first['id'],
                               instance_uuid=instance_uuid)
        self.assertEqual(('existing', first['id']),
                         (again['strategy'], again['image_id']))
        self.assertDiskHolds(disk['name'], first_data)


class RefusedFromTheRecordTest(fault_base.PoolFaultTestCase):

    # Agents and images of its own: nothing shared is disturbed.
    exclusive = False

    def test_what_the_record_rules_out_is_refused_before_any_byte_moves(
            self):
        data = images.random_bytes(units.Mi)
        refused = [
            self.upload(vmdk_holding(data), disk_format='vmdk'),  # not allowed
            self.upload(data, container_format='ova'),
            # A file larger than the whole local cache may be (a raw image
            # streams into its RBD base, with no local file to bound).
            self.upload(images.qcow2_holding(
                images.random_bytes(int(MAX_CACHE_GB * units.Gi) + units.Mi),
                16 * units.Mi), disk_format='qcow2'),
        ]
        accepted = self.upload(data)
        proxy = self.glance_proxy()
        agent = self.start_agent({
            'glance': {'endpoint_override': proxy.endpoint},
            'image_cache': {'allowed_disk_formats': 'raw,qcow2',
                            'max_size_gb': str(MAX_CACHE_GB)}})
        for image in refused:
            instance_uuid = self.new_instance(agent.host)
            e = self.assertRaises(exception.ImageUnacceptable,
                                  self.create_on, agent, image['id'], 1,
                                  instance_uuid)
            self.assertIn(image['id'], str(e))
            self.assertEqual(0, proxy.data_requests(image['id']),
                             'image %s was downloaded: %s' % (image['id'], e))
            self.assertDownloads(0, image['id'])
            self.assertNothingInPool(image['id'], instance_uuid)
            self.assertCleanCache(agent, image['id'])
        # The agent does download what it may, through the proxy.
        disk = self.create_on(agent, accepted['id'])
        self.assertDiskHolds(disk['name'], data)
        self.assertEqual(1, proxy.data_requests(accepted['id']))


class CachedImagesListingTest(fault_base.PoolFaultTestCase):

    # Agents and images of its own: nothing shared is disturbed.
    exclusive = False

    def test_list_shows_local_base_files_and_rbd_bases(self):
        raw_data = images.random_bytes(2 * units.Mi)
        raw = self.upload(raw_data)
        qcow2_data = images.random_bytes(2 * units.Mi)
        qcow2 = self.upload(images.qcow2_holding(qcow2_data, 8 * units.Mi),
                            disk_format='qcow2')
        # A host keeps a local base file only without RBD bases (a qcow2
        # image is otherwise converted straight into its base image): the
        # same host, first without, then with them.
        agent = self.start_agent({'image_cache': {'rbd_base_images': False}})
        self.create_on(agent, qcow2['id'])
        self.stop_agent(agent)
        agent = self.start_agent(workdir=agent.workdir, host=agent.host)
        for image in (raw, qcow2):
            self.create_on(agent, image['id'])
        listed = self.api.list_cached_images(self.operator_context(),
                                             agent.host)
        self.addDetail('listed', content.text_content(repr(listed)))
        where = {(e['image_id'], e['where']): e for e in listed}
        # The qcow2 image's local raw file, and the RBD base made from it;
        # the raw image streamed into its RBD base only.
        self.assertEqual(
            {(qcow2['id'], 'file'), (qcow2['id'], 'rbd'), (raw['id'], 'rbd')},
            {key for key in where if key[0] in (raw['id'], qcow2['id'])})
        self.assertEqual(8 * units.Mi,
                         where[qcow2['id'], 'file']['size_bytes'])
        self.assertEqual(8 * units.Mi, where[qcow2['id'], 'rbd']['size_bytes'])
        self.assertEqual(len(raw_data), where[raw['id'], 'rbd']['size_bytes'])
        for entry in where.values():
            self.assertTrue(entry['last_used'], entry)
        self.assertEqual([qcow2['id']], [
            n for n in agent.base_files() if not n.startswith('.')])
