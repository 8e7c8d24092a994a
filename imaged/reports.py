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

"""Guru Meditation Reports (oslo.reports) of a running agent.

``kill -USR2 <imaged's main pid>``: the parent hands the signal to its
worker, which writes a report of every thread's stack, the configuration
(secrets masked), its processes and the long calls it holds (running and
queued: method, instance and image ids, age), then goes on serving. The
report goes to the log, or to a file in ``[oslo_reports] log_dir`` when
that is set, as oslo.reports does. With ``[oslo_reports]
file_event_handler`` set, touching that file asks for a report instead of
the signal (oslo.reports' choice).
"""

import os
import signal

from oslo_log import log as logging
from oslo_reports import guru_meditation_report as gmr
from oslo_reports.models import with_default_views as mwdv
from oslo_reports import opts as gmr_opts

from imaged import version

LOG = logging.getLogger(__name__)


class PackageVersion:
    """What the report's Package section asks of a version object."""

    def vendor_string(self):
        return 'The imaged developers'

    def product_string(self):
        return 'imaged'

    def version_string_with_package(self):
        return version.version_string()


class ImagedGuruMeditation(gmr.TextGuruMeditation):
    """oslo.reports' text report, written to the log unless ``log_dir``."""

    @classmethod
    def handle_signal(cls, version_obj, service_name, log_dir, frame):
        if log_dir:
            return super().handle_signal(version_obj, service_name, log_dir,
                                         frame)
        try:
            text = cls(version_obj, frame).run()
        except Exception:
            LOG.exception('Unable to write a Guru Meditation Report')
            return
        # WARNING: an operator asked for it, whatever the log level.
        LOG.warning('Guru Meditation Report of worker %d:\n%s', os.getpid(),
                    text)


def calls_text(model):
    calls = model['calls']
    lines = ['%d long calls running, %d queued' % (
        sum(c['state'] == 'running' for c in calls),
        sum(c['state'] == 'queued' for c in calls))]
    for call in calls:
        ids = ' '.join('%s=%s' % (key, ','.join(value) if isinstance(
            value, list) else value) for key, value in sorted(call.items())
            if key not in ('method', 'state', 'age'))
        lines.append('%-17s %-7s %8.1fs  %s' % (
            call['method'], call['state'], call['age'], ids))
    return '\n'.join(lines)


class CallsInFlight:
    """The report section of the long calls (``calls.LongCalls``)."""

    def __init__(self, long_calls):
        self.long_calls = long_calls

    def __call__(self):
        return mwdv.ModelWithDefaultViews(
            {'calls': self.long_calls.in_flight()}, text_view=calls_text)


def register_opts(conf):
    gmr_opts.set_defaults(conf)


def setup(conf, launcher, long_calls):
    """Reports in the worker ``launcher`` forks; SIGUSR2 to the parent
    reaches it."""
    register_opts(conf)
    ImagedGuruMeditation.register_section('Calls in flight',
                                          CallsInFlight(long_calls))

    def on_new_worker(service_id, worker_id, wrapper):
        # The worker's main thread: where signal handlers are installed.
        ImagedGuruMeditation.setup_autorun(PackageVersion(),
                                           service_name='imaged', conf=conf)
    launcher._manager.register_hooks(on_new_worker=on_new_worker)
    if not conf.oslo_reports.file_event_handler:
        forward_to_workers(signal.SIGUSR2)


def forward_to_workers(signum, killpg=os.killpg):
    """The parent passes ``signum`` to its process group (its worker),
    as cotyledon does with SIGHUP."""
    parent = os.getpid()

    def forward(signo, frame):
        if os.getpid() != parent:
            return  # a worker forked before it installed its own handler
        signal.signal(signum, signal.SIG_IGN)
        try:
            killpg(0, signum)
        finally:
            signal.signal(signum, forward)
    signal.signal(signum, forward)
    return forward
