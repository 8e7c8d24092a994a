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

"""Format inspection whatever the blocks a download arrives in.

Every format oslo.utils' inspectors know, made by its own tools, goes
through the real download path -- :class:`imaged.image.body.ImageBody`'s
reusable buffers over a fake Glance answer, into
:func:`imaged.image.download.stream` -- in ImageBody's 4 MiB blocks and in
odd ones. Fed whole 4 MiB blocks, the inspectors never found a VHDX made
by ``qemu-img convert -O vhdx``'s virtual size, and refused it.
"""

import hashlib
import tempfile
from unittest import mock

from imaged import exception
from imaged.image import body
from imaged.image import download
from imaged.image import format as image_format
from imaged.image import record as image_record
from tests import base
from tests.unit import fakes
from tests.unit import images

MiB = 1 << 20
BLOCK_SIZES = (4 * MiB, MiB + 7, 65537, 513)

# image -> (Glance's disk_format, what the inspectors detect, qemu-img -f)
GOOD = {
    'qcow2': ('qcow2', 'qcow2', 'qcow2'),
    'vmdk-sparse': ('vmdk', 'vmdk', 'vmdk'),
    'vmdk-stream': ('vmdk', 'vmdk', 'vmdk'),
    'vhd': ('vhd', 'vhd', 'vpc'),
    'vhdx': ('vhdx', 'vhdx', 'vhdx'),
    'vdi': ('vdi', 'vdi', 'vdi'),
    # The GPT inspector reads an MBR too; both are raw disks.
    'raw-mbr': ('raw', 'gpt', 'raw'),
    'raw-gpt': ('raw', 'gpt', 'raw'),
    'iso': ('iso', 'iso', 'raw'),
}


class BlockSink:
    """Records what it is given: whole blocks only."""

    def __init__(self):
        self.blocks = []

    def write(self, offset, data):
        raise AssertionError('a sink with write_block got a piece')

    def write_block(self, block):
        self.blocks.append((block.offset, bytes(block.data)))

    def commit(self, size):
        pass

    def abort(self):
        pass


class InspectInBlocksTest(base.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._dir = tempfile.TemporaryDirectory()
        cls.images = images.make_format_images(cls._dir.name)
        cls.data, cls.virtual_sizes = {}, {}
        for name, path in cls.images.items():
            with open(path, 'rb') as f:
                cls.data[name] = f.read()
            if name in GOOD:
                cls.virtual_sizes[name] = images.virtual_size(
                    path, GOOD[name][2])

    @classmethod
    def tearDownClass(cls):
        cls._dir.cleanup()
        super().tearDownClass()

    def download(self, name, disk_format, block_size):
        """``download.stream`` over ImageBody's blocks of ``block_size``:
        ``(Downloaded, the inspector check_image was given, sink)``."""
        data = self.data[name]
        image = image_record.ImageRecord(
            id='img-1', disk_format=disk_format, size=len(data),
            os_hash_algo='sha512',
            os_hash_value=hashlib.sha512(data).hexdigest())
        response = fakes.FakeResponse([memoryview(data)])
        blocks = body.ImageBody('img-1', response, self.conf,
                                size=len(data), block_size=block_size)
        sink = BlockSink()
        with mock.patch.object(image_format, 'check_image',
                               wraps=image_format.check_image) as check:
            with blocks:
                got = download.stream(image, blocks, [sink], self.conf)
        return got, check.call_args.args[1], sink

    def assertAccepted(self, name, block_size):
        disk_format, detected, _qemu = GOOD[name]
        got, inspected, sink = self.download(name, disk_format, block_size)
        data = self.data[name]
        self.assertEqual(detected, str(inspected.format))
        self.assertEqual((len(data), disk_format, self.virtual_sizes[name]),
                         tuple(got))
        # The sink got whole blocks, and all the data.
        written = bytearray(len(data))
        for offset, block in sink.blocks:
            self.assertEqual(0, offset % block_size)
            self.assertEqual(min(block_size, len(data) - offset),
                             len(block))
            written[offset:offset + len(block)] = block
        self.assertEqual(data, written)

    def assertRefused(self, name, disk_format, block_size, reason):
        e = self.assertRaises(exception.ImageUnacceptable, self.download,
                              name, disk_format, block_size)
        self.assertIn(reason, str(e))

    def test_qcow2_with_a_backing_file_is_refused_in_any_blocks(self):
        for block_size in BLOCK_SIZES:
            self.assertRefused('qcow2-backing', 'qcow2', block_size,
                               'backing_file')

    def test_formats_declared_raw_are_refused_in_any_blocks(self):
        # Never a raw verdict before every inspector had its bytes: an
        # ISO's signature is at 32 KiB, VHDX's size past 3 MiB.
        for block_size in BLOCK_SIZES:
            for name in ('iso', 'vhdx', 'qcow2'):
                self.assertRefused(name, 'raw', block_size,
                                   'content is %s, but Glance declares raw'
                                   % name)

    def test_qcow2_declared_vhdx_is_refused_in_any_blocks(self):
        for block_size in BLOCK_SIZES:
            self.assertRefused('qcow2', 'vhdx', block_size,
                               'content is qcow2, but Glance declares vhdx')


def _accepted(name, block_size):
    def test(self):
        self.assertAccepted(name, block_size)
    test.__name__ = 'test_%s_in_%d_byte_blocks_is_accepted' % (
        name.replace('-', '_'), block_size)
    return test


for _name in GOOD:
    for _size in BLOCK_SIZES:
        _test = _accepted(_name, _size)
        setattr(InspectInBlocksTest, _test.__name__, _test)
del _name, _size, _test
