from unittest import mock

from oslo_concurrency import processutils

from imaged import exception
from imaged.image import format as image_format
from tests import base
from tests.unit import images


class CheckImageTest(images.ImageFilesMixin, base.TestCase):

    def check(self, name, disk_format):
        wrapper = image_format.inspect_stream(
            images.chunks_of(self.images[name]))
        for _chunk in wrapper:
            pass
        wrapper.close()
        return image_format.check_image('img-1', wrapper, disk_format,
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
