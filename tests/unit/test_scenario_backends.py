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

from unittest import mock

from tempest.lib import exceptions as lib_exc

from imaged.tempest_plugin.scenario import backends
from tests import base


class GlanceRetriesTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.sleeps = []
        self.useFixture(base.fixtures.MonkeyPatch(
            'tenacity.nap.time.sleep', self.sleeps.append))

    def test_a_flaking_glance_is_asked_five_times_then_its_error_raised(self):
        call = mock.Mock(side_effect=lib_exc.ServerFault())
        self.assertRaises(lib_exc.ServerFault, backends.glance_call, call, 1)
        self.assertEqual(backends.GLANCE_ATTEMPTS, call.call_count)
        self.assertEqual([0.5, 1, 2, 4], self.sleeps)

    def test_a_glance_that_answers_again_gives_its_answer(self):
        call = mock.Mock(side_effect=[lib_exc.ServerFault(), 'image'])
        self.assertEqual('image', backends.glance_call(call))
        self.assertEqual([0.5], self.sleeps)

    def test_other_errors_are_not_tried_again(self):
        call = mock.Mock(side_effect=lib_exc.NotFound())
        self.assertRaises(lib_exc.NotFound, backends.glance_call, call)
        self.assertEqual(1, call.call_count)

    def test_a_fresh_image_is_tried_at_once(self):
        tries = []
        for attempt in backends.glance_retrying(wait=False):
            tries.append(attempt)
            with attempt:
                if len(tries) < 3:
                    raise lib_exc.ServerFault()
        self.assertEqual(3, len(tries))
        self.assertEqual([0, 0], self.sleeps)
