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

"""The long-call gate: a few long calls at once, a bounded queue behind.

Long calls (``create_root_disk``, ``cache_images``) pass through
:class:`LongCalls`: each wait is bounded by the call's deadline, a full
queue answers ``AgentBusy`` at once; short calls never wait here.
"""

import collections
import contextlib
import threading
import time
from typing import Any, Callable, Iterator, TYPE_CHECKING

from oslo_log import log as logging

from imaged import exception
from imaged.i18n import _

if TYPE_CHECKING:
    from imaged.deadline import Deadline

LOG = logging.getLogger(__name__)


class _Turn:
    """A long call's place in the queue."""

    def __init__(self):
        self.event = threading.Event()
        self.admitted = False


class _Call:
    """A long call the agent holds: what it is, since when."""

    def __init__(self, method, ids, clock=time.monotonic):
        self.method = method
        self.ids = ids
        self.since = clock()
        self.running = False


class LongCalls:
    """Admits long calls: ``max_running`` at once, ``max_queued`` waiting.

    Waiting calls are admitted in the order they came. A waiting call holds
    its oslo.messaging executor thread, so the executor has a thread for
    each running and waiting long call and some more for short calls
    (``imaged.rpc.executor_threads``): a long call never keeps a short one
    waiting.
    """

    def __init__(self, host: str, max_running: int,
                 max_queued: int) -> None:
        self.host = host
        self.max_running = max_running
        self.max_queued = max_queued
        self._lock = threading.Lock()
        self._running = 0
        self._queue: collections.deque[_Turn] = collections.deque()
        self._closed = False
        self._refused = 0
        self._expired = 0
        # The _Call of each call running or waiting.
        self._calls: list[_Call] = []

    @property
    def capacity(self) -> int:
        """Executor threads that long calls can hold at once."""
        return self.max_running + self.max_queued

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {'long_running': self._running,
                    'long_queued': len(self._queue),
                    'max_concurrent_long_calls': self.max_running,
                    'max_queued_long_calls': self.max_queued,
                    'long_refused': self._refused,
                    'long_expired': self._expired}

    def in_flight(self, clock: Callable[[], float] = time.monotonic
                  ) -> list[dict[str, Any]]:
        """The long calls running and waiting, oldest first: what a Guru
        Meditation Report shows (``imaged.reports``)."""
        with self._lock:
            calls = list(self._calls)
        now = clock()
        return [dict(call.ids, method=call.method,
                     state='running' if call.running else 'queued',
                     age=round(now - call.since, 1)) for call in calls]

    @contextlib.contextmanager
    def admitted(self, call_deadline: 'Deadline', method: str = '?',
                 **ids: str) -> Iterator[None]:
        """Held while one long call works.

        :param method: the RPC method, and ``ids`` (``instance_uuid``,
            ``image_ids``...) what it works on, for :meth:`in_flight`.
        :raises AgentBusy: the queue is full, or the agent is stopping.
        :raises Timeout: ``call_deadline`` passed before the call could
            start; it did nothing.
        """
        call = _Call(method, ids)
        with self._lock:
            self._calls.append(call)
        try:
            self._enter(call_deadline)
            call.running = True
            try:
                yield
            finally:
                self._leave()
        finally:
            with self._lock:
                self._calls.remove(call)

    def _timeout(self, call_deadline):
        return exception.Timeout(
            what=_('a place among the long calls on host %s') % self.host,
            seconds=round(call_deadline.elapsed(), 1))

    def _busy(self, reason):
        return exception.AgentBusy(host=self.host, reason=reason)

    def _enter(self, call_deadline):
        with self._lock:
            if self._closed:
                raise self._busy(_('it is stopping'))
            if call_deadline.expired():
                self._expired += 1
                raise self._timeout(call_deadline)
            if self._running < self.max_running and not self._queue:
                self._running += 1
                return
            if len(self._queue) >= self.max_queued:
                self._refused += 1
                raise self._busy(
                    _('%(running)d long calls running and %(queued)d '
                      'waiting, its limits') %
                    {'running': self._running, 'queued': len(self._queue)})
            turn = _Turn()
            self._queue.append(turn)
            LOG.debug('Long call waits: %d running, %d waiting',
                      self._running, len(self._queue))
        turn.event.wait(call_deadline.cap(None))
        with self._lock:
            if not turn.admitted:
                if self._closed:
                    raise self._busy(_('it is stopping'))
                self._queue.remove(turn)
                self._expired += 1
                raise self._timeout(call_deadline)
        if call_deadline.expired():  # admitted just as its caller gave up
            self._leave()
            with self._lock:
                self._expired += 1
            raise self._timeout(call_deadline)

    def _leave(self):
        with self._lock:
            if self._queue:
                # The place goes to the next call: the count stays.
                turn = self._queue.popleft()
                turn.admitted = True
                turn.event.set()
            else:
                self._running -= 1

    def close(self) -> None:
        """Refuse new long calls and those waiting (the agent stops)."""
        with self._lock:
            self._closed = True
            while self._queue:
                self._queue.popleft().event.set()
