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

"""What an operator installs: the systemd unit and the sample config."""

import os
import subprocess
import sys
import tempfile

import testtools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


class PackagingTest(testtools.TestCase):

    def test_systemd_unit_verifies_cleanly(self):
        with open(os.path.join(ROOT, 'etc/systemd/imaged.service')) as f:
            unit = f.read()
        self.assertIn('Type=notify', unit)
        self.assertIn('ProtectSystem=strict', unit)
        # verify insists that ExecStart exists: point it at this install.
        unit = unit.replace('/usr/bin/imaged', os.path.join(BIN, 'imaged'))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'imaged.service')
            with open(path, 'w') as f:
                f.write(unit)
            result = subprocess.run(['systemd-analyze', 'verify', path],
                                    capture_output=True, text=True)
        self.assertEqual((0, ''), (result.returncode,
                                   result.stderr.strip()), result.stderr)

    def test_sample_config_is_generated_and_current(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, 'imaged.conf.sample')
            subprocess.run(
                [os.path.join(BIN, 'oslo-config-generator'), '--config-file',
                 os.path.join(ROOT, 'etc/imaged/imaged-config-generator.conf'),
                 '--output-file', out], check=True, capture_output=True,
                cwd=ROOT)
            with open(out) as f:
                generated = f.read()
        with open(os.path.join(ROOT, 'etc/imaged/imaged.conf.sample')) as f:
            committed = f.read()
        self.assertEqual(generated, committed,
                         'run "tox -e genconfig" and commit the sample')
        for option in ('[rbd]', 'ceph_conf', '[glance]', 'endpoint_override',
                       '[image_cache]', 'base_dir', 'transport_url'):
            self.assertIn(option, generated)
