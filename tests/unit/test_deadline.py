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

"""A call's deadline: time left, checks and capped waits."""

import math

from imaged import context
from imaged import deadline
from imaged import exception
from tests import base


class FakeClock:

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class DeadlineTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.clock = FakeClock()

    def test_time_left_runs_out(self):
        d = deadline.Deadline(10, clock=self.clock)
        self.assertEqual((10, False), (d.remaining(), d.expired()))
        self.clock.now += 9.5
        self.assertEqual((0.5, False), (d.remaining(), d.expired()))
        self.clock.now += 1
        self.assertEqual((0, True), (d.remaining(), d.expired()))

    def test_check_raises_timeout_naming_what_and_the_time_waited(self):
        d = deadline.Deadline(10, clock=self.clock)
        d.check('the download of image x')
        self.clock.now += 12.34
        e = self.assertRaises(exception.Timeout, d.check,
                              'the download of image x')
        self.assertEqual({'what': 'the download of image x',
                          'seconds': 12.3}, e.kwargs)
        self.assertIn('the download of image x', str(e))

    def test_cap_shortens_a_wait_to_the_time_left(self):
        d = deadline.Deadline(10, clock=self.clock)
        self.assertEqual(5, d.cap(5))
        self.assertEqual(10, d.cap(60))
        self.assertEqual(10, d.cap(None))
        self.clock.now += 20
        self.assertEqual(0, d.cap(60))

    def test_a_call_keeps_a_margin_of_its_callers_wait(self):
        d = deadline.Deadline.for_call(1800, 600, clock=self.clock)
        self.assertEqual(1795, d.remaining())
        d = deadline.Deadline.for_call(10, 600, clock=self.clock)
        self.assertEqual(9.5, d.remaining())

    def test_a_caller_that_says_nothing_waits_the_default(self):
        d = deadline.Deadline.for_call(None, 600, clock=self.clock)
        self.assertEqual(595, d.remaining())

    def test_without_a_deadline_nothing_expires_and_waits_stay(self):
        d = deadline.of(context.get_admin_context())
        self.assertIs(deadline.UNBOUNDED, d)
        self.assertEqual(math.inf, d.remaining())
        self.assertFalse(d.expired())
        self.assertEqual(60, d.cap(60))
        self.assertIsNone(d.cap(None))
        d.check('anything')

    def test_of_gives_the_deadline_attached_to_the_context(self):
        ctxt = context.RequestContext()
        ctxt.deadline = deadline.Deadline(3, clock=self.clock)
        self.assertIs(ctxt.deadline, deadline.of(ctxt))
        self.assertIs(deadline.UNBOUNDED, deadline.of(object()))
