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

"""The storm's and the soak's arithmetic: percentiles, error names, calls
released together, images that differ."""

import threading

from tests import base
from tools.bench.sections import storm
from tools.bench import soak


class PercentileTest(base.TestCase):

    def test_nearest_rank(self):
        values = list(range(1, 101))
        self.assertEqual(50, storm.percentile(values, 50))
        self.assertEqual(95, storm.percentile(values, 95))
        self.assertEqual(100, storm.percentile(values, 100))

    def test_one_value_is_every_percentile(self):
        self.assertEqual(3.0, storm.percentile([3.0], 50))
        self.assertEqual(3.0, storm.percentile([3.0], 95))

    def test_no_values(self):
        self.assertIsNone(storm.percentile([], 50))
        self.assertEqual('no calls', storm.latency_text([]))

    def test_order_does_not_matter(self):
        self.assertEqual(2, storm.percentile([3, 1, 2], 50))


class ErrorNameTest(base.TestCase):

    def test_remote_suffix_dropped(self):
        remote = type('BackendUnavailable_Remote', (Exception,), {})
        self.assertEqual('BackendUnavailable', storm.error_name(remote()))

    def test_local_class(self):
        self.assertEqual('ValueError', storm.error_name(ValueError()))

    def test_counts_text(self):
        self.assertEqual('A x2, B x1',
                         storm.counts_text({'B': 1, 'A': 2}))
        self.assertEqual('none', storm.counts_text({}))


class ReleasedTogetherTest(base.TestCase):

    def test_every_call_runs_after_all_are_ready(self):
        ready = threading.Barrier(4)  # proves the four overlap

        def call():
            ready.wait(10)
        total, results = storm.released_together([call] * 4)
        self.assertEqual([None] * 4, [e for _s, e in results])
        self.assertLess(total, 10)

    def test_errors_kept_per_call(self):
        def fails():
            raise ValueError('no')
        _total, results = storm.released_together([fails, lambda: None])
        self.assertIsInstance(results[0][1], ValueError)
        self.assertIsNone(results[1][1])


class SoakDataTest(base.TestCase):

    def test_salts_make_different_images(self):
        one, two = soak.SoakData(4 << 20, 1), soak.SoakData(4 << 20, 2)
        self.assertNotEqual(one.mib(0), two.mib(0))
        self.assertNotEqual(one.mib(0), one.mib(1))
        self.assertEqual(one.mib(3), soak.SoakData(4 << 20, 1).mib(3))
