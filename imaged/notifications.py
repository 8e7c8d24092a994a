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

"""The notifications imaged sends, through oslo.messaging's Notifier.

Configured by ``[oslo_messaging_notifications]`` as in every OpenStack
service: with the default ``driver = noop`` nothing is sent. Every payload is
a plain dict with a ``version``; doc/source/operate/notifications.rst lists
each event and its keys, and a unit test holds its samples to what this
module sends.

Sending never raises into the caller's work: oslo.messaging logs a failed
send, and imaged bounds the broker retries (``retry``, 3 by default here
instead of oslo.messaging's "forever"), so a dead broker cannot hang a call.
"""

import time

from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_utils import units

from imaged import context
from imaged import metrics as imaged_metrics
from imaged import rpc

LOG = logging.getLogger(__name__)

PAYLOAD_VERSION = '1.0'
PUBLISHER = 'imaged'
NOTIFY_RETRY = 3


def _safe_context(ctxt):
    """A context with no token or credential in it, for the bus.

    oslo.messaging's Notifier redacts a RequestContext too; imaged does not
    depend on it, whatever context it was given.
    """
    if isinstance(ctxt, context.RequestContext):
        return ctxt.redacted_copy()
    if isinstance(ctxt, dict):
        return context.RequestContext.from_dict(ctxt).redacted_copy()
    return context.RequestContext(overwrite=False)


def _mb_per_s(nbytes, seconds):
    return round(nbytes / units.Mi / max(seconds, 1e-6), 1)


def _error(error):
    # The first line only: remote errors carry the agent's traceback.
    return {'error_class': type(error).__name__.removesuffix('_Remote'),
            'error_message': str(error).split('\n', 1)[0]}


def _notifier_from_conf(conf):
    # Registers [oslo_messaging_notifications] too.
    transport = messaging.get_notification_transport(conf)
    retry = conf.oslo_messaging_notifications.retry
    return messaging.Notifier(
        transport, serializer=rpc.RequestContextSerializer(),
        retry=retry if retry >= 0 else NOTIFY_RETRY)


class Notifications:
    """One agent's notifier, publisher ``imaged.<host>``.

    :param notifier: an ``oslo_messaging.Notifier``; by default one built
        from ``conf`` on the notification transport.
    """

    def __init__(self, conf, host, notifier=None, metrics=None):
        # The same events count in the agent's metrics, sent or not.
        self.metrics = metrics or imaged_metrics.Metrics()
        if notifier is None:
            notifier = _notifier_from_conf(conf)
        # No driver, or only noop: off (oslo's is_enabled() misses the
        # first).
        drivers = set(conf.oslo_messaging_notifications.driver)
        self._enabled = bool(drivers - {'noop'})
        self._notifier = notifier.prepare(
            publisher_id='%s.%s' % (PUBLISHER, host))
        self.host = host
        self.progress_interval = conf.glance.progress_interval

    def _send(self, ctxt, event_type, payload, priority='info'):
        if not self._enabled:
            return
        payload = dict(payload, version=PAYLOAD_VERSION)
        getattr(self._notifier, priority)(_safe_context(ctxt), event_type,
                                          payload)

    # -- root disks (sent by the manager) ------------------------------------

    def create_start(self, ctxt, instance_uuid, image_id, size_bytes):
        self._send(ctxt, 'root_disk.create.start',
                   {'instance_uuid': instance_uuid, 'image_id': image_id,
                    'size_bytes': size_bytes})

    def create_end(self, ctxt, disk):
        """``disk`` is create_root_disk's result."""
        self._send(ctxt, 'root_disk.create.end',
                   {'instance_uuid': disk['instance_uuid'],
                    'image_id': disk['image_id'],
                    'size_bytes': disk['size_bytes'],
                    'strategy': disk['strategy'],
                    'parent': disk['parent'],
                    'timings': list(disk.get('timings') or []),
                    'signature': disk.get('signature')})

    def create_error(self, ctxt, instance_uuid, image_id, size_bytes, error):
        self._send(ctxt, 'root_disk.create.error',
                   dict(_error(error), instance_uuid=instance_uuid,
                        image_id=image_id, size_bytes=size_bytes),
                   priority='error')

    def snapshot_start(self, ctxt, instance_uuid, image_id):
        self._send(ctxt, 'root_disk.snapshot.start',
                   {'instance_uuid': instance_uuid, 'image_id': image_id})

    def snapshot_end(self, ctxt, result):
        """``result`` is snapshot_root_disk's result."""
        self._send(ctxt, 'root_disk.snapshot.end',
                   {'instance_uuid': result['instance_uuid'],
                    'image_id': result['image_id'],
                    'strategy': result['strategy'],
                    'size_bytes': result['size_bytes'],
                    'timings': list(result.get('timings') or [])})

    def snapshot_progress(self, ctxt, instance_uuid, image_id, step, done,
                          total, seconds):
        """``step`` copy (the flatten in Ceph: librbd counts objects) or
        upload (bytes); ``done`` of ``total``, sent as a percentage."""
        percent = round(100.0 * done / total, 1) if total else 100.0
        self._send(ctxt, 'root_disk.snapshot.progress',
                   {'instance_uuid': instance_uuid, 'image_id': image_id,
                    'step': step, 'percent': percent,
                    'seconds': round(seconds, 3)})

    def snapshot_progress_reporter(self, ctxt, instance_uuid, image_id,
                                   step):
        """A callable ``report(done, total)`` (librbd's ``on_progress``:
        it returns 0) that sends ``root_disk.snapshot.progress`` at most
        every ``[glance] progress_interval`` seconds."""
        return _SnapshotProgress(self, ctxt, instance_uuid, image_id, step)

    def snapshot_error(self, ctxt, instance_uuid, image_id, error):
        self._send(ctxt, 'root_disk.snapshot.error',
                   dict(_error(error), instance_uuid=instance_uuid,
                        image_id=image_id), priority='error')

    def delete_end(self, ctxt, instance_uuid):
        self._send(ctxt, 'root_disk.delete.end',
                   {'instance_uuid': instance_uuid})

    # -- downloads (sent by the download code) -------------------------------

    def fetch_start(self, image_id, total_bytes):
        """A download from Glance begins; ``total_bytes`` may be None."""
        self._send(None, 'image.fetch.start',
                   {'image_id': image_id, 'total_bytes': total_bytes})

    def fetch_progress(self, image_id, nbytes, total_bytes, seconds):
        self._send(None, 'image.fetch.progress',
                   {'image_id': image_id, 'bytes': nbytes,
                    'total_bytes': total_bytes,
                    'seconds': round(seconds, 3),
                    'mb_per_s': _mb_per_s(nbytes, seconds)})

    def fetch_end(self, image_id, nbytes, seconds, retries):
        self.metrics.downloaded(nbytes, seconds)
        self._send(None, 'image.fetch.end',
                   {'image_id': image_id, 'bytes': nbytes,
                    'seconds': round(seconds, 3),
                    'mb_per_s': _mb_per_s(nbytes, seconds),
                    'retries': retries})

    def fetch_error(self, image_id, nbytes, seconds, retries, error):
        self.metrics.downloaded(nbytes, seconds, error)
        self._send(None, 'image.fetch.error',
                   dict(_error(error), image_id=image_id, bytes=nbytes,
                        seconds=round(seconds, 3),
                        mb_per_s=_mb_per_s(nbytes, seconds),
                        retries=retries),
                   priority='error')

    def fetch_progress_reporter(self, image_id, total_bytes):
        """A callable ``report(bytes_so_far)`` that sends
        ``image.fetch.progress`` at most every ``[glance] progress_interval``
        seconds; call it as often as convenient."""
        return _ProgressReporter(self, image_id, total_bytes)

    # -- the cache (sent by the cache and the purge) --------------------------

    def evict(self, image_id, where, reason):
        """A base was removed: ``where`` file|rbd, ``reason`` age|size|
        deleted."""
        self.metrics.evicted(where, reason)
        self._send(None, 'image_cache.evict',
                   {'image_id': image_id, 'where': where, 'reason': reason})

    def lazy_base(self, image_id, pool, name, outcome, error=None):
        """A lazy base ([image_cache] lazy_first_disk) was ``published``
        (copied, checked, renamed) or ``quarantined`` (never published:
        ``error`` says why; disks cloned from it keep it)."""
        self.metrics.lazy_base(outcome)
        payload = {'image_id': image_id, 'pool': pool, 'name': name}
        if error is None:
            self._send(None, 'image_cache.lazy_base.%s' % outcome, payload)
        else:
            self._send(None, 'image_cache.lazy_base.%s' % outcome,
                       dict(_error(error), **payload), priority='error')

    # -- cache_images (sent by the precache) ----------------------------------

    def cache_images_start(self, ctxt, total):
        self._send(ctxt, 'cache_images.start',
                   {'host': self.host, 'total': total})

    def cache_images_progress(self, ctxt, index, total, image_id, status,
                              images_cached, images_failed):
        self._send(ctxt, 'cache_images.progress',
                   {'host': self.host, 'index': index, 'total': total,
                    'image_id': image_id, 'status': status,
                    'images_cached': list(images_cached),
                    'images_failed': list(images_failed)})

    def cache_images_end(self, ctxt, total, images_cached, images_failed):
        self._send(ctxt, 'cache_images.end',
                   {'host': self.host, 'total': total,
                    'images_cached': list(images_cached),
                    'images_failed': list(images_failed)})


class _ProgressReporter:

    def __init__(self, notifications, image_id, total_bytes):
        self.notifications = notifications
        self.image_id, self.total_bytes = image_id, total_bytes
        self.interval = notifications.progress_interval
        self.start = self._last = time.monotonic()

    def __call__(self, nbytes):
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        self.notifications.fetch_progress(self.image_id, nbytes,
                                          self.total_bytes, now - self.start)


class _SnapshotProgress:

    def __init__(self, notifications, ctxt, instance_uuid, image_id, step):
        self.notifications, self.ctxt = notifications, ctxt
        self.instance_uuid, self.image_id, self.step = (instance_uuid,
                                                        image_id, step)
        self.interval = notifications.progress_interval
        self.start = self._last = time.monotonic()

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self._last >= self.interval or done >= total:
            self._last = now
            self.notifications.snapshot_progress(
                self.ctxt, self.instance_uuid, self.image_id, self.step,
                done, total, now - self.start)
        return 0


class FetchReport:
    """A download's notifications, as one context manager; with
    ``notifications`` None it only counts.

    Sends ``image.fetch.start`` on entry and ``image.fetch.end`` or
    ``image.fetch.error`` on exit; call ``report.attempt()`` as each
    attempt begins and pass its body through ``report.count(blocks)`` to
    count retries and bytes and send ``image.fetch.progress``::

        with FetchReport(notifications, image_id, size) as report:
            for attempt in download.attempts(...):
                with attempt:
                    report.attempt()
                    download.stream(image, report.count(body), ...)
    """

    def __init__(self, notifications, image_id, total_bytes):
        self.notifications = notifications
        self.image_id, self.total_bytes = image_id, total_bytes
        self.bytes = 0
        self.retries = -1  # attempt() is called once per attempt
        self._progress = None

    def __enter__(self):
        self.start = time.monotonic()
        if self.notifications is not None:
            self.notifications.fetch_start(self.image_id, self.total_bytes)
        return self

    def attempt(self):
        """A new attempt begins: the first, or a retry from byte 0."""
        self.retries += 1
        self.bytes = 0
        if self.notifications is not None:
            self._progress = self.notifications.fetch_progress_reporter(
                self.image_id, self.total_bytes)

    def count(self, blocks):
        """``blocks``, unchanged, counted as this attempt's bytes."""
        for block in blocks:
            self.bytes += len(block)
            if self._progress is not None:
                self._progress(self.bytes)
            yield block

    def __exit__(self, exc_type, exc, tb):
        if self.notifications is None:
            return False
        seconds = time.monotonic() - self.start
        retries = max(self.retries, 0)
        if exc is None:
            self.notifications.fetch_end(self.image_id, self.bytes, seconds,
                                         retries)
        else:
            self.notifications.fetch_error(self.image_id, self.bytes,
                                           seconds, retries, exc)
        return False
