"""The RPC endpoint: validates every argument, then delegates.

Long calls (``create_root_disk``, ``cache_images``) pass through
:class:`LongCalls`: a few at once, a bounded queue behind them, each wait
bounded by the call's deadline; short calls never wait there.
"""

import collections
import contextlib
import functools
import threading
import time
import uuid

import oslo_messaging as messaging
from oslo_log import log as logging
from oslo_service import periodic_task
from oslo_utils import units

from imaged import deadline
from imaged import exception
from imaged.i18n import _
from imaged import notifications as imaged_notifications
from imaged import precache
from imaged import purge
from imaged import rpcapi
from imaged import version

LOG = logging.getLogger(__name__)

HEALTH_TTL = 2.0
# Another host's partial image older than this (or than [glance]
# download_timeout) and open nowhere was abandoned by a host that died.
ABANDONED_PARTIAL_AGE = 3600
# One cache_images call names at most this many images.
MAX_PRECACHE_IMAGES = 256


def validate_uuid(argument, value):
    """The canonical (lower-case, hyphenated) form of a UUID argument."""
    if not isinstance(value, str):
        raise exception.InvalidInput(
            argument=argument, reason=_('must be a UUID string, not %s') %
            type(value).__name__)
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = None
    if canonical is None or canonical != value.lower():
        raise exception.InvalidInput(
            argument=argument,
            reason=_('%r is not a UUID like '
                     '123e4567-e89b-12d3-a456-426614174000') % value[:80])
    return canonical


def validate_size_gb(value, maximum):
    if type(value) is not int:  # bool is an int, but not a size
        raise exception.InvalidInput(
            argument='size_gb', reason=_('must be a whole number of GiB, '
                                         'not %r') % (value,))
    if not 1 <= value <= maximum:
        raise exception.InvalidInput(
            argument='size_gb', reason=_('%(value)d is outside 1..%(max)d') %
            {'value': value, 'max': maximum})
    return value


def validate_image_ids(value, maximum=MAX_PRECACHE_IMAGES):
    """Canonical, distinct image ids; refuses the list as a whole."""
    if not isinstance(value, list):
        raise exception.InvalidInput(
            argument='image_ids', reason=_('must be a list of image UUIDs, '
                                           'not %s') % type(value).__name__)
    if not 1 <= len(value) <= maximum:
        raise exception.InvalidInput(
            argument='image_ids',
            reason=_('must name 1..%(max)d images, not %(n)d') %
            {'max': maximum, 'n': len(value)})
    image_ids = [validate_uuid('image_ids[%d]' % i, image_id)
                 for i, image_id in enumerate(value)]
    seen = set()
    for i, image_id in enumerate(image_ids):
        if image_id in seen:
            raise exception.InvalidInput(
                argument='image_ids[%d]' % i,
                reason=_('%s is named twice') % image_id)
        seen.add(image_id)
    return image_ids


def _reject_unexpected(method, unexpected):
    if unexpected:
        raise exception.InvalidInput(
            argument=', '.join(sorted(unexpected)),
            reason=_('not an argument of %s') % method)


def _require(argument, value):
    if value is None:
        raise exception.InvalidInput(argument=argument,
                                     reason=_('missing'))


def remote_errors(func):
    """Send imaged's typed errors to the caller without a server traceback.

    Anything else is a bug or a failure nobody typed: it is logged with its
    traceback here and reaches the caller as ``InternalError``.
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except exception.ImagedException as e:
            LOG.info('%s refused: %s', func.__name__, e)
            raise messaging.ExpectedException()
        except Exception as e:
            LOG.exception('%s failed unexpectedly', func.__name__)
            try:
                raise exception.InternalError(
                    operation=func.__name__,
                    reason='%s: %s' % (type(e).__name__, e)) from e
            except exception.InternalError:
                raise messaging.ExpectedException()
    return wrapper


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

    def __init__(self, host, max_running, max_queued):
        self.host = host
        self.max_running = max_running
        self.max_queued = max_queued
        self._lock = threading.Lock()
        self._running = 0
        self._queue = collections.deque()
        self._closed = False
        self._refused = 0
        self._expired = 0
        self._calls = []  # _Call of each call running or waiting

    @property
    def capacity(self):
        """Executor threads that long calls can hold at once."""
        return self.max_running + self.max_queued

    def stats(self):
        with self._lock:
            return {'long_running': self._running,
                    'long_queued': len(self._queue),
                    'max_concurrent_long_calls': self.max_running,
                    'max_queued_long_calls': self.max_queued,
                    'long_refused': self._refused,
                    'long_expired': self._expired}

    def in_flight(self, clock=time.monotonic):
        """The long calls running and waiting, oldest first: what a Guru
        Meditation Report shows (``imaged.reports``)."""
        with self._lock:
            calls = list(self._calls)
        now = clock()
        return [dict(call.ids, method=call.method,
                     state='running' if call.running else 'queued',
                     age=round(now - call.since, 1)) for call in calls]

    @contextlib.contextmanager
    def admitted(self, call_deadline, method='?', **ids):
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

    def close(self):
        """Refuse new long calls and those waiting (the agent stops)."""
        with self._lock:
            self._closed = True
            while self._queue:
                self._queue.popleft().event.set()


class ImageAgentManager(periodic_task.PeriodicTasks):
    """Serves ``imaged.rpcapi.ImageAgentAPI`` on one compute host."""

    target = messaging.Target(version=rpcapi.RPC_API_VERSION)

    def __init__(self, conf, host, root_disks, storage, cache, glance_api,
                 notifications=None):
        super().__init__(conf)
        self.host = host
        self.root_disks = root_disks
        self.storage = storage
        self.cache = cache
        self.glance = glance_api
        self.notifications = notifications or \
            imaged_notifications.Notifications(conf, host)
        self.precache = precache.Precache(conf, root_disks,
                                          self.notifications)
        self.purge = purge.DeletedImagePurge(conf, glance_api, root_disks,
                                             self.notifications)
        self._healthy = None  # (valid until, fsid) of the last good check
        self.long_calls = LongCalls(host, conf.max_concurrent_long_calls,
                                    conf.max_queued_long_calls)
        self._periodic_spacing = dict(
            self._periodic_spacing,
            _clean_image_cache=conf.image_cache.manager_interval)

    def init_host(self):
        """Start-up: clean the cache's and the pool's leftovers."""
        self.cache.prepare()
        fsid, problems = self.storage.status()
        problems += self.glance.check_health()
        for problem in problems:
            LOG.warning('Not ready to make root disks: %s (retrying in the '
                        'background)', problem)
        # Partial images left by a crash are removed by the periodic task,
        # which runs right away: removing one that a killed process still
        # watches can take half a minute, and must not delay serving.

    def _start_deadline(self, context):
        """Attach the call's deadline to its context, as it arrives."""
        context.deadline = deadline.Deadline.for_call(
            getattr(context, 'call_timeout', None),
            self.conf.long_rpc_timeout)
        LOG.debug('Call deadline: %r', context.deadline)

    # -- RPC API 1.0 ----------------------------------------------------------

    @messaging.expose
    @remote_errors
    def create_root_disk(self, context, instance_uuid=None, image_id=None,
                         size_gb=None, **unexpected):
        self._start_deadline(context)
        _reject_unexpected('create_root_disk', unexpected)
        for argument, value in (('instance_uuid', instance_uuid),
                                ('image_id', image_id), ('size_gb', size_gb)):
            _require(argument, value)
        instance_uuid = validate_uuid('instance_uuid', instance_uuid)
        image_id = validate_uuid('image_id', image_id)
        size_gb = validate_size_gb(size_gb, self.conf.max_root_disk_gb)
        size_bytes = size_gb * units.Gi
        self.notifications.create_start(context, instance_uuid, image_id,
                                        size_bytes)
        try:
            with self.long_calls.admitted(context.deadline,
                                          'create_root_disk',
                                          instance_uuid=instance_uuid,
                                          image_id=image_id):
                disk = self.root_disks.create(context, instance_uuid,
                                              image_id, size_gb)
        except Exception as e:
            self.notifications.create_error(context, instance_uuid,
                                            image_id, size_bytes, e)
            raise
        self.notifications.create_end(context, disk)
        return disk

    @messaging.expose
    @remote_errors
    def delete_root_disk(self, context, instance_uuid=None, **unexpected):
        self._start_deadline(context)
        _reject_unexpected('delete_root_disk', unexpected)
        _require('instance_uuid', instance_uuid)
        instance_uuid = validate_uuid('instance_uuid', instance_uuid)
        self.root_disks.delete(instance_uuid)
        self.notifications.delete_end(context, instance_uuid)

    @messaging.expose
    @remote_errors
    def list_cached_images(self, context, **unexpected):
        _reject_unexpected('list_cached_images', unexpected)
        return self.root_disks.list_cached_images()

    @messaging.expose
    @remote_errors
    def get_capabilities(self, context, **unexpected):
        _reject_unexpected('get_capabilities', unexpected)
        fsid, problems = self._health()
        return {'version': version.version_string(),
                'host': self.host,
                'backend': 'rbd',
                'fsid': fsid,
                'pool': self.storage.pool,
                'cache': self.cache.usage(),
                'calls': self.long_calls.stats(),
                'problems': problems}

    # -- RPC API 1.1 ----------------------------------------------------------

    @messaging.expose
    @remote_errors
    def cache_images(self, context, image_ids=None, **unexpected):
        self._start_deadline(context)
        _reject_unexpected('cache_images', unexpected)
        _require('image_ids', image_ids)
        image_ids = validate_image_ids(image_ids)
        with self.long_calls.admitted(context.deadline, 'cache_images',
                                      image_ids=image_ids):
            return self.precache.run(context, image_ids)

    def _health(self):
        """``(fsid, problems)``; a healthy answer is reused for a moment.

        Callers may poll get_capabilities often; a problem is always
        looked for afresh, so it shows within ``HEALTH_TTL`` seconds.
        """
        now = time.monotonic()
        if self._healthy is not None and now < self._healthy[0]:
            return self._healthy[1], []
        fsid, problems = self.storage.status()
        problems += self.glance.check_health()
        self._healthy = None if problems else (now + HEALTH_TTL, fsid)
        return fsid, problems

    # -- periodic tasks -------------------------------------------------------

    @periodic_task.periodic_task(spacing=600)
    def _clean_image_cache(self, context):
        # This host's base files, on every host.
        removed = self.cache.clean()
        if removed:
            LOG.info('Image cache cleanup removed %d base files',
                     len(removed))
        for entry in removed:
            if entry['where'] == 'file':  # 'rbd' entries are only records
                self.notifications.evict(entry['image_id'], 'file',
                                         entry.get('reason', 'age'))
        # What the pool shares, by one host at a time.
        pool_wide = self._does_pool_cleanup()
        if pool_wide:
            self._clean_pool()
        try:
            self.root_disks.forget_removed_bases()
            cached = [entry['image_id'] for entry in
                      self.root_disks.list_cached_images()
                      if pool_wide or entry['where'] == 'file']
            bases = self.storage.bases.image_ids() if pool_wide else ()
        except exception.ImagedException as e:
            LOG.warning('Cannot list the cached images now: %s', e)
            return
        self.purge.run(cached, bases)

    def _does_pool_cleanup(self):
        policy = self.conf.image_cache.pool_cleanup
        if policy != 'elect':
            return policy == 'always'
        try:
            return self.storage.holds_cleanup_role(
                self.conf.image_cache.manager_interval)
        except exception.ImagedException as e:
            LOG.warning('Cannot tell which host cleans the pool now: %s', e)
            return False

    def _clean_pool(self):
        """The pool-wide part of the cleanup: unused bases, other hosts'
        abandoned partial images."""
        try:
            for image_id in self.root_disks.clean_rbd_bases():
                self.notifications.evict(image_id, 'rbd', 'age')
        except exception.ImagedException as e:
            LOG.warning('Cannot clean base images in Ceph now: %s', e)
        try:
            self.storage.partials.sweep_abandoned(
                max(self.conf.glance.download_timeout, ABANDONED_PARTIAL_AGE))
        except exception.ImagedException as e:
            LOG.warning('Cannot clean abandoned partial images now: %s', e)

    @periodic_task.periodic_task(spacing=30, run_immediately=True)
    def _remove_partial_disks(self, context):
        # Right after start-up (the pool is listed once), and then the
        # partial images this process could not remove when its call
        # failed (Ceph down, a lingering watch): they must not stay.
        try:
            self.storage.remove_partial_disks()
        except exception.ImagedException as e:
            LOG.warning('Cannot clean partial images now: %s', e)
