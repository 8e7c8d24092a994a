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

"""Image files for the scenarios: honest ones and hostile ones.

Built with ``qemu-img`` on the machine the tests run on. The hostile ones
name a *marker file*: a file of this machine whose bytes must never show up
in a root disk (on the local stack the agent runs here too, so it could
read it if it followed the reference).
"""

import os
import random
import subprocess
import tempfile

from oslo_utils import units

MARKER_SIZE = 8 * units.Mi


def random_bytes(size, seed=None):
    """``size`` bytes that compress to nothing and are never all zeros."""
    return random.Random(seed).randbytes(size)


def _qemu_img(*args):
    subprocess.run(('qemu-img',) + args, check=True, capture_output=True)


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def qcow2_holding(data, virtual_size=8 * units.Mi, compressed=False):
    """A qcow2 image whose guest-visible first bytes are ``data``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, qcow2 = os.path.join(tmp, 'raw'), os.path.join(tmp, 'qcow2')
        with open(raw, 'wb') as f:
            f.write(data)
            f.truncate(virtual_size)
        _qemu_img('convert', '-f', 'raw', '-O', 'qcow2',
                  *(('-c',) if compressed else ()), raw, qcow2)
        return _read(qcow2)


def empty_qcow2(virtual_size):
    """A few hundred KiB of qcow2 that claims ``virtual_size`` bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'empty.qcow2')
        _qemu_img('create', '-f', 'qcow2', path, str(virtual_size))
        return _read(path)


class MarkerFile:
    """A world-readable host file holding a known marker, and its leaks."""

    def __init__(self, directory, marker):
        self.marker = marker.encode()
        self.directory = directory
        os.chmod(directory, 0o755)
        self.path = os.path.join(directory, 'marker.raw')
        self.write(self.path)

    def write(self, path):
        with open(path, 'wb') as f:
            f.write(self.marker)
            f.truncate(MARKER_SIZE)
        os.chmod(path, 0o644)

    def qcow2_with_backing_file(self):
        """A qcow2 whose unwritten clusters read the marker file."""
        path = os.path.join(self.directory, 'backing.qcow2')
        _qemu_img('create', '-f', 'qcow2', '-b', self.path, '-F', 'raw',
                  path, str(MARKER_SIZE))
        return _read(path)

    def qcow2_with_data_file(self):
        """A qcow2 whose data lives in an external file: the marker file."""
        path = os.path.join(self.directory, 'data-file.qcow2')
        data_file = os.path.join(self.directory, 'data-file.raw')
        _qemu_img('create', '-f', 'qcow2', '-o',
                  'data_file=%s,data_file_raw=on' % data_file, path,
                  str(MARKER_SIZE))
        self.write(data_file)  # qemu-img made it empty: now it leaks
        return _read(path)

    def vmdk_descriptor(self):
        """A monolithicFlat VMDK descriptor whose extent is the marker."""
        path = os.path.join(self.directory, 'flat.vmdk')
        _qemu_img('create', '-f', 'vmdk', '-o', 'subformat=monolithicFlat',
                  path, str(MARKER_SIZE))
        text = _read(path).decode()
        text = text.replace('"flat-flat.vmdk"', '"%s"' % self.path)
        assert self.path in text, text
        return text.encode()

    def sparse_vmdk_naming_host_file(self):
        """A monolithicSparse VMDK whose embedded descriptor adds an extent
        that is the marker file (binary header, so it looks like a VMDK)."""
        path = os.path.join(self.directory, 'sparse.vmdk')
        _qemu_img('create', '-f', 'vmdk', '-o', 'subformat=monolithicSparse',
                  path, str(MARKER_SIZE))
        data = bytearray(_read(path))
        start = data.index(b'# Disk DescriptorFile')
        end = data.index(b'\0', start)
        sectors = MARKER_SIZE // 512
        text = data[start:end].decode().replace(
            'RW %d SPARSE "sparse.vmdk"' % sectors,
            'RW %d SPARSE "sparse.vmdk"\nRW %d FLAT "%s" 0' % (
                sectors, sectors, self.path))
        assert self.path in text, text
        encoded = text.encode()
        # The descriptor area of a qemu-made VMDK is 20 sectors: ours fits.
        assert len(encoded) < 20 * 512, len(encoded)
        data[start:start + 20 * 512] = encoded.ljust(20 * 512, b'\0')
        return bytes(data)
