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

import subprocess
from unittest import mock

from oslo_concurrency import processutils

from imaged import exception
from imaged.image import format as image_format
from imaged.storage import connection
from tests import base
from tests.unit import images


class CheckImageTest(images.ImageFilesMixin, base.TestCase):

    def check(self, name, disk_format):
        inspector = image_format.StreamInspector()
        for chunk in images.chunks_of(self.images[name]):
            inspector.feed(chunk)
        inspector.close()
        return image_format.check_image('img-1', inspector, disk_format,
                                        self.conf)

    def assertRefused(self, name, disk_format, reason):
        e = self.assertRaises(exception.ImageUnacceptable, self.check, name,
                              disk_format)
        self.assertIn('img-1', str(e))
        self.assertIn(reason, str(e))

    def test_raw_passes(self):
        self.assertEqual('raw', self.check('raw', 'raw').format)

    def test_qcow2_passes_with_its_virtual_size(self):
        checked = self.check('qcow2', 'qcow2')
        self.assertEqual(('qcow2', 10 * 1024 * 1024), tuple(checked))

    def test_vmdk_stream_optimized_passes(self):
        self.assertEqual('vmdk', self.check('vmdk-stream', 'vmdk').format)

    def test_vhd_passes(self):
        self.assertEqual('vhd', self.check('vhd', 'vhd').format)

    def test_qcow2_backing_file_is_refused(self):
        self.assertRefused('qcow2-backing', 'qcow2', 'backing_file')

    def test_qcow2_external_data_file_is_refused(self):
        self.assertRefused('qcow2-data-file', 'qcow2', 'data_file')

    def test_vmdk_descriptor_naming_host_file_is_refused(self):
        self.assertRefused('vmdk-flat', 'vmdk', 'Unsupported subformat')

    def test_vmdk_type_outside_allow_list_is_refused(self):
        self.flags(vmdk_allowed_types=['monolithicSparse'],
                   group='image_cache')
        self.assertRefused('vmdk-stream', 'vmdk',
                           'VMDK type streamoptimized')

    def test_qcow2_declared_raw_is_refused(self):
        self.assertRefused('qcow2', 'raw',
                           'content is qcow2, but Glance declares raw')

    def test_raw_declared_qcow2_is_refused(self):
        self.assertRefused('raw', 'qcow2',
                           'content is raw, but Glance declares qcow2')

    def test_disk_format_not_allowed_is_refused(self):
        self.flags(allowed_disk_formats=['raw'], group='image_cache')
        self.assertRefused('qcow2', 'qcow2', 'disk_format qcow2 is not')

    def test_unknown_disk_format_is_refused(self):
        self.flags(allowed_disk_formats=['ploop'], group='image_cache')
        self.assertRefused('raw', 'ploop', 'disk_format ploop is not')


class ConvertToRawTest(base.TestCase):

    def test_runs_qemu_img_with_explicit_format_and_limits(self):
        with mock.patch.object(processutils, 'execute') as execute:
            image_format.convert_to_raw('img-1', '/src', '/dst', 'vhd',
                                        self.conf)
        args, kwargs = execute.call_args
        self.assertEqual(('qemu-img', 'convert', '-f', 'vpc', '-O', 'raw',
                          '/src', '/dst'), args)
        self.assertEqual(1024 * 1024 * 1024,
                         kwargs['prlimit'].address_space)
        self.assertEqual(3600, kwargs['prlimit'].cpu_time)

    def test_failure_is_image_unacceptable(self):
        error = processutils.ProcessExecutionError(stderr='boom')
        with mock.patch.object(processutils, 'execute', side_effect=error):
            e = self.assertRaises(exception.ImageUnacceptable,
                                  image_format.convert_to_raw, 'img-1',
                                  '/src', '/dst', 'qcow2', self.conf)
        self.assertIn('boom', str(e))


class QemuImgLimitsTest(base.TestCase):

    def test_every_run_has_a_wall_clock_limit(self):
        self.flags(convert_timeout=77, group='image_cache')
        with mock.patch.object(processutils, 'execute') as execute:
            image_format.convert_to_raw('img-1', '/src', '/dst', 'qcow2',
                                        self.conf)
        self.assertEqual(77, execute.call_args.kwargs['timeout'])

    def test_a_run_past_its_time_is_killed_and_refused(self):
        process = mock.Mock()

        def hang(*args, on_execute, **kwargs):
            on_execute(process)
            raise subprocess.TimeoutExpired(args, kwargs['timeout'])
        with mock.patch.object(processutils, 'execute', side_effect=hang):
            e = self.assertRaises(exception.ImageUnacceptable,
                                  image_format.convert_to_raw, 'img-1',
                                  '/src', '/dst', 'qcow2', self.conf)
        process.kill.assert_called_once_with()
        process.communicate.assert_called_once_with()
        self.assertIn('img-1', str(e))
        self.assertIn('convert_timeout', str(e))


class ConvertIntoRBDTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(user='imaged', ceph_conf='/etc/ceph/ceph.conf',
                   keyring='/etc/ceph/x:y.keyring', connect_timeout=7,
                   group='rbd')

    def convert(self, error=None):
        with mock.patch.object(processutils, 'execute',
                               side_effect=error) as execute:
            # The target's rbd: name as storage makes it for qemu-img.
            target = connection.CephConnection(
                self.conf, None, None).qemu_image('vms', 'img-1_base.part')
            image_format.convert_into_rbd('img-1', '/src', 'qcow2', target,
                                          self.conf)
        return execute.call_args

    def test_writes_only_data_into_the_existing_image(self):
        args, kwargs = self.convert()
        self.assertEqual(
            ('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', '-n',
             '--target-is-zero', '-t', 'none', '-W', '-m', '16', '/src'),
            args[:-1])
        self.assertEqual(
            r'rbd:vms/img-1_base.part:id=imaged'
            r':conf=\/etc\/ceph\/ceph.conf'
            r':keyring=\/etc\/ceph\/x\:y.keyring'
            r':client_mount_timeout=7:rados_mon_op_timeout=7'
            r':rados_osd_op_timeout=7', args[-1])
        self.assertEqual(3600, kwargs['prlimit'].cpu_time)
        # Room for librbd's threads beside the usual limit.
        self.assertEqual((1024 + 2048) * 1024 * 1024,
                         kwargs['prlimit'].address_space)
        self.assertEqual(1800, kwargs['timeout'])

    def test_no_keyring_option_without_a_keyring(self):
        self.flags(keyring=None, group='rbd')
        args, _kwargs = self.convert()
        self.assertNotIn('keyring', args[-1])

    def test_a_failed_write_is_a_storage_error(self):
        error = processutils.ProcessExecutionError(
            stderr='qemu-img: error while writing at byte 0: Input/output '
                   'error')
        e = self.assertRaises(exception.StorageError, self.convert, error)
        self.assertIn('img-1_base.part', str(e))
        self.assertIn('vms', str(e))

    def test_an_unreadable_image_is_unacceptable(self):
        error = processutils.ProcessExecutionError(
            stderr="qemu-img: Could not open '/src': Image is not in qcow2 "
                   "format")
        e = self.assertRaises(exception.ImageUnacceptable, self.convert,
                              error)
        self.assertIn('img-1', str(e))


class ConvertFromRBDTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(user='imaged', ceph_conf='/etc/ceph/ceph.conf',
                   keyring=None, connect_timeout=7, group='rbd')

    def convert(self, error=None):
        with mock.patch.object(processutils, 'execute',
                               side_effect=error) as execute:
            source = connection.CephConnection(
                self.conf, None, None).qemu_image(
                    'vms', 'inst_disk', 'imaged-snapshot-img-1')
            image_format.convert_from_rbd(
                'img-1', source, '/cache/.tmp/img-1.qcow2.x', 'qcow2',
                self.conf)
        return execute.call_args

    def test_reads_the_snapshot_into_a_qcow2_file(self):
        args, _kwargs = self.convert()
        self.assertEqual(
            ('qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', '-t', 'none',
             '-m', '16'), args[:-2])
        self.assertEqual('/cache/.tmp/img-1.qcow2.x', args[-1])
        self.assertTrue(args[-2].startswith(
            'rbd:vms/inst_disk@imaged-snapshot-img-1:id=imaged:'), args[-2])

    def test_no_room_is_cache_full_and_a_failed_read_a_storage_error(self):
        full = processutils.ProcessExecutionError(
            stderr='qemu-img: error while writing: No space left on device')
        e = self.assertRaises(exception.CacheFull, self.convert, full)
        self.assertIn('/cache/.tmp', str(e))
        unreadable = processutils.ProcessExecutionError(
            stderr="qemu-img: Could not open 'rbd:vms/inst_disk@x': "
                   "No such file")
        e = self.assertRaises(exception.StorageError, self.convert,
                              unreadable)
        self.assertIn('inst_disk', str(e))
