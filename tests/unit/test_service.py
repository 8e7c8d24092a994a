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

"""The worker's reload (SIGHUP): in place, never dropped, logged."""

import logging
import os
import signal
import threading
import time

import fixtures
from oslo_config import cfg

from imaged import service
from tests import base


class FakeServer:

    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1


class FakeWrapper:
    """cotyledon's view of the worker: what it calls on SIGHUP."""

    def reload(self):
        raise AssertionError('cotyledon default: the worker restarts')


class FakeManager:

    def __init__(self):
        self.hooks = []

    def register_hooks(self, on_new_worker=None):
        self.hooks.append(on_new_worker)


class FakeLauncher:

    def __init__(self):
        self._manager = FakeManager()


class InPlaceReloadTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.tempdir, 'test.conf')
        self.write(7)
        self.opts = cfg.ConfigOpts()
        self.opts.register_opt(cfg.IntOpt('limit', mutable=True))
        self.opts(['--config-file', self.path])
        self.server = FakeServer()
        self.reload = service.InPlaceReload(self.opts, self.server)
        self.logger = self.useFixture(fixtures.FakeLogger(level='INFO'))
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)

    def write(self, limit, extra=''):
        with open(self.path, 'w') as f:
            f.write('[DEFAULT]\nlimit = %s\n%s' % (limit, extra))

    def test_installs_a_hook_on_the_launchers_workers(self):
        launcher = FakeLauncher()
        self.reload.install(launcher)
        self.assertEqual([self.reload.on_new_worker],
                         launcher._manager.hooks)

    def test_reload_applies_in_place_and_names_what_changed(self):
        self.write(9)
        self.assertEqual([(None, 'limit')], list(self.reload.reload()))
        self.assertEqual(9, self.opts.limit)
        self.assertEqual(1, self.server.resets)
        self.assertIn('Reload (SIGHUP) applied: DEFAULT.limit changed',
                      self.logger.output)

    def test_reload_without_change_says_so(self):
        self.assertEqual({}, self.reload.reload())
        self.assertIn('no mutable option changed', self.logger.output)

    def test_unreadable_file_keeps_the_configuration(self):
        self.write('9', extra='[broken\n')
        self.assertIsNone(self.reload.reload())
        self.assertEqual(7, self.opts.limit)
        self.assertEqual(0, self.server.resets)
        self.assertIn('Reload (SIGHUP) failed', self.logger.output)

    def _worker(self):
        applied = threading.Event()
        real_reload = self.reload.reload

        def reload():
            real_reload()
            applied.set()
        self.reload.reload = reload
        wrapper = FakeWrapper()
        self.reload.on_new_worker('service', 0, wrapper)
        return wrapper, applied

    def test_sighup_in_the_worker_reloads_without_a_restart(self):
        wrapper, applied = self._worker()
        self.write(11)
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertTrue(applied.wait(30))
        self.assertEqual(11, self.opts.limit)
        # What cotyledon calls after the signal asks for a reload too (a
        # SIGHUP that came before the handler was installed).
        applied.clear()
        self.write(12)
        wrapper.reload()
        self.assertTrue(applied.wait(30))
        self.assertEqual(12, self.opts.limit)

    def test_a_request_during_a_reload_reads_the_files_again(self):
        # The race cotyledon loses: a second SIGHUP while the first is
        # being applied. Each request reads the files after it came.
        started, release = threading.Event(), threading.Event()
        real_reload = self.reload.reload
        seen, both = [], threading.Event()

        def slow_reload():
            started.set()
            release.wait(30)
            real_reload()
            seen.append(self.opts.limit)
            if len(seen) == 2:
                both.set()
        self.reload.reload = slow_reload
        self.reload.on_new_worker('service', 0, FakeWrapper())
        self.write(20)
        self.reload.request()
        self.assertTrue(started.wait(30))
        started.clear()
        self.write(21)
        self.reload.request()
        release.set()
        self.assertTrue(started.wait(30))
        self.assertTrue(both.wait(30))
        self.assertEqual(21, seen[-1])


class EarlySighupTest(base.TestCase):

    def setUp(self):
        super().setUp()
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)

    def test_a_sighup_while_starting_is_sent_again_once_launched(self):
        early = service.EarlySighup().hold()
        signal.raise_signal(signal.SIGHUP)  # would end the process
        sent = []
        early.release(kill=sent.append)
        self.assertEqual([signal.SIGHUP], sent)

    def test_nothing_is_sent_without_a_sighup(self):
        sent = []
        service.EarlySighup().hold().release(kill=sent.append)
        self.assertEqual([], sent)


class _HeldStream:
    """A stream whose write holds its own lock (as a file's buffer does)
    until ``go`` is set."""

    def __init__(self):
        self.lock = threading.Lock()
        self.writing = threading.Event()
        self.go = threading.Event()

    def write(self, text):
        with self.lock:
            self.writing.set()
            self.go.wait(30)

    def flush(self):
        with self.lock:
            pass


class LogHandlersAcrossForkTest(base.TestCase):

    def test_a_fork_waits_for_a_log_line_in_another_thread(self):
        stream = _HeldStream()
        handler = logging.StreamHandler(stream)
        logger = logging.getLogger('imaged.test.fork.%s' % id(self))
        logger.propagate = False
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        service.LogHandlersAcrossFork().install()

        writer = threading.Thread(target=logger.warning, args=('parent',))
        writer.start()
        self.assertTrue(stream.writing.wait(10))
        forked = []

        def fork():
            pid = os.fork()
            if pid == 0:  # the child: its first log line, then out
                stream.go.set()
                logger.warning('child')
                os._exit(0)
            forked.append(pid)
        forker = threading.Thread(target=fork)
        forker.start()
        time.sleep(0.3)
        # The fork waits for the line in flight, whatever it takes.
        self.assertEqual([], forked)
        stream.go.set()
        writer.join(10)
        forker.join(10)
        self.assertEqual(1, len(forked))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pid, status = os.waitpid(forked[0], os.WNOHANG)
            if pid:
                self.assertEqual(0, os.waitstatus_to_exitcode(status))
                return
            time.sleep(0.05)
        os.kill(forked[0], signal.SIGKILL)
        os.waitpid(forked[0], 0)
        self.fail('the child hung on a log lock held across the fork')
