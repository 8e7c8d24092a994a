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

"""Fault tests: the deployment is disturbed on purpose, then checked.

They need ``[imaged_fault_injection] enabled = true`` in tempest.conf: they
stop and start RabbitMQ, Glance and the Ceph OSDs with the configured
commands (always starting again in a cleanup, even when the test fails),
restart the agent under test, write into Glance's file store and start
agents of their own (:class:`Agent`) that they kill at will. One at a time:
they hold the fault lock exclusively, and are meant to run with
``--concurrency 1``. A class whose tests disturb nothing another test
relies on (agents, images and Glance proxies of its own; no service
stopped, no agent under test restarted, no pool-wide cleanup) says
``exclusive = False``: it holds the lock shared, as the scenarios do, and
tools/scenario-run.sh runs it beside them (tests/scenario/faults/split.py).
"""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import fixtures
import oslo_messaging as messaging
from testtools import content
from testtools import matchers

from imaged import exception
from imaged.tempest_plugin.scenario import base
from tests import glance_proxy


class Agent:
    """An imaged process of the test's own, next to the agent under test.

    It reads the agent under test's configuration, then its own file:
    same RabbitMQ, Ceph and Glance, its own host name, state and log.
    """

    def __init__(self, conf, workdir, options=None, host=None):
        self.conf = conf
        self.workdir = workdir
        self.host = host or 'fault-%s' % uuid.uuid4().hex[:8]
        self.state_path = os.path.join(workdir, 'state')
        self.base_dir = os.path.join(self.state_path, '_base')
        self.log_file = os.path.join(workdir, 'imaged.log')
        self.config_file = os.path.join(workdir, 'fault.conf')
        self.process = None
        sections = {
            'DEFAULT': {'host': self.host, 'state_path': self.state_path,
                        'log_file': self.log_file, 'debug': 'true',
                        'graceful_shutdown_timeout': '60'},
            'image_cache': {'base_dir': self.base_dir},
            'oslo_concurrency': {'lock_path': os.path.join(self.state_path,
                                                           'lock')},
            'glance': {'num_retries': '1', 'timeout': '10',
                       'progress_interval': '1'},
            'rbd': {'connect_timeout': '5'},
        }
        for group, values in (options or {}).items():
            sections.setdefault(group, {}).update(values)
        with open(self.config_file, 'w') as f:
            for group, values in sections.items():
                f.write('[%s]\n' % group)
                for key, value in values.items():
                    f.write('%s = %s\n' % (key, value))

    @property
    def tmp_dir(self):
        return os.path.join(self.base_dir, '.tmp')

    def start(self):
        fi = self.conf.imaged_fault_injection
        command = [fi.imaged_command]
        if fi.daemon_config_file:
            command += ['--config-file', fi.daemon_config_file]
        command += ['--config-file', self.config_file]
        with open(os.path.join(self.workdir, 'stderr.log'), 'ab') as err:
            # Its own session: kill() reaches the worker it forks too.
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True)
        return self

    def wait_until_serving(self, api, ctxt, timeout=90):
        # Calls sent before the agent's queue exists are lost: ask often,
        # with a short timeout.
        fast = api.client.prepare(server=self.host, timeout=1)

        def answers():
            if self.process.poll() is not None:
                raise AssertionError('imaged %s exited with %s:\n%s' % (
                    self.host, self.process.returncode, self.log()[-3000:]))
            try:
                return fast.call(ctxt, 'get_capabilities')
            except messaging.MessagingTimeout:
                return None
        return base.wait_for(answers, timeout, interval=0.1,
                             what='imaged %s to answer' % self.host)

    def pids(self):
        """Every process of the agent (the parent and its worker)."""
        pids = set()
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                with open('/proc/%s/stat' % entry) as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if fields[0] != 'Z' and int(fields[2]) == self.process.pid:
                pids.add(int(entry))
        return pids

    def kill(self):
        """SIGKILL to every process of the agent, as a crash would."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        # The worker is not our child: make sure it is gone too.
        base.wait_for(lambda: not self.pids(), 30, interval=0.1,
                      what='the processes of %s to die' % self.host)

    def terminate(self):
        """SIGTERM to the main process, as ``systemctl stop`` sends."""
        self.process.send_signal(signal.SIGTERM)

    def log(self):
        try:
            with open(self.log_file, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def tmp_files(self):
        with contextlib.suppress(FileNotFoundError):
            return sorted(os.listdir(self.tmp_dir))
        return []

    def base_files(self):
        with contextlib.suppress(FileNotFoundError):
            return sorted(n for n in os.listdir(self.base_dir)
                          if n != '.tmp')
        return []


class FaultTestCase(base.ScenarioTestCase):

    exclusive = True  # unless a class says it disturbs nothing shared

    def setUp(self):
        fi = self.conf.imaged_fault_injection
        if not fi.enabled:
            self.skipTest(
                'fault injection is disabled ([imaged_fault_injection] '
                'enabled is false in tempest.conf): these tests stop '
                'RabbitMQ, Glance and Ceph OSDs and restart the agent, so '
                'they only run against a disposable deployment such as the '
                'local stack')
        super().setUp()

    # -- the deployment's services --------------------------------------------

    def run_command(self, option):
        command = getattr(self.conf.imaged_fault_injection, option)
        if not command:
            self.fail('[imaged_fault_injection] %s is not set in '
                      'tempest.conf' % option)
        started = time.monotonic()
        done = subprocess.run(
            command, shell=True, capture_output=True, text=True,
            timeout=self.conf.imaged_fault_injection.command_timeout)
        self.addDetail('%s-%.0f' % (option, started), content.text_content(
            '$ %s\n(exit %s after %.1fs)\n%s%s' % (
                command, done.returncode, time.monotonic() - started,
                done.stdout, done.stderr)))
        if done.returncode:
            self.fail('%s failed (exit %s): %s' % (
                command, done.returncode, done.stderr[-2000:]))

    @contextlib.contextmanager
    def stopped(self, service):
        """``service`` (glance, rabbitmq, ceph_osd, daemon) is stopped in
        the block, and started again after it even if the test fails."""
        started = []

        def start():
            if not started:
                started.append(True)
                self.run_command('%s_start_command' % service)
        self.addCleanup(start)
        self.run_command('%s_stop_command' % service)
        try:
            yield
        finally:
            start()

    def restart(self, service):
        """Stop ``service``, then start it again (even if stopping failed)."""
        with self.stopped(service):
            pass

    # -- agents of the test's own ---------------------------------------------

    def workdir(self):
        path = self.useFixture(fixtures.TempDir()).path
        os.chmod(path, 0o755)
        return path

    def start_agent(self, options=None, workdir=None, host=None):
        """A new agent, killed (and its log attached) after the test."""
        agent = Agent(self.conf, workdir or self.workdir(), options, host)
        self.addCleanup(self.stop_agent, agent)
        agent.start()
        agent.wait_until_serving(self.api, self.ctxt)
        return agent

    def stop_agent(self, agent):
        agent.kill()  # quicker than a graceful stop, and nothing to keep
        self.addDetail('imaged-%s.log' % agent.host,
                       content.text_content(agent.log()[-20000:]))

    def restart_agent(self, agent):
        agent.start()
        agent.wait_until_serving(self.api, self.ctxt)

    def glance_proxy(self):
        proxy = glance_proxy.GlanceProxy(self.glance.endpoint)
        self.addCleanup(proxy.close)
        return proxy

    def create_on(self, agent, image_id, size_gb=1, instance_uuid=None,
                  timeout=None):
        """create_root_disk on ``agent``; the disk is removed after."""
        if instance_uuid is None:
            instance_uuid = str(uuid.uuid4())
            self.addCleanup(self.remove_disk, instance_uuid, agent.host)
        if timeout is None:
            return self.api.create_root_disk(self.ctxt, agent.host,
                                             instance_uuid, image_id,
                                             size_gb)
        return self.api.client.prepare(
            server=agent.host, timeout=timeout,
            call_monitor_timeout=5).call(
                self.ctxt, 'create_root_disk', instance_uuid=instance_uuid,
                image_id=image_id, size_gb=size_gb)

    def in_background(self, func, *args, **kwargs):
        """Run ``func`` in a thread; returns a dict that gets its
        ``result`` or ``error``, and ``done`` (an Event)."""
        outcome = {'done': threading.Event()}

        def run():
            try:
                outcome['result'] = func(*args, **kwargs)
            except BaseException as e:
                outcome['error'] = e
            finally:
                outcome['done'].set()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 120)
        return outcome

    # -- checks ---------------------------------------------------------------

    def assertCleanCache(self, agent, image_id, complete=None):
        """No temporary file; a base file only if it is the whole image."""
        self.assertEqual([], agent.tmp_files())
        if complete is None:
            self.assertNotIn(image_id, agent.base_files())
        elif image_id in agent.base_files():
            with open(os.path.join(agent.base_dir, image_id), 'rb') as f:
                self.assertEqual(base.sha256(complete), base.sha256(f.read()))

    def assertNothingInPool(self, *words):
        self.assertEqual([], self.ceph.names_with(*words))

    def assertRefusedInTime(self, errors, seconds, func, *args, **kwargs):
        started = time.monotonic()
        e = self.assertRaises(errors, func, *args, **kwargs)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, seconds,
                        '%s came after %.0fs' % (type(e).__name__, elapsed))
        return e


def corrupt_file(path, offset, length):
    """Overwrite bytes in place (same size, different content)."""
    with open(path, 'r+b') as f:
        f.seek(offset)
        original = f.read(length)
        f.seek(offset)
        f.write(bytes(b ^ 0xff for b in original))
        f.flush()
        os.fsync(f.fileno())
    return original


def restore_file(path, offset, original):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(original)


# -- shared pools: planted leftovers, Ceph stalls, outcomes of calls ----------

def ceph_osd_pids(ceph_conf):
    """Pids of the OSDs of the cluster ``ceph_conf`` running on this machine.

    The stall tests pause (SIGSTOP) or kill (SIGKILL) them, which no start
    or stop command can do: they need the OSDs on the machine the tests run
    on, as on the local stack.
    """
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if argv[0].endswith(b'/ceph-osd') and \
                ceph_conf.encode() in argv and b'--mkfs' not in argv:
            pids.append(int(entry))
    return sorted(pids)


def outcome(call):
    """What a call of :meth:`FaultTestCase.in_background` came to:
    ``'ok'``, ``'typed <Class>'`` or ``'UNTYPED <repr>'``."""
    if 'error' not in call:
        return 'ok'
    error = call['error']
    if isinstance(error, exception.ImagedException):
        return 'typed %s' % type(error).__name__
    return 'UNTYPED %r' % (error,)


class CapabilitiesPoller:
    """Calls get_capabilities on a host in a loop, keeping every outcome.

    Each call may take ``timeout`` seconds; a MessagingTimeout is kept as
    the untyped outcome it is (the agent did not answer in time).
    """

    def __init__(self, api, ctxt, host, timeout=30, interval=1):
        self.outcomes = []  # (seconds since start, outcome, problems)
        self._client = api.client.prepare(server=host, timeout=timeout)
        self._ctxt = ctxt
        self._interval = interval
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            call = {}
            try:
                caps = self._client.call(self._ctxt, 'get_capabilities')
            except Exception as e:
                call['error'] = e
                problems = None
            else:
                problems = caps['problems']
            self.outcomes.append((round(time.monotonic() - self._started, 1),
                                  outcome(call), problems))
            self._stop.wait(self._interval)

    def stop(self):
        self._stop.set()
        self._thread.join(120)


class PoolFaultTestCase(FaultTestCase):
    """Fault tests that plant leftovers in the pool and stall Ceph."""

    # -- images in the pool, made and changed by hand -------------------------

    @contextlib.contextmanager
    def rbd_image(self, name, **kwargs):
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            with self.ceph.rbd.Image(ioctx, name, **kwargs) as image:
                yield image

    def plant_image(self, name, data, size=None, snapshot=None,
                    protect=False, metadata=None):
        """Image ``name`` holding ``data`` (removed after the test), as a
        crash or another tool could leave it in the pool."""
        self.addCleanup(self.remove_eventually, name)
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            self.ceph.rbd.RBD().create(ioctx, name, size or len(data),
                                       old_format=False)
        with self.rbd_image(name) as image:
            image.write(data, 0)
            for key, value in (metadata or {}).items():
                image.metadata_set(key, value)
            if snapshot:
                image.create_snap(snapshot)
                if protect:
                    image.protect_snap(snapshot)

    def metadata(self, name):
        with self.rbd_image(name, read_only=True) as image:
            return dict(image.metadata_list())

    def snapshots(self, name):
        """``{snapshot: protected}`` of image ``name``."""
        with self.rbd_image(name, read_only=True) as image:
            return {snap['name']: image.is_protected_snap(snap['name'])
                    for snap in image.list_snaps()}

    def unprotect_snapshot(self, name, snapshot):
        with self.rbd_image(name) as image:
            image.unprotect_snap(snapshot)

    def remove_snapshot(self, name, snapshot):
        with self.rbd_image(name) as image:
            if image.is_protected_snap(snapshot):
                image.unprotect_snap(snapshot)
            image.remove_snap(snapshot)

    def remove_metadata(self, name, keys=None):
        """Remove ``keys`` (default: every key) from the image's metadata."""
        with self.rbd_image(name) as image:
            for key in list(keys or dict(image.metadata_list())):
                image.metadata_remove(key)

    def set_metadata(self, name, values):
        with self.rbd_image(name) as image:
            for key, value in values.items():
                image.metadata_set(key, value)

    def remove_eventually(self, *words, timeout=60):
        """Remove every image whose name holds one of ``words``; a killed
        agent's watch on one keeps it busy for up to ~30 s."""
        def gone():
            return all([self.ceph.remove(name)
                        for name in self.ceph.names_with(*words)])
        with contextlib.suppress(AssertionError):
            base.wait_for(gone, timeout, interval=2,
                          what='%s to be removable' % ', '.join(words))
        self.assertNothingInPool(*words)

    def partial_images(self, *words):
        return [n for n in self.ceph.names_with(*words)
                if n.endswith(base.PARTIAL_SUFFIX)]

    def wait_no_partial_images(self, *words, timeout=150):
        """Partial images go by themselves: each agent sweeps its own.

        A removal that failed is tried again every 30 s (the agent's own
        sweep), and a dead writer's watch keeps it from going for ~30 s:
        on Debian 13 (Reef) the partials of downloads cut by an OSD
        outage went after 90 s (once), here they go within ~60 s.
        """
        base.wait_for(lambda: not self.partial_images(*words), timeout,
                      interval=1, what='the partial images of %s to be '
                      'removed' % ', '.join(words))

    # -- the OSDs, paused or killed -------------------------------------------

    def _osd_pids(self):
        pids = ceph_osd_pids(self.conf.imaged_ceph.ceph_conf)
        if not pids:
            self.fail('no ceph-osd of %s runs on this machine: the stall '
                      'tests signal the OSDs themselves' %
                      self.conf.imaged_ceph.ceph_conf)
        return pids

    def ceph_cli(self, *args, parse=True):
        """The ``ceph`` command as the tests' Ceph user; its JSON output
        (its text with ``parse=False``: some commands print no JSON)."""
        command = ['ceph', '-c', self.conf.imaged_ceph.ceph_conf,
                   '--connect-timeout', '20']
        if self.conf.imaged_ceph.user:
            command += ['--id', self.conf.imaged_ceph.user]
        if self.conf.imaged_ceph.keyring:
            command += ['--keyring', self.conf.imaged_ceph.keyring]
        done = subprocess.run(command + list(args) + ['-f', 'json'],
                              capture_output=True, text=True, timeout=60)
        if done.returncode:
            self.fail('%s failed: %s' % (' '.join(args), done.stderr))
        if not parse:
            return done.stdout
        return json.loads(done.stdout or 'null')

    def unstick_laggy_pgs(self, patience=20):
        """After a SIGSTOP, a lone OSD's PGs may stay ``laggy`` (their read
        lease expired; nobody renews it) and delay every op for ever. An
        operator marks the OSD down so it re-peers; so do we, for the next
        user of the shared stack, if they do not clear by themselves."""
        def laggy():
            return (self.ceph_cli('pg', 'ls', 'laggy') or {}).get(
                'pg_stats')
        with contextlib.suppress(AssertionError):
            base.wait_for(lambda: not laggy(), patience, interval=2,
                          what='laggy PGs to clear')
            return
        stuck = laggy()
        self.addDetail('laggy-pgs', content.text_content(repr(
            [pg.get('pgid') for pg in stuck or []])))
        for osd in self.ceph_cli('osd', 'ls'):
            self.ceph_cli('osd', 'down', str(osd), parse=False)
        base.wait_for(lambda: not laggy(), 60, interval=2,
                      what='laggy PGs to clear after re-peering')

    def wait_ceph_serves(self, agent, patience=120):
        """After an outage: every PG active and clean, and ``agent``
        seeing no problem (its health check asks an OSD, with its own short
        timeout). The tests' own Ceph calls wait up to two minutes, so one
        answering proves little: a re-peered OSD boots again for a while.
        """
        def pgs_clean():
            summary = (self.ceph_cli('pg', 'stat') or {}).get(
                'pg_summary', {})
            states = {s['name'] for s in summary.get('num_pg_by_state', [])}
            return states == {'active+clean'}
        base.wait_for(pgs_clean, patience, interval=1,
                      what='every PG to be active+clean')
        problems = []

        def agent_sees_it():
            problems[:] = self.api.get_capabilities(
                self.ctxt, agent.host)['problems']
            return not problems
        try:
            base.wait_for(agent_sees_it, patience, interval=1,
                          what='agent %s to see Ceph serve' % agent.host)
        except AssertionError as e:
            raise AssertionError('%s; its problems: %s' % (e, problems))

    def repeer_osds(self):
        """Mark the OSDs down so they re-peer at once: after a SIGSTOP a
        lone OSD's PGs may turn ``laggy`` only some seconds later and then
        delay every op for ever, the test's own cleanup included."""
        for osd in self.ceph_cli('osd', 'ls'):
            self.ceph_cli('osd', 'down', str(osd), parse=False)
        self.unstick_laggy_pgs()

    @contextlib.contextmanager
    def osd_paused(self, longest=120):
        """The OSDs are stopped with SIGSTOP in the block, and continued
        after it even if the test fails, or after ``longest`` seconds by a
        watchdog process even if this process dies (the stack is shared)."""
        pids = self._osd_pids()
        watchdog = subprocess.Popen(
            ['sh', '-c', 'sleep %d; kill -CONT %s' % (
                longest, ' '.join(map(str, pids)))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        resumed = []

        def resume():
            if resumed:
                return
            resumed.append(True)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(watchdog.pid, signal.SIGKILL)
            watchdog.wait(10)
        self.addCleanup(resume)
        started = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield pids
        finally:
            resume()
            self.repeer_osds()
            self.addDetail('osd-paused-%.0f' % started, content.text_content(
                'ceph-osd %s stopped for %.1fs' % (
                    pids, time.monotonic() - started)))

    @contextlib.contextmanager
    def osd_killed(self):
        """The OSDs are killed (SIGKILL) in the block and started again with
        ``ceph_osd_start_command`` after it, even if the test fails."""
        pids = self._osd_pids()
        started = []

        def start():
            if not started:
                started.append(True)
                self.run_command('ceph_osd_start_command')
        self.addCleanup(start)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        base.wait_for(
            lambda: not ceph_osd_pids(self.conf.imaged_ceph.ceph_conf), 30,
            interval=0.1, what='ceph-osd %s to die' % pids)
        try:
            yield pids
        finally:
            start()

    # -- calls and their outcomes ---------------------------------------------

    def create_in_background(self, agent, image_id, timeout=180):
        """create_root_disk on ``agent`` in a thread: the call of
        :meth:`in_background`, with its ``instance_uuid``."""
        instance_uuid = self.new_instance(agent.host)
        call = self.in_background(self.create_on, agent, image_id,
                                  instance_uuid=instance_uuid,
                                  timeout=timeout)
        call['instance_uuid'] = instance_uuid
        return call

    def assertTyped(self, calls):
        """Every call ended, with a result or an imaged.exception error."""
        outcomes = [outcome(call) for call in calls]
        self.addDetail('outcomes', content.text_content('\n'.join(outcomes)))
        # Not fatal: what the test checks next is worth knowing too.
        self.expectThat([o for o in outcomes if o.startswith('UNTYPED')],
                        matchers.Equals([]))
        return outcomes

    def assertStopsWithin(self, agent, seconds):
        """SIGTERM stops every process of ``agent`` within ``seconds``."""
        started = time.monotonic()
        agent.terminate()
        try:
            returncode = agent.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.fail('imaged %s still runs %ds after SIGTERM' % (
                agent.host, seconds))
        base.wait_for(lambda: not agent.pids(), 10, interval=0.1,
                      what='the worker of %s to exit' % agent.host)
        self.addDetail('exit-%s' % agent.host, content.text_content(
            'exited with %s %.1fs after SIGTERM' % (
                returncode, time.monotonic() - started)))
