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

"""The bytes the benchmark uploads to Glance."""

import io
import os
import struct

from tools.bench.sizes import MiB


class ImageData(io.RawIOBase):
    """Image bytes made as they are read: nothing is held but one MiB.

    ``data_mib`` says which MiB hold data (all by default); the others read
    as zeros. Every data MiB is one random MiB stamped with its index, so no
    block is all zeros and no two are alike: skipping zeros cannot cheat.
    """

    # Never an MBR's boot signature at 510 (once in 65,536 random MiBs),
    # which Glance refuses in a raw image (tests.functional.base.random_raw).
    _random = os.urandom(510) + b'\0' + os.urandom(MiB - 511)

    def __init__(self, size, data_mib=None):
        self.size = size
        self.data_mib = data_mib
        self.pos = 0
        self._index, self._mib = None, None

    @classmethod
    def spread(cls, size, data, extents=16):
        """``data`` bytes in ``extents`` even runs across ``size``."""
        extents = min(extents, data // MiB)
        run, step = data // MiB // extents, size // MiB // extents
        return cls(size, {e * step + i for e in range(extents)
                          for i in range(run)})

    def mib(self, index):
        if self.data_mib is not None and index not in self.data_mib:
            return None
        return struct.pack('<Q', index) + self._random[8:]

    def readable(self):
        return True

    def readinto(self, buf):
        index, offset = divmod(self.pos, MiB)
        n = min(len(buf), self.size - self.pos, MiB - offset)
        if n <= 0:
            return 0
        if index != self._index:
            self._index, self._mib = index, self.mib(index)
        buf[:n] = (self._mib[offset:offset + n] if self._mib is not None
                   else bytes(n))
        self.pos += n
        return n

    def write_sparse(self, path):
        with open(path, 'wb') as f:
            for index in range(self.size // MiB):
                block = self.mib(index)
                if block is not None:
                    os.pwrite(f.fileno(), block, index * MiB)
            f.truncate(self.size)


class ImageFile(io.FileIO):
    """A file to upload, opened anew for each attempt."""

    def __init__(self, path):
        super().__init__(path, 'rb')
        self.size = os.path.getsize(path)
