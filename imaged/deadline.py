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

"""How long the caller of one RPC call still waits for its answer.

A caller sends how long it waits, in seconds from now (hosts' clocks
differ), in the request context; an old caller or a raw oslo.messaging
client sends nothing and is taken to wait ``[DEFAULT] long_rpc_timeout``.
The agent turns that into a :class:`Deadline` when the call arrives,
keeps a small margin for the trip of the request and of the answer, and
attaches it to the context it passes down (``context.deadline``). Work
checks it between steps and caps its waits with it: past it, the caller
has given up, so the call cleans up and answers ``Timeout`` instead of
finishing a disk nobody will use.
"""

import math
import time
from typing import Any, Callable

from imaged import exception

# Kept back from the caller's wait: the request's trip here (not measurable
# across hosts), the answer's trip back, and the cleanup after a check.
MARGIN_FRACTION = 0.05
MAX_MARGIN = 5.0


def margin(timeout):
    """Seconds of ``timeout`` that work must leave unused."""
    return min(MAX_MARGIN, timeout * MARGIN_FRACTION)


class Deadline:
    """A point in time (monotonic) after which a call's answer is useless.

    :param seconds: time left from now; ``None`` for no deadline (work
        not done for a caller, such as periodic tasks).
    """

    def __init__(self, seconds, clock=time.monotonic):
        self._clock = clock
        self._start = clock()
        self.seconds = math.inf if seconds is None else max(0.0, seconds)
        self._end = self._start + self.seconds

    @classmethod
    def for_call(cls, call_timeout: float | None, default_timeout: float,
                 clock: Callable[[], float] = time.monotonic
                 ) -> 'Deadline':
        """The deadline of a call received now whose caller waits
        ``call_timeout`` seconds (``None``: ``default_timeout``)."""
        timeout = default_timeout if call_timeout is None else call_timeout
        return cls(timeout - margin(timeout), clock=clock)

    def elapsed(self) -> float:
        return self._clock() - self._start

    def remaining(self) -> float:
        """Seconds left, 0 once past; ``math.inf`` without a deadline."""
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self._end

    def cap(self, timeout: float | None) -> float | None:
        """``timeout`` (seconds, ``None`` for none) shortened to the time
        left: what to give a bounded wait, e.g. ``lock.acquire(timeout=
        deadline.cap(60))``. ``None`` only if both are unbounded."""
        remaining = self.remaining()
        if remaining == math.inf:
            return timeout
        return remaining if timeout is None else min(timeout, remaining)

    def check(self, what: str) -> None:
        """:raises Timeout: naming ``what`` once the deadline has passed."""
        if self.expired():
            raise exception.Timeout(what=what,
                                    seconds=round(self.elapsed(), 1))

    def __repr__(self):
        return '<Deadline %.1fs of %.1fs left>' % (self.remaining(),
                                                   self.seconds)


UNBOUNDED = Deadline(None)


def of(context: Any) -> Deadline:
    """The deadline attached to ``context``, else one that never passes."""
    return getattr(context, 'deadline', None) or UNBOUNDED
