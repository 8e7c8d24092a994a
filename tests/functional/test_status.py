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

"""``imaged-status upgrade check`` against the real stack."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

from oslo_utils import units
import testtools

from tests.functional import base

IMAGED_STATUS = os.path.join(os.path.dirname(sys.executable),
                             'imaged-status')


class UpgradeCheckTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.workdir = tempfile.mkdtemp(prefix='imaged-status-')
        self.addCleanup(shutil.rmtree, self.workdir, ignore_errors=True)

    def check(self, options=None):
        # The configuration an agent of the stack runs with.
        daemon = base.Daemon(self.workdir, 'status-check', options)
        done = subprocess.run(
            [IMAGED_STATUS, '--config-file', daemon.config_file, 'upgrade',
             'check', '--json'], capture_output=True, text=True, timeout=300)
        results = json.loads(done.stdout)
        return done.returncode, {c['check']: (c['result'], c['details'])
                                 for c in results['checks']}

    def test_the_stack_passes(self):
        # A root disk that records no project, as one made before imaged
        # recorded owners (sorted first among the disks other tests and
        # agents of other versions left in the shared pool).
        name = '00000000-0000-4000-8000-%s_disk' % uuid.uuid4().hex[:12]
        ceph = base.Ceph()
        self.addCleanup(ceph.close)
        with ceph.cluster.open_ioctx(ceph.pool) as ioctx:
            ceph.rbd.RBD().create(ioctx, name, units.Mi)
        self.addCleanup(ceph.remove, name)
        code, results = self.check()
        for check in ('Glance API', 'Keystone roles', 'Cache directory',
                      'RPC version cap', 'Tokenless calls'):
            self.assertEqual(0, results[check][0], results[check])
        owners, details = results['Root disk owners']
        self.assertEqual(1, owners, details)
        self.assertIn('record no project', details)
        self.assertIn(name, details)
        # The stack's Ceph keeps require_min_compat_client at luminous, a
        # documented warning (clone v1 works); a mimic cluster passes.
        ceph_code, details = results['Ceph clones']
        self.assertIn(ceph_code, (0, 1), details)
        self.assertEqual(1, code)

    def test_tokenless_calls_acting_as_imaged_are_a_warning(self):
        code, results = self.check(
            {'callers': {'tokenless_calls_act_as_imaged': 'true'}})
        self.assertEqual(1, results['Tokenless calls'][0])
        self.assertIn('tokenless_calls_act_as_imaged is on',
                      results['Tokenless calls'][1])

    def test_glance_unreachable_fails_with_exit_code_2(self):
        code, results = self.check(
            {'glance': {'endpoint_override': 'http://127.0.0.1:9/'}})
        self.assertEqual(2, code)
        self.assertEqual(2, results['Glance API'][0])
        self.assertIn('unreachable', results['Glance API'][1])

    def test_rpc_cap_above_the_server_fails(self):
        code, results = self.check({'upgrade_levels': {'imaged': '9.0'}})
        self.assertEqual(2, code)
        self.assertEqual(2, results['RPC version cap'][0])
