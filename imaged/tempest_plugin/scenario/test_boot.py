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

"""Root disks that a hypervisor boots: QEMU, from the disk's own boot loader.

Each test uploads the boot image of :mod:`.bootdisk` (raw to
the clone store, qcow2 to the download store), has the agent make a 2 GiB
root disk of it, boots that disk with QEMU through its RBD driver, and reads
on the serial console that the guest booted, saw 2 GiB and wrote its marker;
then checks with librbd that the marker is in the disk, and neither in the
image the disk was made from nor in a second disk made from it afterwards.
"""

import os
import subprocess
import time

import fixtures
from oslo_utils import units
from testtools import content

from imaged.tempest_plugin.scenario import base
from imaged.tempest_plugin.scenario import bootdisk

DISK_GB = 2


class BootTest(base.ScenarioTestCase):

    def setUp(self):
        super().setUp()
        boot = self.conf.imaged_boot
        if not boot.enabled:
            self.skipTest('[imaged_boot] enabled is false in tempest.conf')
        if not boot.image_cache_dir:
            self.fail('[imaged_boot] image_cache_dir is not set')
        # Building (once), uploading and two creates, beside the boot.
        self.useFixture(fixtures.Timeout(boot.boot_timeout + 300,
                                         gentle=True))
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.image_path = bootdisk.build(boot.image_cache_dir)
        with open(self.image_path, 'rb') as f:
            self.image_bytes = f.read()

    def boot(self, disk_name):
        """Boot the disk until the guest powers off; the QEMU run."""
        ceph = self.conf.imaged_ceph
        drive = bootdisk.rbd_drive(ceph.pool, disk_name, user=ceph.user,
                                   conf=ceph.ceph_conf, keyring=ceph.keyring)
        run = bootdisk.Boot(self.conf.imaged_boot.qemu_command, drive,
                            os.path.join(self.tmp, 'console.log'))
        self.addCleanup(run.stop)
        finished = run.run(self.conf.imaged_boot.boot_timeout)
        self.record_boot_time(run)
        self.addDetail('console', content.text_content(run.console()))
        self.addDetail('qemu', content.text_content(
            '%s\nexit %s after %.1fs\n%s' % (
                ' '.join(run.command), run.returncode, run.seconds,
                run.output.decode(errors='replace'))))
        self.assertTrue(finished, 'the guest booted from %s did not power '
                        'off within %ss' % (
                            disk_name, self.conf.imaged_boot.boot_timeout))
        self.assertEqual(0, run.returncode, 'QEMU failed')
        return run

    def record_boot_time(self, run):
        """Beside the image: how long boots take here, to choose the
        bound from (a passing test's details are not kept)."""
        line = '%s %s %.1fs (guest: %s)\n' % (
            time.strftime('%Y-%m-%dT%H:%M:%S'), self.id().rsplit('.', 1)[-1],
            run.seconds, run.reports()[-1:])
        self.addDetail('boot-time', content.text_content(line))
        with open(os.path.join(self.conf.imaged_boot.image_cache_dir,
                               'boot-times.log'), 'a') as f:
            f.write(line)

    def assertBootedAndWrote(self, run):
        self.assertEqual([], bootdisk.missing_reports(
            run.reports(), DISK_GB * units.Gi), 'the guest did not report')

    def assertMarkerOffsetsHold(self, disk_name, guest_wrote):
        """At every marker offset the disk holds the guest's marker, or
        (``guest_wrote`` false) what the image holds there: zeros."""
        for offset in bootdisk.MARKER_OFFSETS:
            want = bootdisk.GUEST_MARKER if guest_wrote else bytes(512)
            self.assertEqual(want, self.ceph.read(disk_name, offset, 512),
                             '%s at offset %d' % (disk_name, offset))

    def check_boot(self, image, strategy):
        disk = self.create_root_disk(image['id'], size_gb=DISK_GB)
        self.assertEqual(strategy, disk['strategy'])
        self.assertDiskHolds(disk['name'], self.image_bytes,
                             size_bytes=DISK_GB * units.Gi)
        self.assertMarkerOffsetsHold(disk['name'], guest_wrote=False)

        run = self.boot(disk['name'])
        self.assertBootedAndWrote(run)

        # The guest's writes are in its disk...
        self.assertMarkerOffsetsHold(disk['name'], guest_wrote=True)
        # ... not in the image the disk is a clone of ...
        parent = self.ceph.parent(disk['name'])
        if parent:
            pool, name, snapshot = parent
            self.assertEqual(len(self.image_bytes),
                             self.ceph.size(name, pool, snapshot))
            inside = bootdisk.MARKER_OFFSETS[0]  # the other is beyond it
            self.assertEqual(bytes(512),
                             self.ceph.read(name, inside, 512, pool, snapshot))
        # ... and not in the next disk made from the same image.
        second = self.create_root_disk(image['id'], size_gb=DISK_GB)
        self.assertDiskHolds(second['name'], self.image_bytes)
        self.assertMarkerOffsetsHold(second['name'], guest_wrote=False)

    def test_clone_of_raw_image_in_ceph_store_boots(self):
        image = self.upload(self.image_bytes, store='clone')
        self.check_boot(image, 'clone')

    def test_disk_from_qcow2_image_downloaded_from_file_store_boots(self):
        qcow2 = os.path.join(self.tmp, 'boot.qcow2')
        subprocess.run(('qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                        self.image_path, qcow2), check=True,
                       capture_output=True, timeout=120)
        with open(qcow2, 'rb') as f:
            data = f.read()
        image = self.upload(data, disk_format='qcow2', store='download')
        self.check_boot(image, 'download')
