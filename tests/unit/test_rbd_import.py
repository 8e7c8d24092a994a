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

import os

from imaged import exception
from imaged.storage import rbd_import
from tests import base


class DataChunksTest(base.TestCase):

    def _file(self, size, pieces):
        path = os.path.join(self.tempdir, 'f')
        with open(path, 'wb') as f:
            f.truncate(size)
            for offset, data in pieces:
                f.seek(offset)
                f.write(data)
        return path

    def _chunks(self, path):
        fd = os.open(path, os.O_RDONLY)
        try:
            return list(rbd_import.data_chunks(fd, os.path.getsize(path),
                                               chunk_size=4096))
        finally:
            os.close(fd)

    def test_holes_and_zero_chunks_are_skipped(self):
        path = self._file(10 * 4096, [(4096 + 10, b'abc'),
                                      (3 * 4096, bytes(4096)),
                                      (9 * 4096 + 5, b'z')])
        chunks = self._chunks(path)
        self.assertEqual([4096, 9 * 4096], [off for off, _d in chunks])
        self.assertEqual(b'abc', chunks[0][1][10:13])

    def test_unaligned_tail_is_written(self):
        path = self._file(4096 + 100, [(4096 + 99, b'x')])
        [(offset, data)] = self._chunks(path)
        self.assertEqual((4096, 100), (offset, len(data)))

    def test_empty_sparse_file_has_no_chunks(self):
        self.assertEqual([], self._chunks(self._file(1 << 20, [])))


class _Completion:
    def __init__(self, ret):
        self.ret = ret

    def get_return_value(self):
        return self.ret


class _Image:
    def __init__(self, fail_at=None, stall=False):
        self.writes = []
        self.fail_at = fail_at
        self.stall = stall  # completions never come, as with a stopped OSD
        self.flushed = False

    def aio_write(self, data, offset, oncomplete):
        self.writes.append((offset, data))
        if not self.stall:
            oncomplete(_Completion(getattr(self, 'errno', -5)
                                   if offset == self.fail_at else 0))

    def aio_flush(self, oncomplete):
        if not self.stall:
            self.flushed = True
            oncomplete(_Completion(0))


class BlockWriterTest(base.TestCase):
    BLOCK = rbd_import.BLOCK

    def test_pieces_are_gathered_into_aligned_blocks(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, 3 * self.BLOCK, 4, 'd', 'p')
        for offset in range(0, 2 * self.BLOCK, 65536):
            writer.write(offset, b'a' * 65536)
        writer.write(2 * self.BLOCK + 7, b'tail')
        writer.close()
        self.assertEqual([0, self.BLOCK, 2 * self.BLOCK],
                         [offset for offset, _d in image.writes])
        self.assertEqual(b'a' * self.BLOCK, image.writes[1][1])
        self.assertEqual(b'\0' * 7 + b'tail', image.writes[2][1][:11])
        self.assertTrue(image.flushed)

    def test_blocks_without_data_are_not_written(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, 100 * self.BLOCK, 2, 'd', 'p')
        writer.write(50 * self.BLOCK + 1, b'x')
        writer.close()
        self.assertEqual([50 * self.BLOCK], [o for o, _d in image.writes])

    def test_last_block_is_cut_at_the_image_size(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, self.BLOCK + 10, 2, 'd', 'p')
        writer.write(self.BLOCK, b'0123456789')
        writer.close()
        self.assertEqual(10, len(image.writes[0][1]))

    def test_failed_write_is_a_storage_error(self):
        image = _Image(fail_at=0)
        writer = rbd_import.BlockWriter(image, 2 * self.BLOCK, 2, 'd', 'p')
        writer.write(0, b'x')
        writer.write(self.BLOCK, b'y')
        e = self.assertRaises(exception.StorageError, writer.close)
        self.assertIn('d in pool p', str(e))

    def test_write_past_the_end_fails(self):
        writer = rbd_import.BlockWriter(_Image(), self.BLOCK, 2, 'd', 'p')
        writer.write(self.BLOCK, b'x')
        self.assertRaises(exception.StorageError, writer.close)


class StalledWritesTest(base.TestCase):
    BLOCK = rbd_import.BLOCK

    def test_writes_that_never_complete_are_backend_unavailable(self):
        image = _Image(stall=True)
        writer = rbd_import.BlockWriter(image, 8 * self.BLOCK, 2, 'd', 'p',
                                        timeout=0.2)
        e = self.assertRaises(
            exception.BackendUnavailable, self._write_all, writer, 8)
        self.assertIn('did not complete', str(e))
        self.assertTrue(writer.stalled)
        self.assertEqual(2, len(image.writes))  # the slots, no more
        self.assertRaises(exception.BackendUnavailable, writer.drain)

    def test_a_flush_that_never_completes_is_backend_unavailable(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, self.BLOCK, 2, 'd', 'p',
                                        timeout=0.2)
        writer.write(0, b'x')
        image.stall = True
        self.assertRaises(exception.BackendUnavailable, writer.close)
        self.assertTrue(writer.stalled)

    def _write_all(self, writer, blocks):
        for i in range(blocks):
            writer.write(i * self.BLOCK, b'x' * self.BLOCK)
        writer.close()


class TimedOutWritesTest(base.TestCase):

    def test_a_write_that_timed_out_is_backend_unavailable(self):
        image = _Image(fail_at=0)
        image.errno = -110
        writer = rbd_import.BlockWriter(image, rbd_import.BLOCK, 2, 'd', 'p')
        writer.write(0, b'x')
        self.assertRaises(exception.BackendUnavailable, writer.close)
