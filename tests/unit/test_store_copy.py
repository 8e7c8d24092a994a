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

"""StoreCopier: copy-image into our store and its bounded wait."""

from imaged import exception
from imaged.image import glance
from imaged.image import record as image_record
from imaged.image import store_copy
from tests import base

IMAGE = 'img-1'
STORE = 'ceph'

ABSENT = {'stores': 'file'}
IMPORTING = {'stores': 'file', 'os_glance_importing_to_stores': STORE}
PRESENT = {'stores': 'file,ceph'}
FAILED = {'stores': 'file', 'os_glance_failed_import': STORE}


class ScriptedGlance:
    """Records for show() and answers for copy_to_store(), in turn.

    The last of each repeats; an exception in either list is raised.
    """

    def __init__(self, records, answers=((glance.COPY_STARTED, None),)):
        self.records = list(records)
        self.answers = list(answers)
        self.reads = 0
        self.requests = []

    @staticmethod
    def _next(items):
        item = items.pop(0) if len(items) > 1 else items[0]
        if isinstance(item, Exception):
            raise item
        return item

    def show(self, context, image_id, as_service=False):
        assert not as_service, 'copies are watched as the caller'
        self.reads += 1
        return image_record.ImageRecord.from_glance(self._next(self.records),
                                                    image_id)

    def copy_to_store(self, image_id, store, context=None):
        self.requests.append((image_id, store))
        return self._next(self.answers)


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


class StoreCopierTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(copy_poll_interval=2.0, copy_timeout=30, group='glance')
        self.clock = FakeClock()

    def copy(self, records, answers=((glance.COPY_STARTED, None),)):
        self.glance = ScriptedGlance(records, answers)
        copier = store_copy.StoreCopier(self.conf, self.glance,
                                        clock=self.clock,
                                        sleep=self.clock.sleep)
        return copier.copy(None, IMAGE, STORE)

    def test_copy_asked_then_waited_for(self):
        result = self.copy([ABSENT, IMPORTING, IMPORTING, PRESENT])
        self.assertEqual(store_copy.COPIED, result.outcome)
        self.assertEqual([(IMAGE, STORE)], self.glance.requests)
        self.assertEqual([2.0, 2.0, 2.0], self.clock.slept)

    def test_already_in_the_store_asks_nothing(self):
        result = self.copy([PRESENT])
        self.assertEqual(store_copy.COPIED, result.outcome)
        self.assertEqual([], self.glance.requests)

    def test_another_host_copying_is_waited_for_without_asking(self):
        result = self.copy([IMPORTING, IMPORTING, PRESENT])
        self.assertEqual(store_copy.COPIED, result.outcome)
        self.assertEqual([], self.glance.requests)

    def test_409_waits_for_the_other_hosts_copy(self):
        busy = (glance.COPY_BUSY, 'Image has active task')
        result = self.copy([ABSENT, IMPORTING, IMPORTING, PRESENT], [busy])
        self.assertEqual(store_copy.COPIED, result.outcome)
        self.assertEqual(1, len(self.glance.requests))

    def test_409_then_nothing_under_way_asks_again(self):
        busy = (glance.COPY_BUSY, 'Image has active task')
        result = self.copy([ABSENT, ABSENT, IMPORTING, PRESENT],
                           [busy, (glance.COPY_STARTED, None)])
        self.assertEqual(store_copy.COPIED, result.outcome)
        self.assertEqual(2, len(self.glance.requests))

    def test_409_forever_without_a_copy_is_a_refusal(self):
        busy = (glance.COPY_BUSY, 'Unknown scheme')
        result = self.copy([ABSENT], [busy])
        self.assertEqual(store_copy.REFUSED, result.outcome)
        self.assertEqual(store_copy.MAX_REQUESTS, len(self.glance.requests))

    def test_accepted_copy_not_yet_visible_is_not_asked_again(self):
        result = self.copy([ABSENT, ABSENT, ABSENT, PRESENT])
        self.assertEqual(store_copy.COPIED, result.outcome)
        self.assertEqual(1, len(self.glance.requests))

    def test_lost_race_400_already_present(self):
        refused = (glance.COPY_REFUSED, 'Image is already present at store')
        result = self.copy([ABSENT, PRESENT], [refused])
        self.assertEqual(store_copy.COPIED, result.outcome)

    def test_refusal_ends_the_wait(self):
        refused = (glance.COPY_REFUSED, 'copy_image policy')
        result = self.copy([ABSENT], [refused])
        self.assertEqual(store_copy.REFUSED, result.outcome)
        self.assertIn('copy_image', result.reason)
        self.assertEqual([], self.clock.slept)

    def test_copy_fails_in_glance(self):
        result = self.copy([ABSENT, IMPORTING, FAILED])
        self.assertEqual(store_copy.FAILED, result.outcome)
        self.assertIn('os_glance_failed_import', result.reason)

    def test_older_failure_is_not_taken_for_this_copy(self):
        # Glance clears the old failure only once the new copy starts.
        result = self.copy([FAILED, FAILED, IMPORTING, PRESENT])
        self.assertEqual(store_copy.COPIED, result.outcome)
        self.assertEqual(1, len(self.glance.requests))

    def test_copy_that_fails_after_an_older_failure(self):
        result = self.copy([FAILED, IMPORTING, FAILED])
        self.assertEqual(store_copy.FAILED, result.outcome)

    def test_wait_is_bounded(self):
        result = self.copy([ABSENT, IMPORTING])
        self.assertEqual(store_copy.TIMED_OUT, result.outcome)
        self.assertEqual(30, sum(self.clock.slept))
        self.assertEqual(16, self.glance.reads)

    def test_last_sleep_stops_at_the_deadline(self):
        self.flags(copy_timeout=5, group='glance')
        result = self.copy([ABSENT, IMPORTING])
        self.assertEqual(store_copy.TIMED_OUT, result.outcome)
        self.assertEqual([2.0, 2.0, 1.0], self.clock.slept)

    def test_image_gone_while_waiting(self):
        result = self.copy([ABSENT, exception.ImageNotFound(image_id=IMAGE)])
        self.assertEqual(store_copy.REFUSED, result.outcome)
        self.assertIn('could not be found', result.reason)


class StoreStateTest(base.TestCase):

    @staticmethod
    def store_state(body, store):
        return store_copy.store_state(
            image_record.ImageRecord.from_glance(body, IMAGE), store)

    def test_states(self):
        self.assertEqual('present', self.store_state(PRESENT, STORE))
        self.assertEqual('importing',
                         self.store_state(IMPORTING, STORE))
        self.assertEqual('failed', self.store_state(FAILED, STORE))
        self.assertEqual('absent', self.store_state(ABSENT, STORE))
        self.assertEqual('absent', self.store_state({}, STORE))
        self.assertEqual('absent',
                         self.store_state({'stores': 'ceph2'}, STORE))
        self.assertEqual('present', self.store_state(
            {'stores': ' file , ceph '}, STORE))
