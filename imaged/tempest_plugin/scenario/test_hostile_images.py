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

"""Images that lie or reach outside themselves are refused, leaving nothing.

Glance itself may refuse some of these uploads (Glance 33 inspects images
with container_format ``bare``); they are uploaded as ``ovf`` so that they
get through, as they would with an older or differently configured Glance:
the agent must never rely on Glance having checked.
"""

import fixtures
from oslo_utils import units

from imaged import exception
from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import images


class HostileImageTestCase(base.ScenarioTestCase):

    def setUp(self):
        super().setUp()
        directory = self.useFixture(fixtures.TempDir()).path
        self.host_file = images.MarkerFile(
            directory, 'IMAGED-SCENARIO-HOST-FILE-%s' % self.marker)

    def assertRefused(self, data, disk_format, errors=(
            exception.ImageUnacceptable,), size_gb=1, reason=None):
        """The image is refused with one of ``errors``; nothing remains."""
        image = self.upload(data, disk_format=disk_format,
                            container_format='ovf', store='download')
        instance_uuid = self.new_instance()
        try:
            e = self.assertRaises(errors, self.create_root_disk, image['id'],
                                  size_gb, instance_uuid)
        finally:
            self.assertNoHostFileInDisks(instance_uuid)
        self.assertIn(image['id'], str(e))
        if reason:
            self.assertIn(reason, str(e))
        self.assertNoDisk(instance_uuid)
        self.assertNotCached(image['id'])
        self.assertEqual([], self.ceph.names_with(image['id']))
        return e

    def assertNoHostFileInDisks(self, instance_uuid):
        """Whatever disk exists for the instance, the host file is not in
        it (a failing test says whether the reference was followed)."""
        for name in self.ceph.names_with(instance_uuid):
            self.assertFalse(self.ceph.contains(name, self.host_file.marker),
                             'disk %s holds the host file %s' % (
                                 name, self.host_file.path))


class ReferencesToHostFilesTest(HostileImageTestCase):

    def test_qcow2_with_a_backing_file_is_refused(self):
        self.assertRefused(self.host_file.qcow2_with_backing_file(), 'qcow2',
                           reason='backing')

    def test_qcow2_with_an_external_data_file_is_refused(self):
        self.assertRefused(self.host_file.qcow2_with_data_file(), 'qcow2',
                           reason='data')

    def test_vmdk_descriptor_naming_a_host_file_is_refused(self):
        self.assertRefused(self.host_file.vmdk_descriptor(), 'vmdk')

    def test_sparse_vmdk_with_an_extra_extent_on_a_host_file_is_refused(self):
        self.assertRefused(self.host_file.sparse_vmdk_naming_host_file(),
                           'vmdk')


class FormatMismatchTest(HostileImageTestCase):

    def test_qcow2_content_declared_raw_is_refused(self):
        # Used as raw it would be a qcow2 header for the guest to see; read
        # as qcow2 it would be what the declared format hides.
        self.assertRefused(images.qcow2_holding(b'hidden'), 'raw',
                           reason='qcow2')

    def test_raw_content_declared_qcow2_is_refused(self):
        self.assertRefused(images.random_bytes(units.Mi), 'qcow2')

    def test_vmdk_content_declared_qcow2_is_refused(self):
        self.assertRefused(self.host_file.sparse_vmdk_naming_host_file(),
                           'qcow2')

    def test_disk_format_the_agent_does_not_handle_is_refused(self):
        self.assertRefused(images.random_bytes(units.Mi), 'aki')


class VirtualSizeTest(HostileImageTestCase):

    def test_small_qcow2_claiming_100_gib_is_too_large_for_a_1_gib_disk(self):
        data = images.empty_qcow2(100 * units.Gi)
        self.assertLess(len(data), units.Mi)
        e = self.assertRefused(data, 'qcow2',
                               errors=(exception.ImageTooLarge,))
        self.assertIn(str(100 * units.Gi), str(e))

    def test_qcow2_larger_than_the_disk_by_one_byte_is_too_large(self):
        data = images.empty_qcow2(units.Gi + 512)
        self.assertRefused(data, 'qcow2', errors=(exception.ImageTooLarge,))
