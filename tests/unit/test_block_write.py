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

"""Blocks of a download written to librbd without a copy, held until their
aio write completes."""

from imaged import exception
from imaged.image import body
from imaged.storage import rbd_import
from tests import base

BLOCK = rbd_import.BLOCK


class _Completion:
    def __init__(self, ret):
        self.ret = ret

    def get_return_value(self):
        return self.ret


class _Image:
    """Completes writes only when the test says so, as librbd may later."""

    def __init__(self):
        self.writes, self.pending = [], []
        self.flushed = False

    def aio_write(self, data, offset, oncomplete):
        self.writes.append((offset, data))
        self.pending.append(oncomplete)

    def complete_all(self, ret=0):
        pending, self.pending = self.pending, []
        for oncomplete in pending:
            oncomplete(_Completion(ret))

    def flush(self):
        self.flushed = True

    def aio_flush(self, oncomplete):
        self.flushed = True
        oncomplete(_Completion(0))


class WriteBlockTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.freed = []

    def block(self, offset, length, fill=b'x'):
        buffer = bytearray(fill * BLOCK)
        return body.Block(buffer, offset, length, self.freed.append)

    def test_a_whole_block_goes_to_librbd_as_it_is(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, 2 * BLOCK, 4, 'd', 'p')
        block = self.block(BLOCK, BLOCK)
        writer.write_block(block)
        self.assertIs(block.buffer, image.writes[0][1])
        self.assertEqual(BLOCK, image.writes[0][0])

    def test_the_buffer_is_held_until_the_write_completes(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, 2 * BLOCK, 4, 'd', 'p')
        block = self.block(0, BLOCK)
        writer.write_block(block)
        block.release()  # the download loop moves on
        self.assertEqual([], self.freed)
        image.complete_all()
        self.assertEqual([block.buffer], self.freed)
        writer.close()
        self.assertTrue(image.flushed)

    def test_a_block_librbd_copied_is_free_again_before_the_write_completes(
            self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, 2 * BLOCK, 4, 'd', 'p',
                                        librbd_copies=True)
        block = self.block(0, BLOCK)
        writer.write_block(block)
        block.release()  # the download loop moves on
        self.assertEqual([block.buffer], self.freed)
        image.complete_all()
        self.assertEqual([block.buffer], self.freed)  # not freed twice
        writer.close()

    def test_writes_in_flight_stay_bounded_when_librbd_copies(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, 4 * BLOCK, 2, 'd', 'p',
                                        timeout=0.01, librbd_copies=True)
        writer.write_block(self.block(0, BLOCK))
        writer.write_block(self.block(BLOCK, BLOCK))
        # A stalled OSD: no write completes, the third waits and gives up.
        self.assertRaises(exception.BackendUnavailable, writer.write_block,
                          self.block(2 * BLOCK, BLOCK))
        self.assertTrue(writer.stalled)
        self.assertEqual(2, len(image.writes))

    def test_the_short_last_block_is_written_to_the_image_end(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, BLOCK + 10, 4, 'd', 'p')
        writer.write_block(self.block(BLOCK, 10))
        self.assertEqual([(BLOCK, b'x' * 10)], image.writes)

    def test_unaligned_blocks_are_gathered_as_pieces(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, 2 * BLOCK, 4, 'd', 'p')
        block = self.block(0, 1 << 20)
        writer.write_block(block)
        self.assertEqual([], image.writes)  # gathered, copied
        writer.write_block(self.block(BLOCK, BLOCK, b'y'))
        self.assertEqual([0, BLOCK], [o for o, _d in image.writes])
        self.assertEqual(b'x' * (1 << 20) + bytes(BLOCK - (1 << 20)),
                         bytes(image.writes[0][1]))

    def test_a_failed_write_releases_its_block_and_fails_the_close(self):
        image = _Image()
        writer = rbd_import.BlockWriter(image, 2 * BLOCK, 4, 'd', 'p')
        block = self.block(0, BLOCK)
        writer.write_block(block)
        block.release()
        image.complete_all(-5)
        self.assertEqual([block.buffer], self.freed)
        self.assertRaises(exception.StorageError, writer.close)

    def test_a_block_past_the_image_end_fails(self):
        writer = rbd_import.BlockWriter(_Image(), BLOCK, 4, 'd', 'p')
        writer.write_block(self.block(BLOCK, BLOCK))
        self.assertRaises(exception.StorageError, writer.close)


class _Configured:
    def __init__(self, options=None, error=None):
        self.options, self.error = options or [], error

    def config_list(self):
        if self.error:
            raise self.error
        return iter(self.options)


class LibrbdCopiesTest(base.TestCase):

    def option(self, value):
        return {'name': 'rbd_disable_zero_copy_writes', 'value': value,
                'source': 0}

    def test_librbd_copies_by_default(self):
        self.assertTrue(rbd_import.librbd_copies_writes(
            _Configured([self.option('true')])))

    def test_zero_copy_writes_keep_the_block_held(self):
        self.assertFalse(rbd_import.librbd_copies_writes(
            _Configured([self.option('false')])))

    def test_an_unknown_answer_keeps_the_block_held(self):
        self.assertFalse(rbd_import.librbd_copies_writes(_Configured([])))
        self.assertFalse(rbd_import.librbd_copies_writes(
            _Configured(error=OSError('no'))))
