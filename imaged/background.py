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

"""Bounded background work: the flattens ``[rbd] flatten_root_disks =
background`` asks for after each new clone.

A bounded queue (``[rbd] background_flatten_queue`` disks) served by a
fixed pool of workers (``[rbd] concurrent_flatten_operations``): a storm of
200 clones is 200 queue entries and a few threads, never 200 threads. A
disk that finds the queue full stays a clone (it is a good disk; a later
``flatten_root_disk`` or a longer chain flattens it), and says so.

Each flatten holds the disk's locks, as a call does, so a delete waits for
it; a delete first :meth:`~BackgroundFlattens.cancel`\\ s it: a queued disk
leaves the queue, a running flatten is stopped by librbd (its progress
callback asks it to), and the delete takes the lock at once.
"""

import collections
import threading

from oslo_log import log as logging

from imaged import exception

LOG = logging.getLogger(__name__)

# How long a background flatten waits for its disk's locks (seconds): a
# call holding them now (a delete, a snapshot) matters more.
LOCK_WAIT = 30


class BackgroundFlattens:
    """The queue of disks to flatten in the background, and its workers.

    :param flatten: ``flatten(name, cancelled)`` flattens disk ``name``
        with its locks held, stopping when ``cancelled()`` turns true.
    """

    def __init__(self, conf, flatten):
        self.conf = conf
        self._flatten = flatten
        self._cond = threading.Condition()
        self._queue = collections.OrderedDict()  # name -> None, in order
        self._running = {}  # name -> threading.Event (set: cancel it)
        self._workers = []
        self._closed = False
        self.dropped = 0  # disks that found the queue full

    @property
    def max_queued(self) -> int:
        return self.conf.rbd.background_flatten_queue

    @property
    def max_running(self) -> int:
        return self.conf.rbd.concurrent_flatten_operations

    def submit(self, name: str) -> bool:
        """Queue disk ``name``; False if the queue is full (or closed)."""
        with self._cond:
            if name in self._queue or name in self._running:
                return True
            if self._closed or len(self._queue) >= self.max_queued:
                self.dropped += 1
                LOG.warning('Background flatten queue full (%d disks): %s '
                            'stays a clone', len(self._queue), name)
                return False
            self._queue[name] = None
            self._start_workers()
            self._cond.notify()
        return True

    def cancel(self, name: str) -> bool:
        """Take ``name`` out of the queue, or stop its running flatten.

        :returns: whether there was anything to cancel.
        """
        with self._cond:
            if self._queue.pop(name, False) is None:
                LOG.info('Background flatten of %s cancelled before it '
                         'started', name)
                return True
            stop = self._running.get(name)
        if stop is None:
            return False
        stop.set()
        return True

    def stats(self) -> dict[str, int]:
        """``{'queued', 'running', 'max_queued', 'max_running',
        'dropped'}``: for metrics and ``get_capabilities``."""
        with self._cond:
            return {'queued': len(self._queue),
                    'running': len(self._running),
                    'max_queued': self.max_queued,
                    'max_running': self.max_running,
                    'dropped': self.dropped}

    def close(self) -> None:
        """No more work: queued disks stay clones, running flattens stop."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            for stop in self._running.values():
                stop.set()
            self._cond.notify_all()

    def _start_workers(self):
        # With the condition held.
        self._workers = [w for w in self._workers if w.is_alive()]
        while len(self._workers) < self.max_running:
            worker = threading.Thread(
                target=self._serve, daemon=True,
                name='flatten-worker-%d' % len(self._workers))
            worker.start()
            self._workers.append(worker)

    def _next(self):
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None, None
            name, _none = self._queue.popitem(last=False)
            stop = self._running[name] = threading.Event()
            return name, stop

    def _serve(self):
        while True:
            name, stop = self._next()
            if name is None:
                return
            try:
                self._flatten(name, stop.is_set)
            except exception.FlattenCancelled:
                LOG.info('Background flatten of %s stopped: %s', name,
                         'cancelled' if stop.is_set() else 'by Ceph')
            except Exception as e:  # the disk is fine as a clone
                LOG.warning('Background flatten of %s failed: %s', name, e)
            finally:
                with self._cond:
                    self._running.pop(name, None)
