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

"""Glance's image record, typed once where it is read."""

from imaged.image import record as image_record
from tests import base

IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'


class ImageRecordTest(base.TestCase):

    def test_fields_glance_sends(self):
        rec = image_record.ImageRecord.from_glance(
            {'id': IMAGE, 'status': 'active', 'disk_format': 'qcow2',
             'container_format': 'bare', 'size': 10, 'virtual_size': 20,
             'checksum': 'c', 'os_hash_algo': 'sha512', 'os_hash_value': 'h',
             'direct_url': 'rbd://f/p/i/snap', 'stores': 'file,ceph',
             'os_glance_importing_to_stores': 'x',
             'os_glance_failed_import': '', 'self': '/v2/images/x'}, IMAGE)
        self.assertEqual((IMAGE, 'active', 'qcow2', 'bare', 10, 20),
                         (rec.id, rec.status, rec.disk_format,
                          rec.container_format, rec.size, rec.virtual_size))
        self.assertEqual(frozenset({'file', 'ceph'}), rec.stores)
        self.assertEqual(frozenset({'x'}), rec.importing_to_stores)
        self.assertEqual(frozenset(), rec.failed_import_stores)
        self.assertEqual(['rbd://f/p/i/snap'], rec.shown_urls())

    def test_wrong_types_and_missing_fields_read_as_unknown(self):
        rec = image_record.ImageRecord.from_glance(
            {'status': 7, 'disk_format': ['raw'], 'size': '10',
             'virtual_size': -1, 'checksum': None, 'direct_url': '',
             'locations': 'junk', 'stores': 5}, IMAGE)
        self.assertEqual(image_record.ImageRecord(id=IMAGE), rec)
        self.assertEqual([], rec.shown_urls())

    def test_a_bool_is_no_size(self):
        rec = image_record.ImageRecord.from_glance({'size': True}, IMAGE)
        self.assertIsNone(rec.size)

    def test_the_record_cannot_be_changed(self):
        rec = image_record.ImageRecord(id=IMAGE, size=1)
        self.assertRaises(AttributeError, setattr, rec, 'size', 2)


class CacheBoundTest(base.TestCase):

    def record(self, **fields):
        return image_record.ImageRecord.from_glance(
            dict({'status': 'active', 'disk_format': 'qcow2',
                  'container_format': 'bare'}, **fields), IMAGE)

    def test_a_kept_file_is_bounded_by_what_the_image_expands_to(self):
        from imaged import exception
        self.flags(max_size_gb=1, group='image_cache')
        small_but_large = self.record(size=1 << 20, virtual_size=2 << 30)
        e = self.assertRaises(exception.ImageUnacceptable,
                              image_record.check, small_but_large, 4 << 30,
                              self.conf, True)
        self.assertIn('expands to %d bytes' % (2 << 30), str(e))
        # In Ceph only (no local file kept), the bound does not apply.
        image_record.check(small_but_large, 4 << 30, self.conf, False)
        image_record.check(self.record(size=1 << 20, virtual_size=1 << 29),
                           4 << 30, self.conf, True)
