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

"""The oslo.service Service that owns the RPC server and periodic work,
and the reload (SIGHUP) of its worker."""

import logging as py_logging
import os
import signal
import threading

from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_service import service

from imaged import rpc

LOG = logging.getLogger(__name__)


class ImagedService(service.Service):
    """Serves the ``imaged`` topic as server ``host``."""

    def __init__(self, conf, manager):
        super().__init__()
        self.conf = conf
        self.manager = manager
        self.rpcserver = None

    def start(self):
        super().start()
        self.manager.init_host()
        target = messaging.Target(topic=rpc.TOPIC, server=self.manager.host)
        self.rpcserver = rpc.get_server(self.conf, target, [self.manager])
        long_calls = self.manager.long_calls
        threads = rpc.executor_threads(self.conf, long_calls.capacity)
        self.rpcserver.start(override_pool_size=threads)
        # One schedule for every cleanup (imaged.leftovers): right away,
        # then as often as it asks.
        self.tg.add_dynamic_timer_args(self.manager.housekeeping,
                                       initial_delay=None,
                                       periodic_interval_max=60,
                                       stop_on_exception=False)
        if self.conf.metrics.enabled:
            self.manager.metrics.serve(self.conf.metrics.host,
                                       self.conf.metrics.port)
        LOG.info('imaged serving topic %s as %s: %d executor threads, at '
                 'most %d long calls running and %d waiting', rpc.TOPIC,
                 self.manager.host, threads, long_calls.max_running,
                 long_calls.max_queued)

    def reset(self):
        # Called after a reload: every mutable option is read where it is
        # used, so the new values apply from the next call on.
        pass

    def stop(self, graceful=True):
        # Stop taking new calls, answer the long calls still queued (their
        # callers can go elsewhere), then let the ones in flight finish; the
        # launcher bounds the wait with graceful_shutdown_timeout.
        if self.rpcserver is not None:
            LOG.info('Stopping: no new calls; waiting for calls in flight')
            self.rpcserver.stop()
            self.manager.long_calls.close()
            self.rpcserver.wait()
            self.rpcserver = None
        # Background flattens stop (their disks stay good clones).
        self.manager.flattens.close()
        super().stop(graceful=graceful)
        self.manager.metrics.stop()
        # The pool's cleanup role goes to another host now, not when its
        # lease runs out.
        self.manager.storage.release_cleanup_role()
        rpc.cleanup()
        LOG.info('imaged stopped')


class InPlaceReload:
    """SIGHUP in the worker: re-read the mutable options and keep serving.

    oslo.service's threading launcher (cotyledon) re-reads the files in the
    parent and forwards SIGHUP to the worker, whose service wrapper has no
    ``reload``: cotyledon's default then stops the worker (waiting for the
    calls in flight, up to ``graceful_shutdown_timeout``, then killing
    them) and forks a new one. A reload took as long as the longest call,
    and calls sent while the worker restarted were never answered (their
    callers waited for their whole timeout). Here the worker re-reads the
    files itself, in place, as oslo.service's eventlet backend did: the RPC
    server and the calls in flight are not touched.

    The worker's own SIGHUP handler asks for the reload, so no signal is
    dropped (cotyledon drops a SIGHUP that comes while it is still handing
    over the previous one); one thread applies the requests in turn, each
    reading the files after the signal that asked for it.
    """

    def __init__(self, conf, server):
        self.conf = conf
        self.server = server
        self._requested = threading.Event()
        self._thread = None

    def install(self, launcher):
        """Hook into the workers ``launcher`` (``service.launch``) forks."""
        # oslo.service does not expose its cotyledon ServiceManager; its
        # hooks are the way to reach the worker's service wrapper.
        launcher._manager.register_hooks(on_new_worker=self.on_new_worker)

    def on_new_worker(self, service_id, worker_id, wrapper):
        """Runs in the new worker's main thread, before it serves."""
        wrapper.reload = self.request
        cotyledon_handler = signal.getsignal(signal.SIGHUP)

        def on_sighup(signo, frame):
            self.request()
            if callable(cotyledon_handler):
                cotyledon_handler(signo, frame)
        signal.signal(signal.SIGHUP, on_sighup)
        self._thread = threading.Thread(target=self._apply_requests,
                                        name='imaged-reload', daemon=True)
        self._thread.start()

    def request(self):
        self._requested.set()

    def _apply_requests(self):
        while True:
            self._requested.wait()
            self._requested.clear()
            self.reload()

    def reload(self):
        """Re-read the configuration files; log what changed."""
        try:
            changed = self.conf.mutate_config_files()
        except Exception:
            LOG.exception('Reload (SIGHUP) failed: the configuration in use '
                          'is unchanged')
            return
        self.server.reset()
        if changed:
            LOG.info('Reload (SIGHUP) applied: %s changed',
                     ', '.join('%s.%s' % (group or 'DEFAULT', name)
                               for group, name in sorted(
                                   changed, key=lambda k: (k[0] or '', k[1]))))
        else:
            LOG.info('Reload (SIGHUP) applied: no mutable option changed')
        return changed


class EarlySighup:
    """Holds a SIGHUP that comes before the launcher handles them.

    Until ``service.launch`` installs its handlers, SIGHUP has its default
    action, which ends the process: a reload sent while the agent starts
    would kill it. :meth:`hold` (first thing in ``main``) records such a
    signal instead, :meth:`release` (once launched) sends it again.
    """

    def __init__(self):
        self.pending = False

    def hold(self):
        signal.signal(signal.SIGHUP, self._record)
        return self

    def _record(self, signo, frame):
        self.pending = True

    def release(self, kill=None):
        if self.pending:
            LOG.info('A SIGHUP came while starting: reloading now')
            (kill or signal.raise_signal)(signal.SIGHUP)


class LogHandlersAcrossFork:
    """No worker forked while another thread is halfway through a log line.

    cotyledon forks the worker from its supervisor thread while the main
    thread of the parent handles signals: a SIGHUP's reload logs the options
    it changed. A fork in the middle of such a record gave the worker a copy
    of the log file's buffer lock held by a thread the worker does not
    have: its first log line (before it serves) waited forever, and the
    agent never answered. The logging module renews its handler locks in
    the child but does not hold them across the fork; :meth:`install` makes
    every fork wait for the handlers (so for their streams) to be free.
    """

    def __init__(self):
        self._held = []

    def install(self):
        os.register_at_fork(before=self._before,
                            after_in_parent=self._after_in_parent)
        return self

    @staticmethod
    def handlers():
        loggers = [py_logging.getLogger()] + [
            logger for logger in list(
                py_logging.Logger.manager.loggerDict.values())
            if isinstance(logger, py_logging.Logger)]
        seen = {}
        for logger in loggers:
            for handler in list(logger.handlers):
                seen.setdefault(id(handler), handler)
        return list(seen.values())

    def _before(self):
        self._held = self.handlers()
        for handler in self._held:
            handler.acquire()

    def _after_in_parent(self):
        # In the child, the logging module gives every handler a new lock.
        held, self._held = self._held, []
        for handler in reversed(held):
            handler.release()
