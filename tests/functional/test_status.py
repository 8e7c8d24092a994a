"""``imaged-status upgrade check`` against the real stack."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

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
        code, results = self.check()
        for name in ('Glance API', 'Keystone roles', 'Cache directory',
                     'RPC version cap'):
            self.assertEqual(0, results[name][0], results[name])
        # The stack's Ceph keeps require_min_compat_client at luminous, a
        # documented warning (clone v1 works); a mimic cluster passes.
        ceph, details = results['Ceph clones']
        self.assertIn(ceph, (0, 1), details)
        self.assertEqual(ceph, code)

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
