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

"""The long-call gate on its own: a few at once, a bounded queue."""

import threading
import time

from imaged import calls
from imaged import deadline
from imaged import exception
from tests import base


class LongCallsTest(base.TestCase):
    """The admission of long calls, on its own."""

    def setUp(self):
        super().setUp()
        self.calls = calls.LongCalls('h1', max_running=1, max_queued=2)
        self.order = []

    def enter(self, name, seconds=10, release=None):
        """Runs a long call in a thread; it ends when ``release`` is set."""
        outcome = {}

        def run():
            try:
                with self.calls.admitted(deadline.Deadline(seconds)):
                    self.order.append(name)
                    if release is not None:
                        release.wait(10)
            except Exception as e:
                outcome['error'] = e
        thread = threading.Thread(target=run)
        thread.start()
        self.addCleanup(thread.join, 10)
        return thread, outcome

    def wait_for(self, **stats):
        end = time.monotonic() + 5
        while not stats.items() <= self.calls.stats().items():
            self.assertLess(time.monotonic(), end, self.calls.stats())
            time.sleep(0.01)

    def test_beyond_its_queue_a_long_call_is_refused_at_once(self):
        release = threading.Event()
        self.addCleanup(release.set)
        self.enter('a', release=release)
        self.wait_for(long_running=1)
        self.enter('b')
        self.enter('c')
        self.wait_for(long_queued=2)
        thread, outcome = self.enter('d')
        thread.join(5)
        e = outcome['error']
        self.assertIsInstance(e, exception.AgentBusy)
        self.assertEqual('h1', e.kwargs['host'])
        self.assertIn('1 long calls running and 2 waiting', str(e))
        self.assertEqual(1, self.calls.stats()['long_refused'])
        self.assertNotIn('d', self.order)

    def test_waiting_calls_start_in_the_order_they_came(self):
        release = threading.Event()
        self.enter('a', release=release)
        self.wait_for(long_running=1)
        self.enter('b')
        self.wait_for(long_queued=1)
        self.enter('c')
        self.wait_for(long_queued=2)
        release.set()
        self.wait_for(long_running=0, long_queued=0)
        self.assertEqual(['a', 'b', 'c'], self.order)

    def test_a_call_whose_deadline_passes_while_queued_never_starts(self):
        release = threading.Event()
        self.addCleanup(release.set)
        self.enter('a', release=release)
        self.wait_for(long_running=1)
        started = time.monotonic()
        thread, outcome = self.enter('b', seconds=0.3)
        thread.join(5)
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        self.assertIsInstance(outcome['error'], exception.Timeout)
        self.assertIn('long calls on host h1', str(outcome['error']))
        self.assertEqual(['a'], self.order)
        self.assertEqual((1, 0, 1), (
            self.calls.stats()['long_running'],
            self.calls.stats()['long_queued'],
            self.calls.stats()['long_expired']))
        release.set()
        self.wait_for(long_running=0)

    def test_a_call_past_its_deadline_on_arrival_never_starts(self):
        thread, outcome = self.enter('a', seconds=0)
        thread.join(5)
        self.assertIsInstance(outcome['error'], exception.Timeout)
        self.assertEqual([], self.order)
        self.assertEqual(0, self.calls.stats()['long_running'])

    def test_stopping_answers_the_waiting_calls(self):
        release = threading.Event()
        self.enter('a', release=release)
        self.wait_for(long_running=1)
        thread, outcome = self.enter('b')
        self.wait_for(long_queued=1)
        self.calls.close()
        thread.join(5)
        self.assertIsInstance(outcome['error'], exception.AgentBusy)
        self.assertIn('stopping', str(outcome['error']))
        release.set()
        self.wait_for(long_running=0, long_queued=0)
        self.assertEqual(['a'], self.order)
        thread, outcome = self.enter('c')
        thread.join(5)
        self.assertIsInstance(outcome['error'], exception.AgentBusy)
