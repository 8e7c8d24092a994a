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

from imaged.storage import location
from tests import base


class ParseRBDLocationTest(base.TestCase):

    def test_four_parts_are_split_and_unquoted(self):
        loc = location.parse_rbd_location('rbd://fs%2Did/images/img%20x/snap')
        self.assertEqual(('fs-id', 'images', 'img x', 'snap'), tuple(loc))

    def test_round_trip_with_format(self):
        url = location.format_rbd_location('f', 'p', 'i/x', 's')
        self.assertEqual(('f', 'p', 'i/x', 's'),
                         tuple(location.parse_rbd_location(url)))

    def test_refusals_name_the_reason(self):
        for url, reason in [
                ('file:///var/lib/glance/images/x', 'not an rbd://'),
                ('http://example/x', 'not an rbd://'),
                (None, 'not an rbd://'),
                ('rbd://fsid/images/img', 'has 3 parts'),
                ('rbd://fsid/images/img/snap/extra', 'has 5 parts'),
                ('rbd://fsid//img/snap', 'empty part'),
                ('rbd://fsid/images/img/', 'empty part')]:
            e = self.assertRaises(location.NotAnRBDLocation,
                                  location.parse_rbd_location, url)
            self.assertIn(reason, str(e), url)
