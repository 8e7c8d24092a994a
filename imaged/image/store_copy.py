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

"""Having Glance copy an image into our cluster's store, with a bounded wait.

Glance multistore copies an active image into another store with the
``copy-image`` import method, in the background. The image record tells how
it goes: a store being filled is listed in ``os_glance_importing_to_stores``,
a finished one in ``stores``, a failed one in ``os_glance_failed_import``.
Several hosts may ask at once: Glance answers all but the first with a 409
while the first one's copy runs, and they all wait for that copy.
"""

import collections
import time
from typing import Any

from oslo_concurrency import lockutils
from oslo_log import log as logging
import tenacity

from imaged import exception
from imaged.image import glance

LOG = logging.getLogger(__name__)

# Outcomes of StoreCopier.copy().
COPIED = 'copied'
FAILED = 'failed'
TIMED_OUT = 'timed out'
REFUSED = 'refused'

# Requests for one copy, ours after a 409 included: a 409 that outlives the
# import it stood for (or names a store Glance does not know) ends the wait.
MAX_REQUESTS = 3

CopyResult = collections.namedtuple('CopyResult', ['outcome', 'reason'])


def store_state(record: Any, store: str) -> str:
    """Where ``store`` stands in the record: present/importing/failed/absent.
    """
    if store in record.stores:
        return 'present'
    if store in record.importing_to_stores:
        return 'importing'
    if store in record.failed_import_stores:
        return 'failed'
    return 'absent'


class StoreCopier:
    """Copies images into ``[glance] rbd_store_name`` and waits, bounded."""

    def __init__(self, conf: Any, glance_api: Any, clock: Any = time.monotonic,
                 sleep: Any = time.sleep) -> None:
        self.conf = conf
        self.glance = glance_api
        self._clock = clock
        self._sleep = sleep
        # One waiter per image on this host; other hosts meet in Glance.
        self._locks = lockutils.Semaphores()

    def copy(self, context: Any, image_id: str, store: str) -> CopyResult:
        """Have Glance copy the image into ``store`` and wait for it.

        :returns: a :class:`CopyResult`; ``COPIED`` once ``store`` is among
            the image's stores, else why not (never raises for Glance's
            answers: the caller downloads instead).
        """
        with lockutils.lock('copy-%s' % image_id, semaphores=self._locks):
            try:
                return self._copy(context, image_id, store)
            except exception.ImagedException as e:
                return CopyResult(REFUSED, str(e))

    def _read(self, context, image_id):
        # The caller read this record already: watch the copy with its rights.
        return self.glance.show(context, image_id)

    def _copy(self, context, image_id, store):
        """Ask once Glance has no copy under way; poll the record every
        ``copy_poll_interval`` until it tells, at most ``copy_timeout``."""
        deadline = self._clock() + self.conf.glance.copy_timeout
        watch = {'looks': 0, 'requests': 0,
                 'started': False}  # Glance accepted our request: never re-ask

        def look():
            state = store_state(self._read(context, image_id), store)
            # A failure on the record at the first look is an older
            # attempt's until Glance clears it when it starts the copy
            # asked for now.
            if watch['looks'] == 0:
                watch['failure_is_news'] = state != 'failed'
            elif state != 'failed':
                watch['failure_is_news'] = True
            watch['looks'] += 1
            watch['state'] = state
            return self._step(context, image_id, store, watch)

        def timed_out(retry_state):
            return CopyResult(TIMED_OUT, 'store %s did not list the image '
                              'within %ss' %
                              (store, self.conf.glance.copy_timeout))
        return tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda result: result is None),
            stop=lambda retry_state: deadline - self._clock() <= 0,
            wait=lambda retry_state: max(min(
                self.conf.glance.copy_poll_interval,
                deadline - self._clock()), 0),
            sleep=self._sleep, retry_error_callback=timed_out)(look)

    def _step(self, context, image_id, store, watch):
        """What the record says now: a :class:`CopyResult`, or None to
        look again (after asking Glance for the copy if none is under
        way)."""
        state = watch['state']
        if state == 'present':
            return CopyResult(COPIED, None)
        if state == 'failed' and watch['failure_is_news']:
            return CopyResult(FAILED, 'Glance lists store %s in '
                              'os_glance_failed_import' % store)
        if not watch['started'] and (state == 'absent' or
                                     (state == 'failed' and
                                      watch['requests'] == 0)):
            if watch['requests'] >= MAX_REQUESTS:
                return CopyResult(REFUSED, 'Glance still answers 409 '
                                  'with no copy into %s under way' % store)
            answer, detail = self.glance.copy_to_store(
                image_id, store, context=context)
            watch['requests'] += 1
            if answer == glance.COPY_REFUSED:
                # "already present" is a 400: another host won the race.
                if store_state(self._read(context, image_id),
                               store) == 'present':
                    return CopyResult(COPIED, None)
                return CopyResult(REFUSED, detail)
            if answer == glance.COPY_STARTED:
                watch['started'] = True
                LOG.info('Asked Glance to copy image %s into store %s',
                         image_id, store)
            else:
                LOG.info('Glance is busy importing image %s (%s); '
                         'waiting for the copy into store %s', image_id,
                         detail, store)
        return None
