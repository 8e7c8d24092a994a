"""The oslo.service Service that owns the RPC server and periodic work."""

import oslo_messaging as messaging
from oslo_log import log as logging
from oslo_service import service

from imaged import context as imaged_context
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
        self.tg.add_dynamic_timer(self._periodic_tasks,
                                  initial_delay=None,
                                  periodic_interval_max=60)
        interval = self.conf.image_cache.manager_interval
        self.tg.add_timer_args(interval, self.manager.clean_image_cache,
                               initial_delay=interval,
                               stop_on_exception=False)
        if self.conf.metrics.enabled:
            self.manager.metrics.serve(self.conf.metrics.host,
                                       self.conf.metrics.port)
        LOG.info('imaged serving topic %s as %s: %d executor threads, at '
                 'most %d long calls running and %d waiting', rpc.TOPIC,
                 self.manager.host, threads, long_calls.max_running,
                 long_calls.max_queued)

    def _periodic_tasks(self, raise_on_error=False):
        ctxt = imaged_context.get_admin_context()
        return self.manager.run_periodic_tasks(ctxt,
                                               raise_on_error=raise_on_error)

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
        super().stop(graceful=graceful)
        self.manager.metrics.stop()
        # The pool's cleanup role goes to another host now, not when its
        # lease runs out.
        self.manager.storage.release_cleanup_role()
        rpc.cleanup()
        LOG.info('imaged stopped')
