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

"""The daemon under test, reached only over RPC and /proc."""

import contextlib
import os
import shutil
import threading
import time

from imaged import rpcapi
from tests.functional import base
from tools.bench.machine import alive
from tools.bench.machine import children
from tools.bench.machine import proc_status_bytes
from tools.bench.machine import reset_peak_rss


class WorkerDied(Exception):
    pass


class Agent:
    """The imaged daemon being measured, reached only over RPC and /proc."""

    def __init__(self, workdir, run_id, extra_options=None):
        self.host = 'bench-%s' % run_id
        options = {'DEFAULT': {'debug': 'false'},
                   'glance': {'num_retries': '3'}}
        options.update(extra_options or {})
        stack = base.stack()
        if 'BARBICAN_URL' in stack:
            # Signed images: verified when a call gives trusted certificates
            # (section signatures), with the caller's token.
            options.update(
                key_manager={'backend': 'barbican'},
                barbican={'barbican_endpoint': stack['BARBICAN_URL'],
                          'auth_endpoint': stack['OS_AUTH_URL']})
        self.daemon = base.Daemon(workdir, self.host, options)
        self.daemon.core_dumps = True  # a crash under load leaves its core
        self.api = rpcapi.ImageAgentAPI(base.CONF)

    @property
    def ctxt(self):
        """The caller's context: the stack's demo user's current token."""
        return base.user_context()

    def start(self):
        self.daemon.start()
        base.FunctionalTestCase.wait_until_serving(
            self.api, self.ctxt, self.host, self.daemon)

    def worker(self):
        kids = children(self.daemon.process.pid)
        return kids[0] if len(kids) == 1 else None

    def call(self, what, func):
        """``func()``, an RPC call; fails at once if the worker dies.

        Without this a crashed worker costs a whole call timeout.
        """
        worker, box = self.worker(), {}

        def run():
            try:
                box['result'] = func()
            except Exception as e:
                box['error'] = e
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
            if thread.is_alive() and worker and not alive(worker):
                raise WorkerDied("imaged's worker process %d died during "
                                 "%s%s" % (worker, what,
                                           self._death_note(worker)))
        if 'error' in box:
            raise box['error']
        return box['result']

    def _death_note(self, pid):
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for line in self.daemon.log().splitlines()[::-1]:
                if 'Child %d ' % pid in line:
                    return ' (%s)' % line.split(' [-] ', 1)[-1]
            time.sleep(0.2)
        return ''

    def create(self, instance_uuid, image_id, size_gb, trusted_certs=None):
        """``(seconds, result, memory)`` of one create_root_disk call."""
        parent, worker = self.daemon.process.pid, self.worker()
        for pid in (parent, worker):
            if pid:
                reset_peak_rss(pid)
        idle = {'worker_idle': worker and proc_status_bytes(worker, 'VmRSS'),
                'parent_idle': proc_status_bytes(parent, 'VmRSS')}
        started = time.monotonic()
        result = self.call('create_root_disk', lambda: (
            self.api.create_root_disk(self.ctxt, self.host, instance_uuid,
                                      image_id, size_gb,
                                      trusted_certs=trusted_certs)))
        seconds = time.monotonic() - started
        if result['strategy'] == 'existing':
            raise RuntimeError('imaged returned the existing disk %s: the '
                               'sample measured nothing' % result['name'])
        memory = None
        if worker and worker == self.worker():
            memory = dict(idle,
                          worker_peak=proc_status_bytes(worker, 'VmHWM'),
                          parent_peak=proc_status_bytes(parent, 'VmHWM'))
        return seconds, result, memory

    def delete(self, instance_uuid):
        self.call('delete_root_disk', lambda: self.api.delete_root_disk(
            self.ctxt, self.host, instance_uuid))

    def capabilities(self, timeout):
        return self.api.client.prepare(server=self.host, timeout=timeout) \
            .call(self.ctxt, 'get_capabilities')

    def forget(self, image_id):
        """Drop what the daemon keeps on disk about an image (its cache)."""
        for top, dirs, files in os.walk(self.daemon.state_path):
            for name in files + dirs:
                path = os.path.join(top, name)
                if image_id not in name:
                    continue
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
