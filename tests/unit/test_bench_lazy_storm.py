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

"""The lazy storm's figures, and the sections --quick runs."""

import collections
import dataclasses

from tests import base
from tools.bench import __main__ as bench_main
from tools.bench import config as bench_config
from tools.bench import harness
from tools.bench.sections import lazy_storm
from tools.bench.sizes import MiB


class SectionsTest(base.TestCase):

    def test_quick_leaves_the_lazy_storm_out(self):
        only = bench_main.parse_args(['--quick']).only.split(',')
        self.assertNotIn('lazy_storm', only)
        self.assertEqual([s for s in harness.SECTIONS if s != 'lazy_storm'],
                         only)

    def test_a_full_run_has_every_section(self):
        self.assertEqual(list(harness.SECTIONS),
                         bench_main.parse_args([]).only.split(','))

    def test_only_names_it_even_when_quick(self):
        self.assertEqual('lazy_storm', bench_main.parse_args(
            ['--quick', '--only', 'lazy_storm']).only)


class FakeBench:

    figure = harness.Bench.figure

    def __init__(self, plain_base=False):
        self.figures = {}
        self.config = dataclasses.replace(bench_config.QUICK,
                                          lazy_plain_base=plain_base)


def storm_out(calls, errors=(), deaths=(), mib=8.0002, downloads=1,
              lazy_disks=0):
    return {'calls': calls, 'errors': collections.Counter(errors),
            'first_error': errors and 'the first', 'deaths': list(deaths),
            'MiB': mib, 'downloads': downloads, 'lazy disks': lazy_disks}


class RecordTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.figures = lazy_storm._figures(FakeBench(), 2, 4, 8 * MiB)

    def test_a_plain_base_run_names_its_figures_so(self):
        figures = lazy_storm._figures(FakeBench(plain_base=True), 2, 4,
                                      8 * MiB)
        self.assertTrue(figures['p50'].title.endswith(': lazy, plain base'),
                        figures['p50'].title)
        self.assertTrue(self.figures['p50'].title.endswith(': lazy'))

    def test_each_fleet_s_figures_side_by_side(self):
        lazy_storm._record(self.figures, {
            'lazy': storm_out([1.0, 2.0, 3.0, 9.0], lazy_disks=1),
            'plain': storm_out([4.0, 4.0, 5.0, 6.0])})
        p50, top = self.figures['p50'], self.figures['max']
        self.assertEqual((2.0, 4.0), (p50.value, p50.baseline))
        self.assertEqual((9.0, 6.0), (top.value, top.baseline))
        self.assertEqual(['lazy disks: 1'], p50.notes)
        for key in ('failed', 'deaths', 'MiB'):
            self.assertTrue(self.figures[key].met, key)

    def test_a_lost_call_is_a_failed_one_and_said_so(self):
        lazy_storm._record(self.figures, {
            'lazy': storm_out([1.0] * 4, errors=['MessagingTimeout',
                                                 'ImageUnacceptable']),
            'plain': storm_out([1.0] * 4)})
        failed = self.figures['failed']
        self.assertEqual((2, 0), (failed.value, failed.baseline))
        self.assertFalse(failed.met)
        self.assertEqual(['lazy: ImageUnacceptable x1, MessagingTimeout x1, '
                          'lost 1 (first: the first)'], failed.notes)

    def test_a_second_download_misses_one_image_s_worth(self):
        lazy_storm._record(self.figures, {
            'lazy': storm_out([1.0] * 4, mib=12.0, downloads=2),
            'plain': storm_out([1.0] * 4)})
        self.assertFalse(self.figures['MiB'].met)
        self.assertIn('lazy: 2 downloads', self.figures['MiB'].notes)

    def test_a_death_is_counted_and_named(self):
        lazy_storm._record(self.figures, {
            'lazy': storm_out([1.0] * 4),
            'plain': storm_out([1.0] * 4, deaths=['h-1: worker 7 gone'])})
        deaths = self.figures['deaths']
        self.assertEqual((0, 1), (deaths.value, deaths.baseline))
        self.assertEqual(['not lazy: h-1: worker 7 gone'], deaths.notes)
