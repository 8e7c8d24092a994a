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

"""The client API other services import to call an imaged agent.

API version history:

* 1.0 - Initial version: create_root_disk, delete_root_disk,
        list_cached_images, get_capabilities.
* 1.1 - cache_images.
* 1.2 - flatten_root_disk, snapshot_root_disk.
* 1.3 - create_root_disk takes trusted_certs.

Every call's context says how long this client waits for the answer
(``imaged_call_timeout``, seconds): the agent gives up past that time
instead of making a disk nobody waits for. An agent that does not know the
field ignores it; no RPC version is needed.

A long call whose heartbeats stop (the agent's worker died: a crash, a
kill) is sent again, up to ``[DEFAULT] rpc_retries`` times, with the same
arguments and a fresh deadline: every long call is idempotent, so the
new worker finishes the work or finds it done. A long call that simply
ran past ``long_rpc_timeout`` is not sent again.
"""

import collections
import time

from oslo_log import log as logging
import oslo_messaging as messaging
import tenacity

from imaged import conf as imaged_conf
from imaged import context
from imaged import exception
from imaged import rpc

CONF = imaged_conf.CONF
LOG = logging.getLogger(__name__)

RPC_API_VERSION = '1.3'


class Method(collections.namedtuple(
        'Method', 'since long_call arguments errors')):
    """One call of the API, as the agent serves it.

    :param since: the API version that added the call.
    :param long_call: it may take minutes (heartbeats, ``long_rpc_timeout``,
        sent again when its worker dies).
    :param arguments: ``(name, version that added it)`` pairs, all keyword
        arguments.
    :param errors: the :mod:`imaged.exception` classes it may answer (a
        subclass counts as its class); the agent logs any other as a bug.
    """


# What the agent may answer to any call: an unexpected failure.
_ANY = (exception.InvalidInput, exception.InternalError)
# Calls that identify their caller through Keystone (within the deadline).
_CALLER = (exception.NotAuthorized, exception.KeystoneUnavailable,
           exception.Timeout)
# Long calls wait at the agent's gate.
_GATE = (exception.AgentBusy, exception.Timeout)

# The contract of every call: the agent's manager checks the errors it
# sends against it, and the RPC reference (doc/source/reference/rpc.rst)
# is tested against it (tests/unit/test_rpc_contract.py).
METHODS = {
    'create_root_disk': Method(
        since='1.0', long_call=True,
        arguments=(('instance_uuid', '1.0'), ('image_id', '1.0'),
                   ('size_gb', '1.0'), ('trusted_certs', '1.3')),
        errors=_ANY + _CALLER + _GATE + (
            exception.ImageNotFound, exception.ImageNotAuthorized,
            exception.ImageUnacceptable, exception.ImageTooLarge,
            exception.ImageDownloadFailed, exception.GlanceRequestFailed,
            exception.GlanceResponseTooLarge, exception.BackendUnavailable,
            exception.CacheError, exception.RootDiskBusy,
            exception.StorageError, exception.DiskImageMismatch,
            exception.LeaseLost, exception.LazySourceUnavailable)),
    'delete_root_disk': Method(
        since='1.0', long_call=True,
        arguments=(('instance_uuid', '1.0'),),
        errors=_ANY + _CALLER + (
            exception.BackendUnavailable, exception.RootDiskBusy,
            exception.StorageError)),
    'list_cached_images': Method(
        since='1.0', long_call=False, arguments=(),
        errors=_ANY + _CALLER + (
            exception.BackendUnavailable, exception.StorageError,
            exception.CacheError)),
    'get_capabilities': Method(
        since='1.0', long_call=False, arguments=(), errors=_ANY),
    'cache_images': Method(
        since='1.1', long_call=True,
        arguments=(('image_ids', '1.1'),),
        errors=_ANY + _CALLER + _GATE),
    'flatten_root_disk': Method(
        since='1.2', long_call=True,
        arguments=(('instance_uuid', '1.2'),),
        errors=_ANY + _CALLER + _GATE + (
            exception.BackendUnavailable, exception.RootDiskNotFound,
            exception.RootDiskBusy, exception.StorageError)),
    'snapshot_root_disk': Method(
        since='1.2', long_call=True,
        arguments=(('instance_uuid', '1.2'), ('image_id', '1.2')),
        errors=_ANY + _CALLER + _GATE + (
            exception.BackendUnavailable, exception.RootDiskNotFound,
            exception.RootDiskBusy, exception.StorageError,
            exception.ImageNotFound, exception.ImageNotAuthorized,
            exception.ImageNotWritable, exception.LocationRefused,
            exception.GlanceRequestFailed, exception.GlanceResponseTooLarge,
            exception.LeaseLost)),
}


def declares(method, error):
    """Whether ``error`` is one the contract of ``method`` names."""
    return isinstance(error, METHODS[method].errors)


class _WorkerLost(Exception):
    """A long call's heartbeats stopped before its bound."""

    def __init__(self, error, silent):
        super().__init__(str(error))
        self.error, self.silent = error, silent


class ImageAgentAPI:
    """Calls the imaged agent of one compute host.

    Every method takes the caller's request context (an
    :class:`oslo_context.context.RequestContext`) and the name of the host
    whose agent should do the work (its ``[DEFAULT] host``).
    """

    def __init__(self, conf=CONF):
        self.conf = conf
        target = messaging.Target(topic=rpc.TOPIC, version=RPC_API_VERSION)
        self.client = rpc.get_client(
            conf, target, version_cap=conf.upgrade_levels.imaged)

    def _call(self, ctxt, host, method, long_call=False, version='1.0',
              **kwargs):
        client = self._prepare(host, long_call=long_call, version=version)
        waits = client.timeout or self.conf.rpc_response_timeout

        def attempt():
            started = time.monotonic()
            try:
                return client.call(context.with_call_timeout(ctxt, waits),
                                   method, **kwargs)
            except messaging.MessagingTimeout as e:
                silent = time.monotonic() - started
                if long_call and silent < waits:
                    # The heartbeats stopped well before the call's bound.
                    raise _WorkerLost(e, silent)
                raise

        def lost(retry_state):
            error = retry_state.outcome.exception()
            LOG.warning('The imaged agent of %(host)s stopped answering '
                        '%(method)s (no heartbeat after %(s).0fs: its worker '
                        'died); calling it again (%(n)d of %(of)d)',
                        {'host': host, 'method': method, 's': error.silent,
                         'n': retry_state.attempt_number,
                         'of': self.conf.rpc_retries})
        try:
            return tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(_WorkerLost),
                stop=tenacity.stop_after_attempt(self.conf.rpc_retries + 1),
                before_sleep=lost, reraise=True)(attempt)
        except _WorkerLost as e:
            raise e.error from None

    def _prepare(self, host, long_call=False, version='1.0'):
        if not self.client.can_send_version(version):
            raise exception.RPCVersionCapped(
                version=version, cap=self.client.version_cap)
        if long_call:
            # Heartbeats tell a slow call from a dead agent; the long
            # timeout only bounds the whole operation.
            return self.client.prepare(
                server=host, version=version,
                timeout=self.conf.long_rpc_timeout,
                call_monitor_timeout=self.conf.rpc_response_timeout)
        return self.client.prepare(server=host, version=version)

    def create_root_disk(self, ctxt, host, instance_uuid, image_id, size_gb,
                         trusted_certs=None):
        """Create ``<instance_uuid>_disk`` from a Glance image.

        :param trusted_certs: ids in the key manager of the certificates
            the image's signing certificate must chain to (nova's trusted
            image certificates); the image is then verified whatever
            ``[glance] verify_glance_signatures`` says. New in 1.3.
        :returns: dict with ``instance_uuid, image_id, pool, name,
                  size_bytes, strategy, parent, signature``.
        :raises RPCVersionCapped: ``trusted_certs`` given and
            ``[upgrade_levels] imaged`` is below 1.3.
        """
        if trusted_certs:
            return self._call(ctxt, host, 'create_root_disk', long_call=True,
                              version='1.3', instance_uuid=instance_uuid,
                              image_id=image_id, size_gb=size_gb,
                              trusted_certs=list(trusted_certs))
        return self._call(ctxt, host, 'create_root_disk', long_call=True,
                          instance_uuid=instance_uuid, image_id=image_id,
                          size_gb=size_gb)

    def delete_root_disk(self, ctxt, host, instance_uuid):
        """Delete an instance's root disk; a missing disk is not an error."""
        return self._call(ctxt, host, 'delete_root_disk', long_call=True,
                          instance_uuid=instance_uuid)

    def list_cached_images(self, ctxt, host):
        """List the base cache: ``image_id, size_bytes, last_used, where``.
        """
        return self._call(ctxt, host, 'list_cached_images')

    def get_capabilities(self, ctxt, host):
        """Describe the agent, its backend and cache, and any problems."""
        return self._call(ctxt, host, 'get_capabilities')

    def cache_images(self, ctxt, host, image_ids):
        """Prepare images so that later root disks from them are clones.

        New in 1.1. At most ``[image_cache] precache_concurrency`` images
        at once; the call heartbeats while it works.

        :param image_ids: a list of 1..256 distinct image UUIDs.
        :returns: ``{image_id: status}``, status ``cached``, ``existing``,
                  ``error`` or ``unsupported``.
        :raises RPCVersionCapped: ``[upgrade_levels] imaged`` is below 1.1.
        """
        return self._call(ctxt, host, 'cache_images', long_call=True,
                          version='1.1', image_ids=image_ids)

    def flatten_root_disk(self, ctxt, host, instance_uuid):
        """Make an instance's root disk independent of its image.

        New in 1.2. Idempotent (a disk without a parent answers at once);
        at most ``[rbd] concurrent_flatten_operations`` at once per agent.

        :returns: ``{instance_uuid, parent: None, seconds}``.
        :raises RootDiskNotFound: no such disk.
        :raises RPCVersionCapped: ``[upgrade_levels] imaged`` is below 1.2.
        """
        return self._call(ctxt, host, 'flatten_root_disk', long_call=True,
                          version='1.2', instance_uuid=instance_uuid)

    def snapshot_root_disk(self, ctxt, host, instance_uuid, image_id):
        """Make the queued Glance image ``image_id`` hold the instance's
        root disk, and wait until it is active.

        New in 1.2. The caller created the image (raw or qcow2, bare) and
        paused or quiesced the guest. Safe to retry after any failure.

        :returns: ``{image_id, instance_uuid, strategy, size_bytes,
                  timings}``, strategy ``clone`` or ``upload``.
        :raises: RootDiskNotFound, ImageNotWritable,
                SnapshotFormatUnsupported, LocationRefused.
        :raises RPCVersionCapped: ``[upgrade_levels] imaged`` is below 1.2.
        """
        return self._call(ctxt, host, 'snapshot_root_disk', long_call=True,
                          version='1.2', instance_uuid=instance_uuid,
                          image_id=image_id)
