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

"""Prometheus metrics of a real agent, scraped over HTTP."""

import socket
import urllib.request

from tests.functional import base


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


PORT = _free_port()


class MetricsTest(base.FunctionalTestCase):

    daemon_options = {'metrics': {'enabled': 'true', 'host': '127.0.0.1',
                                  'port': str(PORT)}}

    def scrape(self):
        url = 'http://127.0.0.1:%d/metrics' % PORT
        with urllib.request.urlopen(url, timeout=30) as resp:
            self.assertEqual(200, resp.status)
            text = resp.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith('#'):
                name, value = line.rsplit(' ', 1)
                values[name] = float(value)
        return values

    def test_a_clone_and_a_download_show_in_the_scrape(self):
        before = self.scrape()
        data = base.random_raw(2 << 20)
        cloned = self.glance.create(data, backend='ceph')
        downloaded = self.glance.create(data, backend='local')
        self.assertEqual('clone',
                         self.create_root_disk(cloned['id'])['strategy'])
        self.assertEqual('download',
                         self.create_root_disk(downloaded['id'])['strategy'])
        after = self.scrape()

        def moved(name):
            return after.get(name, 0) - before.get(name, 0)
        self.assertEqual(1, moved('imaged_root_disk_creates_total'
                                  '{result="ok",strategy="clone"}'))
        self.assertEqual(1, moved('imaged_root_disk_creates_total'
                                  '{result="ok",strategy="download"}'))
        self.assertEqual(1, moved('imaged_root_disk_create_seconds_count'
                                  '{strategy="download"}'))
        self.assertEqual(1, moved('imaged_downloads_total{result="ok"}'))
        self.assertEqual(len(data), moved('imaged_download_bytes_total'))
        self.assertEqual(1, moved('imaged_base_builds_total'))
        self.assertEqual(1, after['imaged_backend_up{backend="ceph"}'])
        self.assertEqual(1, after['imaged_backend_up{backend="glance"}'])
        self.assertIn('imaged_long_calls{state="waiting"}', after)
        self.assertIn('Serving Prometheus metrics', self.daemon.log())
