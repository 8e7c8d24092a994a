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

"""A VM boots from a lazy first disk (``[image_cache] lazy_first_disk``)
while its base is still a migration target reading from the agent.

The boot image of the Tempest boot test (:mod:`imaged.tempest_plugin.
scenario.bootdisk`, built once into the same cache) is uploaded raw to
Glance's file store; the agent downloads it through a proxy that holds
the download after its first bytes. So when the disk is handed out and
QEMU opens it through its RBD driver, the base cannot have been copied,
committed or published: the guest's BIOS reads its disk through an
uncommitted import-only migration; then the rest of the image comes,
slowly, while the guest boots, reading through the agent's source what
the copy has not brought yet. Once the base is published, the disk holds
the image's bytes and the guest's writes, nothing else.

A disk opened before the publish and read all the while, as a running VM
reads it, must read the image's bytes across the publish too: librbd
reads a migration target's snapshot through the source until the client
has seen the commit.
"""

import hashlib
import os
import threading
import time

import fixtures
from oslo_utils import units
from testtools import content

from imaged.tempest_plugin.scenario import bootdisk
from tests.functional import base
from tests.functional import test_lazy_first_disk
from tests import glance_proxy

# The Tempest boot test's cache (tools/scenario-conf.sh): built once.
IMAGE_CACHE_DIR = os.path.join(base.STACK_DIR, 'scenario', 'bootdisk')
DISK_GB = 2  # a marker goes at 1 GiB, beyond the image
# The download stops past the inspector's first 4 MiB (the disk is
# handed out) until the guest's BIOS runs; then the rest comes at RATE,
# during the boot: the boot loader (ldlinux.sys, near the 16th MiB) and
# most of the kernel are read while they are still coming.
HOLD = 6 * units.Mi
RATE = 4 * units.Mi
BIOS_BOOTING = 'Booting from Hard Disk'
# Generous on two busy CPUs (the guest powers off within ~10 s idle).
BOOT_TIMEOUT = 240
PUBLISH_TIMEOUT = 300
# A running VM's reads: one of READ bytes in every STRIDE, over and over.
READ, STRIDE = 32 * units.Ki, 128 * units.Ki
QEMU = 'qemu-system-x86_64'  # as [imaged_boot] qemu_command's default
PORT = base.free_port()


class LazyBootTest(base.FunctionalTestCase):

    @classmethod
    def setUpClass(cls):
        cls.proxy = glance_proxy.GlanceProxy(base.stack()['GLANCE_URL'])
        cls.daemon_options = {
            'image_cache': {'lazy_first_disk': 'true',
                            'lazy_source_port': str(PORT),
                            # Reads of bytes held back wait for them.
                            'lazy_source_timeout': '120'},
            'glance': {'endpoint_override': cls.proxy.endpoint,
                       'download_stall_timeout': '120'}}
        try:
            super().setUpClass()
        except BaseException:
            cls.proxy.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.proxy.close()

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        with open(bootdisk.build(IMAGE_CACHE_DIR), 'rb') as f:
            self.image_bytes = f.read()

    def published(self, image_id):
        return '%s_base' % image_id in self.ceph.names()

    def boot(self, disk_name, image_id):
        """Boot the disk; release the held download once the guest's BIOS
        runs. :returns: the run, and whether the base was published when
        the download was released and when the guest was off."""
        env = base.stack()
        drive = bootdisk.rbd_drive(self.ceph.pool, disk_name, user='admin',
                                   conf=env['CEPH_CONF'],
                                   keyring=env['CEPH_ADMIN_KEYRING'])
        run = bootdisk.Boot(QEMU, drive,
                            os.path.join(self.tmp, 'console.log'))
        # Last: a QEMU that was killed leaves its watch on the disk for a
        # while, and a disk with a watcher cannot be removed.
        self.addCleanup(self.ceph.remove_unwatched, disk_name)
        self.addCleanup(run.stop)
        over = threading.Event()
        seen = {'bios': False, 'published at release': None}

        def release_once_booting():
            try:  # bounded: ``over`` is set once the run ends
                base.wait_for(lambda: over.is_set() or
                              BIOS_BOOTING in run.console(),
                              BOOT_TIMEOUT * 2, interval=0.05,
                              what='the BIOS to boot')
                seen['bios'] = BIOS_BOOTING in run.console()
                seen['published at release'] = self.published(image_id)
            finally:
                self.proxy.release()

        releaser = threading.Thread(target=release_once_booting, daemon=True)
        releaser.start()
        try:
            finished = run.run(BOOT_TIMEOUT)
        finally:
            over.set()
            releaser.join(BOOT_TIMEOUT)
        seen['published at power off'] = self.published(image_id)
        self.addDetail('console', content.text_content(run.console()))
        self.addDetail('qemu', content.text_content(
            '%s\nexit %s after %.1fs; %s\n%s' % (
                ' '.join(run.command), run.returncode, run.seconds, seen,
                run.output.decode(errors='replace'))))
        self.assertTrue(finished, 'the guest booted from %s did not power '
                        'off within %ss' % (disk_name, BOOT_TIMEOUT))
        self.assertEqual(0, run.returncode, 'QEMU failed')
        return run, seen

    def test_a_vm_boots_from_its_lazy_disk_while_the_base_is_copied(self):
        data = self.image_bytes
        image = self.glance.create(data, backend='local')
        name = '%s_base' % image['id']
        self.addCleanup(self.ceph.remove, name)
        self.addCleanup(test_lazy_first_disk.remove_lazy_leftovers,
                        self.ceph, image['id'], len(data), PORT)
        self.addCleanup(self.proxy.heal)
        self.proxy.hold(HOLD)
        self.proxy.rate = RATE

        disk = self.create_root_disk(image['id'], size_gb=DISK_GB)
        self.assertIn('lazy base', ' '.join(disk['timings']))
        self.assertIn('%s_base.' % image['id'], disk['parent'])
        self.assertTrue(disk['parent'].endswith('.imaged-part/snap'),
                        disk['parent'])
        # The download is held: its base is not copied, let alone published.
        self.assertFalse(self.published(image['id']))

        run, seen = self.boot(disk['name'], image['id'])
        self.assertTrue(seen['bios'], 'the guest\'s BIOS never booted')
        self.assertFalse(seen['published at release'])
        self.assertEqual([], bootdisk.missing_reports(
            run.reports(), DISK_GB * units.Gi), 'the guest did not report')

        base.wait_for(lambda: self.published(image['id']), PUBLISH_TIMEOUT,
                      what='the lazy base to be published')
        self.assertEqual(1, self.glance.downloads(image['id']))
        pool, parent, _snap = self.ceph.parent(disk['name'])
        self.assertEqual((self.ceph.pool, name), (pool, parent))
        self.assertEqual(hashlib.sha256(data).hexdigest(), hashlib.sha256(
            self.ceph.read(name, 0, len(data))).hexdigest())
        # The disk: the guest's markers, and the image's bytes elsewhere.
        inside = bootdisk.MARKER_OFFSETS[0]
        got = bytearray(self.ceph.read(disk['name'], 0, len(data)))
        self.assertEqual(bootdisk.GUEST_MARKER, got[inside:inside + 512])
        got[inside:inside + 512] = data[inside:inside + 512]
        self.assertEqual(hashlib.sha256(data).hexdigest(),
                         hashlib.sha256(got).hexdigest())
        for offset in bootdisk.MARKER_OFFSETS[1:]:
            self.assertEqual(bootdisk.GUEST_MARKER,
                             self.ceph.read(disk['name'], offset, 512))

    def test_a_disk_read_across_the_publish_reads_the_image(self):
        data = self.image_bytes
        image = self.glance.create(data, backend='local')
        self.addCleanup(self.ceph.remove, '%s_base' % image['id'])
        self.addCleanup(test_lazy_first_disk.remove_lazy_leftovers,
                        self.ceph, image['id'], len(data), PORT)
        self.addCleanup(self.proxy.heal)
        self.proxy.hold(HOLD)
        self.proxy.rate = RATE
        disk = self.create_root_disk(image['id'], size_gb=DISK_GB)
        self.assertFalse(self.published(image['id']))
        # Every read reaches librbd's image, as a VM's without a cache.
        self.addCleanup(self.ceph.cluster.conf_set, 'rbd_cache',
                        self.ceph.cluster.conf_get('rbd_cache'))
        self.ceph.cluster.conf_set('rbd_cache', 'false')
        wrong, sweeps = [], 0
        deadline = time.monotonic() + PUBLISH_TIMEOUT
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx, \
                self.ceph.rbd.Image(ioctx, disk['name']) as vm_disk:
            self.proxy.release()
            published = False
            while not published and time.monotonic() < deadline:
                published = self.published(image['id'])  # then once more
                sweeps += 1
                for offset in range(sweeps * 4096 % STRIDE, len(data),
                                    STRIDE):
                    try:
                        got = vm_disk.read(offset, READ)
                    except self.ceph.rbd.Error as e:
                        wrong.append((sweeps, offset, 'error: %s' % e))
                        continue
                    if got != data[offset:offset + READ]:
                        wrong.append((sweeps, offset, 'zeros' if not
                                      got.strip(b'\0') else 'other bytes'))
        self.assertTrue(published, 'the base was not published in %ss' %
                        PUBLISH_TIMEOUT)
        self.assertEqual([], wrong[:10], '%d wrong reads of %d sweeps '
                         '(sweep, offset, what)' % (len(wrong), sweeps))
