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

"""Native crashes leave the Python stacks of every thread, and the parent
logs them (issue 24)."""

import os
import signal
import types

import fixtures

from imaged import crashes
from tests import base


class CrashesTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.log_file = os.path.join(self.tempdir, 'imaged.log')
        self.conf = types.SimpleNamespace(log_file=self.log_file,
                                          log_dir=None)
        self.logs = self.useFixture(fixtures.FakeLogger(name='imaged'))

    def crash_child(self, sig):
        """A forked process that arms, then dies of ``sig``: its pid."""
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test runner
            try:
                crashes.arm(self.conf, 'worker')
                os.kill(os.getpid(), sig)
            finally:
                os._exit(3)
        _pid, status = os.waitpid(pid, 0)
        self.assertTrue(os.WIFSIGNALED(status))
        self.assertEqual(sig, os.WTERMSIG(status))
        return pid

    def test_a_worker_killed_by_sigsegv_leaves_its_stacks(self):
        pid = self.crash_child(signal.SIGSEGV)
        path = '%s.fault.%d' % (self.log_file, pid)
        with open(path) as f:
            text = f.read()
        self.assertIn('imaged worker pid %d' % pid, text)
        self.assertIn('Fatal Python error: Segmentation fault', text)
        self.assertIn('in crash_child', text)  # the Python call in flight
        crashed = crashes.report_dead(self.conf)
        self.assertEqual([pid], list(crashed))
        self.assertIn('imaged process %d died of a native crash' % pid,
                      self.logs.output)
        self.assertIn('in crash_child', self.logs.output)
        self.assertFalse(os.path.exists(path))

    def test_sigabrt_too(self):
        pid = self.crash_child(signal.SIGABRT)
        crashed = crashes.report_dead(self.conf)
        self.assertIn('Fatal Python error: Aborted', crashed[pid])

    def test_a_clean_end_leaves_nothing_to_report(self):
        pid = os.fork()
        if pid == 0:
            try:
                crashes.arm(self.conf, 'worker')
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        path = '%s.fault.%d' % (self.log_file, pid)
        self.assertTrue(os.path.exists(path))
        self.assertEqual({}, crashes.report_dead(self.conf))
        self.assertFalse(os.path.exists(path))
        self.assertNotIn('native crash', self.logs.output)

    def test_a_live_process_file_is_left_alone(self):
        self.addCleanup(crashes.disarm)
        path = crashes.arm(self.conf, 'parent')
        self.assertEqual('%s.fault.%d' % (self.log_file, os.getpid()), path)
        self.assertEqual({}, crashes.report_dead(self.conf))
        self.assertTrue(os.path.exists(path))
        crashes.disarm()
        self.assertFalse(os.path.exists(path))

    def test_without_a_log_file_stacks_go_to_stderr(self):
        self.addCleanup(crashes.disarm)
        conf = types.SimpleNamespace(log_file=None, log_dir=None)
        self.assertIsNone(crashes.arm(conf, 'parent'))
        self.assertEqual({}, crashes.report_dead(conf))

    def test_log_dir_and_a_relative_log_file(self):
        conf = types.SimpleNamespace(log_file='imaged.log',
                                     log_dir=self.tempdir)
        self.assertEqual(self.log_file + '.fault.',
                         crashes.fault_file_prefix(conf))
