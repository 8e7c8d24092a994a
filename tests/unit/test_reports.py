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

"""Guru Meditation Reports: the calls in flight, the log, the signal."""

import signal
import threading

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture

from imaged import calls as imaged_calls
from imaged import deadline
from imaged.image import format as image_format
from imaged import reports
from tests import base

INSTANCE = '11111111-2222-3333-4444-555555555555'
IMAGE = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee'


class CallsInFlightTest(base.TestCase):

    def test_running_and_queued_calls_with_their_ids_and_age(self):
        calls = imaged_calls.LongCalls('host', max_running=1, max_queued=4)
        inside, release = threading.Event(), threading.Event()

        def create():
            with calls.admitted(deadline.Deadline(60), 'create_root_disk',
                                instance_uuid=INSTANCE, image_id=IMAGE):
                inside.set()
                release.wait(30)
        running = threading.Thread(target=create)
        running.start()
        self.assertTrue(inside.wait(30))
        queued = threading.Thread(target=lambda: calls.admitted(
            deadline.Deadline(60), 'cache_images',
            image_ids=[IMAGE]).__enter__())
        queued.start()
        for _ in range(300):
            if calls.stats()['long_queued']:
                break
            threading.Event().wait(0.01)
        text = reports.CallsInFlight(calls)().to_text()
        release.set()
        running.join(30)
        queued.join(30)
        self.assertIn('1 long calls running, 1 queued', text)
        self.assertRegex(text, r'create_root_disk +running +\d+\.\ds  '
                         'image_id=%s instance_uuid=%s' % (IMAGE, INSTANCE))
        self.assertRegex(text, r'cache_images +queued .* image_ids=%s'
                         % IMAGE)

    def test_a_finished_or_refused_call_is_gone(self):
        calls = imaged_calls.LongCalls('host', max_running=1, max_queued=0)
        with calls.admitted(deadline.Deadline(60), 'create_root_disk',
                            instance_uuid=INSTANCE, image_id=IMAGE):
            self.assertEqual(1, len(calls.in_flight()))
            # Any refusal: what matters is that nothing more is in flight.
            self.assertRaises(Exception, calls.admitted(  # noqa: H202
                deadline.Deadline(60), 'create_root_disk').__enter__)
            self.assertEqual(1, len(calls.in_flight()))
        self.assertEqual([], calls.in_flight())


class ReportToLogTest(base.TestCase):

    def test_the_report_goes_to_the_log_with_masked_secrets(self):
        reports.register_opts(self.conf)
        self.useFixture(config_fixture.Config(self.conf)).register_opt(
            cfg.StrOpt('report_test_password', secret=True))
        self.flags(report_test_password='s3cr3t-pw')
        logger = self.useFixture(fixtures.FakeLogger(level='WARNING'))
        calls = imaged_calls.LongCalls('host', max_running=1, max_queued=1)
        self.useFixture(fixtures.MonkeyPatch(
            'imaged.reports.ImagedGuruMeditation.persistent_sections',
            [('Calls in flight', reports.CallsInFlight(calls))]))
        reports.ImagedGuruMeditation.handle_signal('1.0', 'imaged', None,
                                                   None)
        for title in ('Threads', 'Configuration', 'Calls in flight'):
            self.assertIn(title, logger.output)
        self.assertIn('0 long calls running, 0 queued', logger.output)
        self.assertNotIn('s3cr3t-pw', logger.output)


class SignalsTest(base.TestCase):

    def setUp(self):
        super().setUp()
        for signum in (signal.SIGUSR2, signal.SIGHUP):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))

    def test_the_parent_passes_sigusr2_to_its_process_group(self):
        sent = []
        reports.forward_to_workers(signal.SIGUSR2,
                                   killpg=lambda *a: sent.append(a))
        signal.raise_signal(signal.SIGUSR2)
        self.assertEqual([(0, signal.SIGUSR2)], sent)

    def test_qemu_img_ignores_the_signals_sent_to_the_group(self):
        image_format.ignore_agent_signals()
        self.assertEqual(signal.SIG_IGN, signal.getsignal(signal.SIGHUP))
        self.assertEqual(signal.SIG_IGN, signal.getsignal(signal.SIGUSR2))
