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

import hashlib
from unittest import mock

from oslo_utils.imageutils import format_inspector

from imaged import exception
from imaged.image import download
from imaged.image import record as image_record
from tests import base

IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'
MiB = 1 << 20


class RecordingSink:
    def __init__(self):
        self.writes = []
        self.committed = self.aborted = False

    def write(self, offset, data):
        self.writes.append((offset, bytes(data)))

    def commit(self, size):
        self.committed = True

    def abort(self):
        self.aborted = True


def record(data, **kw):
    image = {'id': IMAGE, 'disk_format': 'raw', 'size': len(data),
             'os_hash_algo': 'sha512',
             'os_hash_value': hashlib.sha512(data).hexdigest()}
    image.update(kw)
    return image_record.ImageRecord.from_glance(image, IMAGE)


def pieces(data, size=64 * 1024):
    return iter([data[i:i + size] for i in range(0, len(data), size)])


class StreamTest(base.TestCase):

    def stream(self, data, sinks, **kw):
        max_size = kw.pop('max_virtual_size', None)
        return download.stream(record(data, **kw), pieces(data), sinks,
                               self.conf, max_size)

    def test_blocks_holding_data_reach_every_sink_zeros_never(self):
        data = b'a' * MiB + bytes(2 * MiB) + b'b' * 10
        sinks = [RecordingSink(), RecordingSink()]
        got = self.stream(data, sinks)
        self.assertEqual((len(data), 'raw', len(data)), tuple(got))
        for sink in sinks:
            self.assertEqual([(0, b'a' * MiB), (3 * MiB, b'b' * 10)],
                             sink.writes)
            # Only the caller commits or aborts.
            self.assertEqual((False, False), (sink.committed, sink.aborted))

    def test_inspection_stops_once_the_stream_is_known_raw(self):
        data = b'x' * (16 * MiB)
        real = format_inspector.InspectWrapper._process_chunk
        with mock.patch.object(format_inspector.InspectWrapper,
                               '_process_chunk', autospec=True,
                               side_effect=real) as spy:
            self.stream(data, [RecordingSink()])
        fed = [len(call.args[1]) for call in spy.call_args_list]
        # Only the first block (1 MiB from byte strings) is inspected: in
        # 64 KiB pieces up to VHDX's header (192-256 KiB), the last
        # inspector's region, then the rest of it at once.
        self.assertEqual([64 * 1024] * 4 + [MiB - 256 * 1024], fed)

    def test_hash_mismatch_is_unacceptable(self):
        e = self.assertRaises(exception.ImageUnacceptable, self.stream,
                              b'abc', [], os_hash_value='0' * 128)
        self.assertIn(IMAGE, str(e))

    def test_short_stream_is_a_short_read(self):
        self.assertRaises(download.ShortRead, self.stream, b'abc', [],
                          size=10)

    def test_more_than_glance_size_stops_before_writing_past_it(self):
        sink = RecordingSink()
        self.assertRaises(exception.ImageUnacceptable, self.stream,
                          b'a' * (2 * MiB), [sink], size=MiB)
        self.assertEqual([(0, MiB)],
                         [(off, len(data)) for off, data in sink.writes])

    def test_raw_larger_than_the_disk_stops_early(self):
        sink = RecordingSink()
        self.assertRaises(exception.ImageTooLarge, self.stream,
                          b'a' * (8 * MiB), [sink],
                          max_virtual_size=2 * MiB)
        self.assertLessEqual(len(sink.writes), 2)

    def test_declared_raw_with_a_qcow2_header_is_refused(self):
        self.assertRaises(exception.ImageUnacceptable, self.stream,
                          b'QFI\xfb' + bytes(4096), [])


class AttemptsTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(base.fixtures.MonkeyPatch('time.sleep',
                                                  lambda s: None))

    def test_retriable_errors_are_retried_then_typed(self):
        tries = 0
        with self.assertRaises(exception.ImageDownloadFailed):
            for attempt in download.attempts(IMAGE, 2):
                with attempt:
                    tries += 1
                    raise download.ShortRead('got 1 of 2 bytes')
        self.assertEqual(3, tries)

    def test_other_errors_pass_at_once(self):
        tries = 0
        with self.assertRaises(exception.ImageUnacceptable):
            for attempt in download.attempts(IMAGE, 2):
                with attempt:
                    tries += 1
                    raise exception.ImageUnacceptable(image_id=IMAGE,
                                                      reason='x')
        self.assertEqual(1, tries)

    def test_success_ends_the_loop(self):
        tries = 0
        for attempt in download.attempts(IMAGE, 2):
            with attempt:
                tries += 1
        self.assertEqual(1, tries)
