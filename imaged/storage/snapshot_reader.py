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

"""A file-like, read-only view of an RBD snapshot: what a snapshot with
strategy ``upload`` sends to Glance (:mod:`imaged.storage.snapshots`)."""

import io
from typing import Any, Callable

READ_SIZE = 4 * 1024 * 1024


class SnapshotReader(io.RawIOBase):
    """Reads an RBD snapshot front to back, 4 MiB from librbd at a time."""

    def __init__(self, conn: Any, name: str, snap: str,
                 progress: Callable[[int, int], Any] | None = None) -> None:
        super().__init__()
        self.conn, self.name, self.snap = conn, name, snap
        self.progress = progress
        self._lease: Any = None
        self._ioctx: Any = None
        self._image: Any = None
        self._buffer: bytes | memoryview = b''
        self._offset, self._pos = 0, 0

    def __enter__(self):
        conn = self.conn
        self._lease = conn.acquire()
        self._ioctx = conn.open_ioctx(self._lease.cluster, conn.pool)
        with conn.typed_errors(self.name):
            self._image = conn.rbd.Image(self._ioctx, self.name,
                                         snapshot=self.snap, read_only=True)
            self.size = self._image.size()
        return self, self.size

    def __exit__(self, *exc):
        try:
            if self._image is not None:
                self._image.close()
            if self._ioctx is not None:
                self._ioctx.close()
        finally:
            self.conn.release(self._lease, exc[1])
        return False

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if self._pos == len(self._buffer) and self._offset < self.size:
            length = min(READ_SIZE, self.size - self._offset)
            with self.conn.typed_errors(self.name):
                self._buffer = memoryview(
                    self._image.read(self._offset, length))
            self._pos = 0
            self._offset += length
            if self.progress is not None:
                self.progress(self._offset, self.size)
        end = len(self._buffer) if n is None or n < 0 else \
            min(self._pos + n, len(self._buffer))
        chunk = bytes(self._buffer[self._pos:end])
        self._pos = end
        return chunk
