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

"""Base test case shared by unit tests."""

import subprocess

import fixtures
from oslo_concurrency import processutils
from oslo_config import fixture as config_fixture
import testtools

from imaged import conf as imaged_conf

CONF = imaged_conf.CONF


class _NoProcesses(fixtures.Fixture):
    """Accidental process execution fails loudly; tests mock what they run."""

    def _setUp(self):
        def refuse(*args, **kwargs):
            raise AssertionError('unit test tried to run a process: %s' %
                                 (args,))
        self.useFixture(fixtures.MonkeyPatch(
            'oslo_concurrency.processutils.execute', refuse))
        self.useFixture(fixtures.MonkeyPatch('subprocess.Popen', refuse))


class TestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(60, gentle=True))
        self.tempdir = self.useFixture(fixtures.TempDir()).path
        self.conf = self.useFixture(config_fixture.Config(CONF)).conf
        self.flags(state_path=self.tempdir, host='test-host')
        self.flags(lock_path=self.tempdir + '/lock', group='oslo_concurrency')
        self.flags(endpoint_override='http://glance.test:9292',
                   auth_type='none', group='glance')
        self.useFixture(_NoProcesses())

    def flags(self, group=None, **kw):
        for name, value in kw.items():
            self.conf.set_override(name, value, group)


__all__ = ['TestCase', 'processutils', 'subprocess']
