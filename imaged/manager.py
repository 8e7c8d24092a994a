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

"""The RPC endpoint: validates every argument, identifies the caller with
Keystone (:mod:`imaged.policy`: the context's claims are replaced by what
Keystone says of its token), then delegates.

Long calls (``create_root_disk``, ``cache_images``, ``flatten_root_disk``,
``snapshot_root_disk``) pass through the long-call gate
(:mod:`imaged.calls`); the periodic cleanup, of leftovers and of the image
cache, has one owner and one schedule (:mod:`imaged.leftovers`).
"""

import contextlib
import functools
import time

from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_utils import units

from imaged import context as imaged_context
from imaged import deadline
from imaged import exception
from imaged.i18n import _
from imaged import leftovers
from imaged import policy
from imaged import rootdisk
from imaged import rpcapi
from imaged import validate
from imaged import version

LOG = logging.getLogger(__name__)

HEALTH_TTL = 2.0


def _reject_unexpected(method, unexpected):
    if unexpected:
        raise exception.InvalidInput(
            argument=', '.join(sorted(unexpected)),
            reason=_('not an argument of %s') % method)


def _require(argument, value):
    if value is None:
        raise exception.InvalidInput(argument=argument,
                                     reason=_('missing'))


def undeclared(method, error):
    """An error the call's contract (``rpcapi.METHODS``) does not name:
    the caller may not expect it. A bug here or in the contract; the
    caller still gets the error. (The unit tests make it fail.)"""
    LOG.error('%(method)s answered %(error)s, which its contract in '
              'imaged.rpcapi.METHODS does not name: please report this '
              'bug', {'method': method, 'error': type(error).__name__})


def remote_errors(func):
    """Send imaged's typed errors to the caller without a server traceback.

    Anything else is a bug or a failure nobody typed: it is logged with its
    traceback here and reaches the caller as ``InternalError``.
    """
    @functools.wraps(func)
    def wrapper(manager, *args, **kwargs):
        try:
            return func(manager, *args, **kwargs)
        except exception.ImagedException as e:
            LOG.info('%s refused: %s', func.__name__, e)
            if not rpcapi.declares(func.__name__, e):
                undeclared(func.__name__, e)
            manager.metrics.failed(func.__name__, e)
            raise messaging.ExpectedException()
        except Exception as e:
            LOG.exception('%s failed unexpectedly', func.__name__)
            try:
                raise exception.InternalError(
                    operation=func.__name__,
                    reason='%s: %s' % (type(e).__name__, e)) from e
            except exception.InternalError as typed:
                manager.metrics.failed(func.__name__, typed)
                raise messaging.ExpectedException()
    return wrapper


class ImageAgentManager:
    """Serves ``imaged.rpcapi.ImageAgentAPI`` on one compute host."""

    target = messaging.Target(version=rpcapi.RPC_API_VERSION)

    def __init__(self, agent):
        """:param agent: the parts :func:`imaged.wiring.build` made."""
        self.conf = agent.conf
        self.host = agent.host
        self.root_disks = agent.root_disks
        self.storage = agent.storage
        self.image_cache = agent.image_cache
        self.files = agent.files
        self.glance = agent.glance
        # One notifier (and one set of metrics) for the whole agent.
        self.notifications = agent.notifications
        self.precache = agent.precache
        self.snapshots = agent.snapshots
        self.flattening = agent.flattening
        self.flattens = agent.flattens
        self._healthy = None  # (valid until, fsid) of the last good check
        self._backends_up = {'ceph': False, 'glance': False}
        self.metrics = self.notifications.metrics
        self.metrics.watch_state(self._metrics_state)
        self.long_calls = agent.long_calls
        # Who each call comes from: Keystone's answer (imaged.policy).
        self.callers = agent.callers
        self.leftovers = agent.leftovers

    def init_host(self):
        """Start-up: the cache's directories, its scratch files gone."""
        self.files.prepare()
        self.leftovers.at_start()
        _fsid, problems = self.storage.status()
        problems += self.glance.check_health()
        for problem in problems:
            LOG.warning('Not ready to make root disks: %s (retrying in the '
                        'background)', problem)
        self._recover_lazy_bases()
        # Leftovers in Ceph are removed by the schedule, which runs right
        # away: removing one that a killed process still watches can take
        # half a minute, and must not delay serving.

    def _recover_lazy_bases(self):
        """The lazy bases a killed agent of this host left are finished in
        the background ([image_cache] lazy_first_disk)."""
        try:
            found = self.image_cache.lazy.recover(
                imaged_context.get_admin_context())
        except exception.ImagedException as e:
            LOG.error('Lazy bases left by a killed agent: not looked for '
                      'now (%s); the next call of each image finishes it', e)
            return
        if found:
            LOG.info('Finishing the lazy bases of images %s left by a '
                     'killed agent', ', '.join(found))

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
                         size_gb=None, trusted_certs=None, **unexpected):
        self._start_deadline(context)
        _reject_unexpected('create_root_disk', unexpected)
        for argument, value in (('instance_uuid', instance_uuid),
                                ('image_id', image_id), ('size_gb', size_gb)):
            _require(argument, value)
        instance_uuid = validate.validate_uuid('instance_uuid', instance_uuid)
        image_id = validate.validate_uuid('image_id', image_id)
        # New in 1.3; read where the signature is checked, as the deadline.
        context.trusted_certs = validate.validate_certificate_ids(
            trusted_certs)
        size_gb = validate.validate_size_gb(size_gb,
                                            self.conf.max_root_disk_gb)
        self.callers.identify(context, 'create_root_disk')
        size_bytes = size_gb * units.Gi
        self.notifications.create_start(context, instance_uuid, image_id,
                                        size_bytes)
        started = time.monotonic()
        try:
            with self._long_call(context, 'create_root_disk',
                                 instance_uuid=instance_uuid,
                                 image_id=image_id):
                disk = self.root_disks.create(context, instance_uuid,
                                              image_id, size_gb)
        except Exception as e:
            self.notifications.create_error(context, instance_uuid,
                                            image_id, size_bytes, e)
            raise
        self.notifications.create_end(context, disk)
        self.metrics.created(disk['strategy'], time.monotonic() - started)
        return disk

    @messaging.expose
    @remote_errors
    def delete_root_disk(self, context, instance_uuid=None, **unexpected):
        self._start_deadline(context)
        _reject_unexpected('delete_root_disk', unexpected)
        _require('instance_uuid', instance_uuid)
        instance_uuid = validate.validate_uuid('instance_uuid', instance_uuid)
        self.callers.identify(context, 'delete_root_disk')
        self.root_disks.delete(instance_uuid, context)
        self.notifications.delete_end(context, instance_uuid)

    @messaging.expose
    @remote_errors
    def list_cached_images(self, context, **unexpected):
        _reject_unexpected('list_cached_images', unexpected)
        caller = self.callers.identify(context, 'list_cached_images')
        # Which images a host holds says what every project runs.
        policy.check_privileged(caller, _('list the cached images'))
        return self.image_cache.list()

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
                'cache': self.image_cache.usage(),
                'calls': self.long_calls.stats(),
                'flattens': self.flattens.stats(),
                'problems': problems}

    # -- RPC API 1.1 ----------------------------------------------------------

    @messaging.expose
    @remote_errors
    def cache_images(self, context, image_ids=None, **unexpected):
        self._start_deadline(context)
        _reject_unexpected('cache_images', unexpected)
        _require('image_ids', image_ids)
        image_ids = validate.validate_image_ids(image_ids)
        if self.callers.identify(context, 'cache_images').anonymous:
            # An operator's call: it gives nobody a disk, so imaged reads
            # the images as its own user (imaged-client precache).
            context.caller = policy.trusted()
        with self._long_call(context, 'cache_images', image_ids=image_ids):
            return self.precache.run(context, image_ids)

    # -- RPC API 1.2 ----------------------------------------------------------

    @messaging.expose
    @remote_errors
    def flatten_root_disk(self, context, instance_uuid=None, **unexpected):
        self._start_deadline(context)
        _reject_unexpected('flatten_root_disk', unexpected)
        _require('instance_uuid', instance_uuid)
        instance_uuid = validate.validate_uuid('instance_uuid', instance_uuid)
        self.callers.identify(context, 'flatten_root_disk')
        with self._long_call(context, 'flatten_root_disk',
                             instance_uuid=instance_uuid):
            return self.flattening.flatten(context, instance_uuid)

    @messaging.expose
    @remote_errors
    def snapshot_root_disk(self, context, instance_uuid=None, image_id=None,
                           **unexpected):
        self._start_deadline(context)
        _reject_unexpected('snapshot_root_disk', unexpected)
        for argument, value in (('instance_uuid', instance_uuid),
                                ('image_id', image_id)):
            _require(argument, value)
        instance_uuid = validate.validate_uuid('instance_uuid', instance_uuid)
        image_id = validate.validate_uuid('image_id', image_id)
        self.callers.identify(context, 'snapshot_root_disk')
        self.notifications.snapshot_start(context, instance_uuid, image_id)
        try:
            with self._long_call(context, 'snapshot_root_disk',
                                 instance_uuid=instance_uuid,
                                 image_id=image_id):
                result = self.snapshots.snapshot(
                    context, instance_uuid, image_id, rootdisk.Timings())
        except Exception as e:
            self.notifications.snapshot_error(context, instance_uuid,
                                              image_id, e)
            raise
        self.notifications.snapshot_end(context, result)
        return result

    @contextlib.contextmanager
    def _long_call(self, context, method, **ids):
        """The long-call gate, its wait measured."""
        queued = time.monotonic()
        with self.long_calls.admitted(context.deadline, method, **ids):
            self.metrics.waited('long_call', time.monotonic() - queued)
            yield

    def _metrics_state(self):
        self._health()
        return {'calls': self.long_calls.stats(),
                'flattens': self.flattens.stats(),
                'cache_bytes': self.image_cache.usage()['used_bytes'],
                'backends': dict(self._backends_up)}

    def _health(self):
        """``(fsid, problems)``; a healthy answer is reused for a moment.

        Callers may poll get_capabilities often; a problem is always
        looked for afresh, so it shows within ``HEALTH_TTL`` seconds.
        """
        now = time.monotonic()
        if self._healthy is not None and now < self._healthy[0]:
            return self._healthy[1], []
        fsid, problems = self.storage.status()
        glance_problems = self.glance.check_health()
        self._backends_up = {'ceph': not problems,
                             'glance': not glance_problems}
        problems += glance_problems
        self._healthy = None if problems else (now + HEALTH_TTL, fsid)
        return fsid, problems

    # -- the one schedule -----------------------------------------------------

    def housekeeping(self):
        """One turn of :mod:`imaged.leftovers`' schedule (the service's
        timer): returns the seconds until the next."""
        try:
            return self.leftovers.tick()
        except Exception:
            # The next turn tries again; the timer must go on.
            LOG.exception('Cleanup failed')
            return leftovers.OWN_SWEEP_INTERVAL
