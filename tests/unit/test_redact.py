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

"""What of a location URL reaches a log line."""

from imaged import redact
from tests import base

FSID = '6f1d7c2e-0a4b-4b1e-9d55-3f7d2a1c9e10'


class LocationTest(base.TestCase):

    def test_rbd_keeps_fsid_pool_image_snapshot(self):
        url = 'rbd://%s/images/abc/snap' % FSID
        self.assertEqual(url, redact.location(url))

    def test_rbd_parts_stay_quoted(self):
        url = 'rbd://%s/my%%20pool/abc/snap' % FSID
        self.assertEqual(url, redact.location(url))

    def test_other_schemes_show_the_scheme_only(self):
        for url, shown in (
                ('swift+https://tenant:key@swift.test/v1/c/o',
                 '<swift+https location>'),
                ('swift://user:pw@host/v1/c/o', '<swift location>'),
                ('HTTP://user:pw@host/x', '<http location>'),
                ('file:///var/lib/glance/images/abc', '<file location>'),
                ('cinder://vol-id', '<cinder location>')):
            self.assertEqual(shown, redact.location(url))

    def test_rbd_that_may_hide_a_credential_is_not_shown(self):
        for url in ('rbd://user:secret@%s/images/abc/snap' % FSID,
                    'rbd://secret@%s/images/abc/snap' % FSID,
                    'rbd://%s/pool:key/abc/snap' % FSID,
                    'rbd://%s/images/abc' % FSID,
                    'rbd:%s/images/abc/snap' % FSID,
                    'rbd://not-a-fsid!/images/abc/snap'):
            shown = redact.location(url)
            self.assertEqual('<malformed rbd location>', shown, url)

    def test_not_a_url(self):
        self.assertEqual('<location without a scheme>',
                         redact.location('user:pw@host/path'[5:]))
        self.assertEqual('<location without a scheme>',
                         redact.location('/var/lib/x'))
        self.assertEqual('<NoneType location>', redact.location(None))
        self.assertEqual('<bytes location>', redact.location(b'rbd://x'))
