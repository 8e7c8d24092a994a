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

"""Every Python file says its license (issue 27): Apache 2.0, as LICENSE."""

import os

from tests import base

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HEADER = '# Licensed under the Apache License, Version 2.0 (the "License")'


def python_files():
    for top in ('imaged', 'tests', 'tools'):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != '__pycache__']
            for name in files:
                if name.endswith('.py'):
                    yield os.path.join(folder, name)


class LicenseTest(base.TestCase):

    def test_every_python_file_has_the_apache_header(self):
        missing = []
        for path in python_files():
            with open(path, encoding='utf-8') as f:
                head = f.read(1000)
            if HEADER not in head:
                missing.append(os.path.relpath(path, ROOT))
        self.assertEqual([], missing)

    def test_the_license_file_is_apache_2(self):
        with open(os.path.join(ROOT, 'LICENSE')) as f:
            self.assertIn('Apache License', f.read(300))
