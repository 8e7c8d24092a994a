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

"""Prometheus metrics: they move with the events, and are served."""

import socket
import urllib.request

from imaged import metrics as imaged_metrics
from tests import base
from tests.unit import fakes
from tests.unit import test_manager

CLONED = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a01'
DOWNLOADED = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a02'
INSTANCES = ['7c9e6679-7425-40de-944b-e07fc1f90a%02d' % n for n in range(4)]


class AgentMetricsTest(test_manager.RPCTestCase):

    def value(self, name, **labels):
        return self.manager.metrics.registry.get_sample_value(
            name, labels) or 0

    def test_a_clone_and_a_download_move_their_figures(self):
        url = self.cluster.add_glance_image(CLONED, b'boot')
        self.glance.add(CLONED, b'boot', direct_url=url)
        self.glance.add(DOWNLOADED, b'data' * 1000)
        self.call('create_root_disk', instance_uuid=INSTANCES[0],
                  image_id=CLONED, size_gb=1)
        self.call('create_root_disk', instance_uuid=INSTANCES[1],
                  image_id=DOWNLOADED, size_gb=1)
        self.call('create_root_disk', instance_uuid=INSTANCES[2],
                  image_id=DOWNLOADED, size_gb=1)
        self.assertEqual(1, self.value('imaged_root_disk_creates_total',
                                       strategy='clone', result='ok'))
        self.assertEqual(2, self.value('imaged_root_disk_creates_total',
                                       strategy='download', result='ok'))
        self.assertEqual(1, self.value(
            'imaged_root_disk_create_seconds_count', strategy='clone'))
        self.assertEqual(2, self.value(
            'imaged_root_disk_create_seconds_count', strategy='download'))
        # One download; the second disk cloned the base it made.
        self.assertEqual(1, self.value('imaged_downloads_total',
                                       result='ok'))
        self.assertEqual(4000, self.value('imaged_download_bytes_total'))
        self.assertEqual(1, self.value(
            'imaged_download_throughput_bytes_per_second_count'))
        self.assertEqual(1, self.value('imaged_base_builds_total'))
        self.assertEqual(1, self.value('imaged_base_hits_total'))
        self.assertEqual(3, self.value('imaged_wait_seconds_count',
                                       what='long_call'))
        self.assertEqual(1, self.value('imaged_wait_seconds_count',
                                       what='download_slot'))
        self.assertEqual(1, self.value('imaged_backend_up',
                                       backend='ceph'))
        self.assertEqual(0, self.value('imaged_long_calls', state='running'))

    def test_errors_count_by_method_and_class(self):
        # Any error class: the test reads which one the counter names.
        self.assertRaises(Exception, self.call,  # noqa: H202
                          'create_root_disk',
                          instance_uuid=INSTANCES[3], image_id=CLONED,
                          size_gb=1)
        self.assertEqual(1, self.value('imaged_call_errors_total',
                                       method='create_root_disk',
                                       error='ImageNotFound'))
        self.assertEqual(1, self.value('imaged_root_disk_creates_total',
                                       strategy='none',
                                       result='ImageNotFound'))

    def test_evictions_count_by_where_and_reason(self):
        self.manager.notifications.evict(CLONED, 'file', 'age')
        self.assertEqual(1, self.value('imaged_evictions_total',
                                       where='file', reason='age'))


class EndpointTest(base.TestCase):

    def free_port(self):
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            return s.getsockname()[1]

    def test_served_in_prometheus_text_format(self):
        metrics = imaged_metrics.Metrics()
        metrics.watch_state(lambda: {'calls': {'running': 2, 'waiting': 5},
                                     'flattens': {'running': 1, 'queued': 7,
                                                  'dropped': 3},
                                     'cache_bytes': 123,
                                     'backends': {'glance': False}})
        metrics.created('clone', 0.02)
        port = self.free_port()
        metrics.serve('127.0.0.1', port)
        self.addCleanup(metrics.stop)
        with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port,
                                    timeout=10) as resp:
            text = resp.read().decode()
        for line in ('imaged_long_calls{state="waiting"} 5.0',
                     'imaged_cache_file_bytes 123.0',
                     'imaged_background_flattens{state="queued"} 7.0',
                     'imaged_background_flattens_dropped_total 3.0',
                     'imaged_backend_up{backend="glance"} 0.0',
                     'imaged_root_disk_creates_total{result="ok",'
                     'strategy="clone"} 1.0'):
            self.assertIn(line, text)

    def test_a_broken_state_reader_leaves_the_counters_served(self):
        metrics = imaged_metrics.Metrics()
        metrics.watch_state(fakes.FakeGlance)  # takes no such call
        metrics.created('clone', 0.02)
        self.assertEqual(1, metrics.registry.get_sample_value(
            'imaged_root_disk_creates_total',
            {'strategy': 'clone', 'result': 'ok'}))
