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

"""After the whole suite: the agent's log holds no secret (issue 15), and
no call answered an error its contract does not name (issue 27).

Run last (``tools/scenario-run.sh``), once every scenario and fault test has
called the agent with the tests' tokens: its log, written at debug level,
must name no Keystone token, no password of the tests' user or of the
agent's own users, and no credential-bearing URL.
"""

import configparser
import glob
import os
import re

from tempest import config
import testtools
import yaml

CONF = config.CONF

# What imaged.manager.undeclared logs.
UNDECLARED = 'does not name: please report this bug'
# A Keystone fernet token (what the tests' tokens are on the local stack)
# and a URL with a password in it.
FERNET = re.compile(r'gAAAAA[A-Za-z0-9_=-]{100,}')
URL_CREDENTIAL = re.compile(r'\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@')


def _passwords(*paths):
    """The passwords in these configuration files (those readable)."""
    found = []
    for path in paths:
        parser = configparser.ConfigParser(interpolation=None)
        if path and parser.read(path):
            found += [value for section in parser.sections()
                      for key, value in parser.items(section)
                      if 'password' in key and value]
    return found


def _account_passwords(path):
    """The passwords of Tempest's pre-provisioned users, if it has some."""
    if not path:
        return []
    with open(path) as f:
        return [account['password'] for account in yaml.safe_load(f)]


class AgentLogTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.paths = sorted({path for pattern in CONF.imaged.agent_logs
                             for path in glob.glob(pattern)})
        if not CONF.imaged.agent_logs:
            self.skipTest('[imaged] agent_logs is not set: the agent\'s log '
                          'cannot be read from here')

    def test_no_token_password_or_credential_in_the_agent_log(self):
        self.assertNotEqual([], self.paths, 'no log matches [imaged] '
                            'agent_logs %s' % CONF.imaged.agent_logs)
        # The tests' users', Tempest's own and the agent's users'.
        tempest_conf = os.path.join(os.environ['TEMPEST_CONFIG_DIR'],
                                    os.environ.get('TEMPEST_CONFIG',
                                                   'tempest.conf'))
        secrets = _passwords(tempest_conf,
                             CONF.imaged_fault_injection.daemon_config_file)
        secrets += _account_passwords(CONF.auth.test_accounts_file)
        self.assertNotEqual([], secrets)
        for path in self.paths:
            with open(path, errors='replace') as f:
                for number, line in enumerate(f, 1):
                    where = '%s:%d' % (path, number)
                    self.assertIsNone(FERNET.search(line), where)
                    self.assertIsNone(URL_CREDENTIAL.search(line), where)
                    for secret in secrets:
                        self.assertNotIn(secret, line, where)

    def test_every_error_the_agent_answered_is_in_its_call_s_contract(self):
        self.assertNotEqual([], self.paths)
        for path in self.paths:
            with open(path, errors='replace') as f:
                for number, line in enumerate(f, 1):
                    self.assertNotIn(UNDECLARED, line,
                                     '%s:%d' % (path, number))
