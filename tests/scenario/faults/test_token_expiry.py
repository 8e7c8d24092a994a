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

"""A caller's token that expires while its call is in flight (issue 8).

Keystone is restarted with 20-second tokens for the test (and with the
stack's own lifetime after it). A call is sent with a fresh demo token to
an agent that is paused (SIGSTOP), so that every Glance request of the call
happens after the token expired; with ``[service_user]`` service tokens the
agent still makes the disk, and an agent without them is refused.

It stops Keystone for a moment: one at a time, holding the fault lock.
"""

import datetime
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import fixtures
from oslo_utils import units
import testtools

from imaged import exception
from imaged import rpcapi
from imaged.tempest_plugin.scenario import base as scenario_base
from tests.functional import base
from tests.functional import keystone_stack

# Shared by scenario tests, exclusive here.
FAULT_LOCK = scenario_base.FAULT_LOCK
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
STACK_SH = os.environ.get('IMAGED_STACK_SH',
                          os.path.join(ROOT, 'tools', 'stack.sh'))
TOKEN_SECONDS = 20


def stack_command(*args, token_seconds=None):
    env = dict(os.environ, IMAGED_STACK_DIR=base.STACK_DIR)
    env.pop('IMAGED_STACK_KEYSTONE_TOKEN_EXPIRATION', None)
    if token_seconds is not None:
        env['IMAGED_STACK_KEYSTONE_TOKEN_EXPIRATION'] = str(token_seconds)
    done = subprocess.run([STACK_SH] + list(args), env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise AssertionError('%s %s failed (exit %s): %s' % (
            STACK_SH, ' '.join(args), done.returncode,
            (done.stdout + done.stderr)[-3000:]))


class TokenExpiryTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(600, gentle=True))
        fd = os.open(FAULT_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        base.configure_client()
        self.api = rpcapi.ImageAgentAPI(base.CONF)
        self.ceph = base.Ceph()
        self.addCleanup(self.ceph.close)
        # Cleanups run last in first out: Keystone gets its lifetime back
        # after the agents are gone.
        self.addCleanup(stack_command, 'start', 'keystone')
        stack_command('start', 'keystone', token_seconds=TOKEN_SECONDS)
        self.images = keystone_stack.Images(self)

    def start_agent(self, **service_user):
        workdir = tempfile.mkdtemp(prefix='imaged-token-')
        self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
        host = 'token-%s' % uuid.uuid4().hex[:8]
        options = {'glance': keystone_stack.glance_options(),
                   'service_user': service_user}
        daemon = base.Daemon(workdir, host, options)
        daemon.start()
        self.addCleanup(daemon.stop)
        base.FunctionalTestCase.wait_until_serving(
            self.api, keystone_stack.user_context(), host, daemon)
        return host, daemon

    def new_instance(self):
        instance_uuid = str(uuid.uuid4())
        self.addCleanup(self.ceph.remove, '%s_disk' % instance_uuid)
        return instance_uuid

    def keystone_says_expired(self, token):
        resp = keystone_stack.session('IMAGED').get(
            base.stack()['OS_AUTH_URL'] + '/auth/tokens',
            headers={'X-Subject-Token': token}, raise_exc=False)
        return resp.status_code == 404

    def test_token_expiring_in_flight_still_gets_its_disk(self):
        data = base.random_raw(4 * units.Mi)
        image = self.images.create(data, store='local')
        host, daemon = self.start_agent()
        refusing_host, _ = self.start_agent(send_service_user_token='false')

        access = keystone_stack.fresh_token('DEMO')
        lifetime = access.expires - access.issued
        self.assertLessEqual(lifetime, datetime.timedelta(
            seconds=TOKEN_SECONDS + 1))
        ctxt = keystone_stack.user_context(access)
        os.killpg(daemon.process.pid, signal.SIGSTOP)
        paused = True
        try:
            result = {}

            def call():
                try:
                    result['disk'] = self.api.create_root_disk(
                        ctxt, host, self.new_instance(), image['id'], 1)
                except Exception as e:
                    result['error'] = e
            caller = threading.Thread(target=call)
            caller.start()
            # The call waits in the agent's queue while the token expires.
            now = datetime.datetime.now(datetime.timezone.utc)
            time.sleep(max(0, (access.expires - now).total_seconds()) + 2)
            self.assertTrue(self.keystone_says_expired(access.auth_token))
            os.killpg(daemon.process.pid, signal.SIGCONT)
            paused = False
            caller.join(300)
        finally:
            if paused:
                os.killpg(daemon.process.pid, signal.SIGCONT)
        self.assertNotIn('error', result)
        disk = result['disk']
        self.assertEqual('download', disk['strategy'])
        self.assertEqual(data, self.ceph.read(disk['name'], 0, len(data)))
        self.assertEqual(1, self.images.downloads(image['id']))

        # The same expired token without a service token is refused.
        self.assertRaises(exception.ImageNotAuthorized,
                          self.api.create_root_disk, ctxt, refusing_host,
                          self.new_instance(), image['id'], 1)
