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

"""imaged-client covers every RPC method the agent serves (issue 27)."""

import inspect

from imaged.cmd import client
from imaged import manager
from tests import base


def served_methods():
    """The manager's methods callable over RPC (oslo.messaging's
    ``@expose`` marks them ``exposed``)."""
    return {name for name, member in inspect.getmembers(
        manager.ImageAgentManager, inspect.isfunction)
        if hasattr(member, 'exposed')}


class FakeAPI:
    """Records which ImageAgentAPI method each command calls."""

    def __init__(self):
        self.called = []

    def __getattr__(self, name):
        def call(ctxt, host, *args):
            self.called.append((name, host, args))
            return {}
        return call


class ClientCommandsTest(base.TestCase):

    def test_every_rpc_method_has_a_command(self):
        self.assertTrue(served_methods())
        self.assertEqual(served_methods(), set(client.COMMANDS.values()))

    def test_every_command_calls_the_method_it_is_named_for(self):
        parser = client._parser()
        argv = {'create-root-disk': ['i', 'm', '1'],
                'delete-root-disk': ['i'], 'flatten-root-disk': ['i'],
                'snapshot-root-disk': ['i', 'm'], 'list-cached': [],
                'capabilities': []}
        for command, args in argv.items():
            api = FakeAPI()
            client.run(api, None, parser.parse_args(
                ['--host', 'h1', command] + args))
            [(method, host, _args)] = api.called
            self.assertEqual((client.COMMANDS[command], 'h1'),
                             (method, host))
        self.assertEqual(set(argv) | {'precache'}, set(client.COMMANDS))
