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

"""The agent's figures for Prometheus (``[metrics]``).

One :class:`Metrics` per agent, in its worker process (the agent runs one),
kept whether or not the endpoint is served. Counters move where the events
happen (the endpoint, the download, the image cache); gauges of the
agent's state (calls in flight, local cache bytes, Glance and Ceph
reachability) are read when Prometheus scrapes. Every name starts with
``imaged_``; doc/source/operate/metrics.rst lists them.
"""

from oslo_log import log as logging
import prometheus_client as prom
from prometheus_client import core as prom_core

LOG = logging.getLogger(__name__)

# Seconds: a clone takes tens of milliseconds, a download up to minutes.
CREATE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                  600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)
# Bytes per second: 10 MB/s to 2 GB/s.
THROUGHPUT_BUCKETS = tuple(x * 1e6 for x in (10, 25, 50, 100, 200, 400,
                                             800, 1200, 2000))


class _State:
    """A collector of gauges read from ``read()`` at each scrape."""

    def __init__(self, read):
        self._read = read

    def describe(self):
        return []

    def collect(self):
        try:
            state = self._read()
        except Exception:
            LOG.warning('Cannot read the agent\'s state for metrics',
                        exc_info=True)
            return
        calls = prom_core.GaugeMetricFamily(
            'imaged_long_calls', 'Long calls (create_root_disk, '
            'cache_images) running and waiting for a turn.',
            labels=['state'])
        for name in ('running', 'waiting'):
            calls.add_metric([name], state['calls'].get(name, 0))
        yield calls
        flattens = prom_core.GaugeMetricFamily(
            'imaged_background_flattens', 'Background flattens ([rbd] '
            'flatten_root_disks = background) running and queued.',
            labels=['state'])
        stats = state.get('flattens', {})
        for name in ('running', 'queued'):
            flattens.add_metric([name], stats.get(name, 0))
        yield flattens
        yield prom_core.CounterMetricFamily(
            'imaged_background_flattens_dropped', 'New clones that found '
            'the background flatten queue full and stayed clones.',
            value=stats.get('dropped', 0))
        yield prom_core.GaugeMetricFamily(
            'imaged_cache_file_bytes', 'Bytes taken by local base files.',
            value=state['cache_bytes'])
        up = prom_core.GaugeMetricFamily(
            'imaged_backend_up', '1 when the health check found the '
            'backend usable, else 0.', labels=['backend'])
        for backend, ok in sorted(state['backends'].items()):
            up.add_metric([backend], 1 if ok else 0)
        yield up


class Metrics:
    """Every figure of one agent, in a registry of its own."""

    def __init__(self):
        self.registry = r = prom.CollectorRegistry()
        self.creates = prom.Counter(
            'imaged_root_disk_creates', 'create_root_disk calls by strategy '
            '(existing, clone, download; none when it failed first) and '
            'result (ok or the error class).', ['strategy', 'result'],
            registry=r)
        self.create_seconds = prom.Histogram(
            'imaged_root_disk_create_seconds', 'Time of successful '
            'create_root_disk calls by strategy, waits included.',
            ['strategy'], buckets=CREATE_BUCKETS, registry=r)
        self.errors = prom.Counter(
            'imaged_call_errors', 'RPC calls that failed, by method and '
            'error class.', ['method', 'error'], registry=r)
        self.downloads = prom.Counter(
            'imaged_downloads', 'Downloads from Glance by result (ok or the '
            'error class).', ['result'], registry=r)
        self.download_bytes = prom.Counter(
            'imaged_download_bytes', 'Bytes received from Glance.',
            registry=r)
        self.download_throughput = prom.Histogram(
            'imaged_download_throughput_bytes_per_second', 'Throughput of '
            'each finished download.', buckets=THROUGHPUT_BUCKETS,
            registry=r)
        self.base_builds = prom.Counter(
            'imaged_base_builds', 'Base images in Ceph this agent built.',
            registry=r)
        self.base_hits = prom.Counter(
            'imaged_base_hits', 'Uses of a base image some agent of the '
            'pool had built before.', registry=r)
        self.evictions = prom.Counter(
            'imaged_evictions', 'Cached copies removed, by where (file, '
            'rbd) and reason (age, size, deleted).', ['where', 'reason'],
            registry=r)
        self.waits = prom.Histogram(
            'imaged_wait_seconds', 'Time calls waited for a turn: a long '
            'call\'s slot, a download slot.', ['what'],
            buckets=WAIT_BUCKETS, registry=r)
        self.signatures = prom.Counter(
            'imaged_signature_checks', 'Image signature checks by path '
            '(download: over the stream; clone: a read of Glance\'s '
            'snapshot; recorded: a lookup of an earlier one; certificate: '
            'refused before any byte) and result (ok or the error class).',
            ['path', 'result'], registry=r)
        self.signature_seconds = prom.Histogram(
            'imaged_signature_check_seconds', 'Time of successful signature '
            'checks by path (download: the time spent feeding the '
            'verifier).', ['path'], buckets=WAIT_BUCKETS, registry=r)
        self.lazy_bases = prom.Counter(
            'imaged_lazy_bases', 'Lazy bases ([image_cache] '
            'lazy_first_disk) by outcome: published, or quarantined (the '
            'image failed its checks after its first disk was handed out; '
            'the ERROR log and image_cache.lazy_base.quarantined name it).',
            ['outcome'], registry=r)
        self._server = None

    def watch_state(self, read):
        """Gauges read by ``read()`` at each scrape: ``{'calls': {running,
        waiting}, 'flattens': {running, queued, dropped}, 'cache_bytes':
        int, 'backends': {name: bool}}``."""
        self.registry.register(_State(read))

    def created(self, strategy, seconds):
        self.creates.labels(strategy, 'ok').inc()
        self.create_seconds.labels(strategy).observe(seconds)

    def failed(self, method, error, strategy='none'):
        name = type(error).__name__
        self.errors.labels(method, name).inc()
        if method == 'create_root_disk':
            self.creates.labels(strategy, name).inc()

    def downloaded(self, nbytes, seconds, error=None):
        self.download_bytes.inc(nbytes)
        if error is not None:
            self.downloads.labels(type(error).__name__).inc()
            return
        self.downloads.labels('ok').inc()
        if seconds > 0:
            self.download_throughput.observe(nbytes / seconds)

    def signature_checked(self, path, seconds, error=None):
        if error is not None:
            self.signatures.labels(path, type(error).__name__).inc()
            return
        self.signatures.labels(path, 'ok').inc()
        self.signature_seconds.labels(path).observe(seconds)

    def base_used(self, built_now):
        (self.base_builds if built_now else self.base_hits).inc()

    def lazy_base(self, outcome):
        self.lazy_bases.labels(outcome).inc()

    def evicted(self, where, reason):
        self.evictions.labels(where, reason).inc()

    def waited(self, what, seconds):
        self.waits.labels(what).observe(seconds)

    def serve(self, host, port):
        """Serve ``/metrics`` on ``host:port`` from a thread of its own."""
        self._server, _thread = prom.start_http_server(
            port, addr=host, registry=self.registry)
        LOG.info('Serving Prometheus metrics at http://%s:%d/metrics', host,
                 port)

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
