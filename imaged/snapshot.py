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

"""Turning a root disk into a Glance image: ``snapshot_root_disk``.

The caller (a compute manager taking an instance snapshot) has created the
Glance image (``queued``, raw or qcow2, bare) and paused or quiesced the guest;
this makes the image hold the disk's bytes and returns once it is
``active``. Strategies:

* ``clone``: Glance has an RBD store in our cluster (its pool from
  ``GET /v2/info/stores/detail``, else ``[glance] rbd_store_pools``): the
  disk's snapshot is copied inside Ceph into Glance's pool
  (:mod:`imaged.storage.snapshots`: clone, flatten, ``snap`` protected,
  renamed to the image id) and registered with Glance's service-only
  ``POST /v2/images/{id}/locations``. No byte leaves Ceph.
* ``upload``: otherwise (or ``[rbd] snapshot_strategy = upload``), the
  bytes of a temporary snapshot of the disk go to ``PUT
  /v2/images/{id}/file``.

A retry after a kill at any step finishes the job: a finished copy of this
disk under the image id is registered, a partial one is removed and made
again; the temporary snapshot of the disk is taken again and removed at
the end. A location is registered only for a complete, protected snapshot,
and an image Glance refused is removed from its pool.
"""

import contextlib
import os
import time
from typing import Any, TYPE_CHECKING

from oslo_log import log as logging
import tenacity

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _
from imaged.image import format as image_format
from imaged.image import record as image_record
from imaged import policy
from imaged.storage import disks as rbd_disks
from imaged.storage import location as rbd_location
from imaged.storage import snapshots as rbd_snapshots

if TYPE_CHECKING:
    from imaged import rootdisk

LOG = logging.getLogger(__name__)

# (disk_format, container_format) imaged writes: raw by a copy inside
# Ceph or an upload, qcow2 by an upload of qemu-img's conversion.
WRITABLE = (('raw', 'bare'), ('qcow2', 'bare'))
# Seconds between two looks at an image Glance is making active.
ACTIVE_POLL = 0.5


class Snapshots:
    """Snapshots of root disks into Glance images."""

    def __init__(self, conf: Any, glance_api: Any, storage: Any, access: Any,
                 pools: Any, notifications: Any, files: Any) -> None:
        self.conf = conf
        self.notifications = notifications
        self.glance = glance_api
        self.storage = storage
        self.access = access  # imaged.disk_access.DiskAccess
        self.pools = pools  # image.locations.GlancePools
        self.files = files  # imagecache.files.BaseFiles: its scratch paths

    def _check_image(self, context, image):
        if image.status not in ('queued', 'importing', 'active'):
            raise exception.ImageNotWritable(
                image_id=image.id,
                reason=_('its status is %s, not queued') % image.status)
        caller = policy.caller_of(context)
        # The project is Keystone's (imaged.policy), not the message's; an
        # admin or service token writes where Glance lets it.
        project = caller.project_id
        if not (caller.kind == 'user' and caller.privileged) and project \
                and image.owner and image.owner != project:
            raise exception.ImageNotWritable(
                image_id=image.id,
                reason=_('it belongs to project %(owner)s, not to the '
                         'caller\'s %(project)s') %
                {'owner': image.owner, 'project': project})
        if (image.disk_format, image.container_format) not in WRITABLE:
            raise exception.SnapshotFormatUnsupported(
                image_id=image.id, disk_format=image.disk_format,
                container_format=image.container_format)

    def _glance_pool(self):
        """Glance's pool in our cluster to copy into, or None."""
        if self.conf.rbd.snapshot_strategy == 'upload':
            return None
        pools = sorted(self.pools.allowed(self.storage.fsid()))
        return pools[0] if pools else None

    def snapshot(self, context: Any, instance_uuid: str, image_id: str,
                 timings: 'rootdisk.Timings') -> dict[str, Any]:
        name = rbd_disks.disk_name(instance_uuid)
        deadline = call_deadline.of(context)
        with self.access.instance_lock(context, name):
            info = self.storage.disks.finished(name)
            if info is None:
                raise exception.RootDiskNotFound(name=name,
                                                 pool=self.storage.pool)
            caller = policy.caller_of(context)
            if caller.anonymous:
                raise exception.NotAuthorized(
                    action=_('snapshot root disk %s') % name,
                    reason=_('a snapshot needs a token'))
            self.access.check_owner(context, name, info, _('snapshot'))
            image = self.glance.show(context, image_id)
            self._check_image(context, image)
            timings.step('glance')
            # Glance's RBD store keeps raw bytes only.
            pool = self._glance_pool() if image.disk_format == 'raw' \
                else None
            strategy = 'clone' if pool else 'upload'
            if image.status != 'queued':
                # An earlier attempt registered this disk's copy, or
                # uploaded it; anything else is not ours to write.
                if not self._already_done(image, pool, instance_uuid):
                    raise exception.ImageNotWritable(
                        image_id=image_id,
                        reason=_('its status is %s, not queued') %
                        image.status)
                LOG.info('Image %s is already the snapshot of %s', image_id,
                         name)
                # Cut off after the location: the disk's temporary
                # snapshot may still be there.
                self.storage.snapshots.drop(name, image_id)
            elif strategy == 'clone':
                self._clone(context, name, instance_uuid, image_id, pool,
                            deadline, timings)
            else:
                self._upload(context, name, instance_uuid, image, timings)
            self._wait_active(context, image_id, deadline)
            timings.step('active')
        return {'image_id': image_id, 'instance_uuid': instance_uuid,
                'strategy': strategy, 'size_bytes': info['size_bytes'],
                'timings': timings.steps}

    def _clone(self, context, name, instance_uuid, image_id, pool, deadline,
               timings):
        store = self.storage.snapshots
        store.sweep(pool, image_id,
                    wait=deadline.cap(self.conf.long_rpc_timeout))
        done = store.finished(pool, image_id, instance_uuid)
        if done is False:
            raise exception.ImageNotWritable(
                image_id=image_id,
                reason=_('%(pool)s/%(id)s exists and is not a snapshot of '
                         '%(disk)s') % {'pool': pool, 'id': image_id,
                                        'disk': name})
        if done is None:
            store.take(name, image_id)
            timings.step('snapshot')
            try:
                store.copy(name, image_id, instance_uuid, pool,
                           wait=deadline.cap(self.conf.long_rpc_timeout),
                           progress=self.notifications.
                           snapshot_progress_reporter(
                               context, instance_uuid, image_id, 'copy'))
                timings.step('copy')
            finally:
                store.drop(name, image_id)
        else:
            # An earlier attempt made the copy and was cut off before it
            # removed the disk's temporary snapshot.
            store.drop(name, image_id)
        url = rbd_location.format_rbd_location(
            self.storage.fsid(), pool, image_id, rbd_snapshots.SNAPSHOT)
        try:
            self.glance.add_location(context, image_id, url)
        except exception.LocationRefused:
            # Glance will never point at it: it must not stay.
            store.remove(pool, image_id)
            raise
        timings.step('location')

    def _already_done(self, image, pool, instance_uuid):
        if pool is not None:
            return self.storage.snapshots.finished(
                pool, image.id, instance_uuid) is True
        # Glance makes an upload active only once all of it arrived.
        return image.status == 'active' and \
            image.snapshot_of == instance_uuid

    def _upload(self, context, name, instance_uuid, image, timings):
        store, image_id = self.storage.snapshots, image.id
        self.glance.set_properties(
            context, image_id, {image_record.SNAPSHOT_OF: instance_uuid})
        store.take(name, image_id)
        timings.step('snapshot')
        try:
            if image.disk_format == 'raw':
                progress = self.notifications.snapshot_progress_reporter(
                    context, instance_uuid, image_id, 'upload')
                with store.reader(name, image_id, progress) as (data, size):
                    self.glance.upload(context, image_id, data, size)
            else:
                self._upload_converted(context, name, instance_uuid, image,
                                       timings)
            timings.step('upload')
        finally:
            store.drop(name, image_id)

    def _upload_converted(self, context, name, instance_uuid, image,
                          timings):
        """qemu-img writes the disk's snapshot as ``image.disk_format``
        into a scratch file of the image cache (qcow2 needs a seekable
        target), which is uploaded, then removed.

        Progress: step ``convert`` once qemu-img is done, then ``upload``
        in bytes of the converted file."""
        files = self.files
        path = files.scratch_path(image.id, image.disk_format)
        reporter = self.notifications.snapshot_progress_reporter
        try:
            image_format.convert_from_rbd(
                image.id, self.storage.qemu_image(
                    self.storage.pool, name,
                    rbd_snapshots.disk_snapshot_name(image.id)),
                path, image.disk_format, self.conf)
            reporter(context, instance_uuid, image.id, 'convert')(1, 1)
            timings.step('convert')
            with open(path, 'rb') as data:
                size = os.fstat(data.fileno()).st_size
                self.glance.upload(
                    context, image.id,
                    _ReadProgress(data, size, reporter(
                        context, instance_uuid, image.id, 'upload')),
                    size)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _wait_active(self, context, image_id, deadline):
        """Until Glance says ``active`` (it hashes a location in a task),
        polled every ``ACTIVE_POLL`` seconds within the call's deadline."""
        limit = deadline.cap(self.conf.long_rpc_timeout)
        started = time.monotonic()

        def active():
            status = self.glance.show(context, image_id).status
            if status not in ('active', 'queued', 'saving', 'importing'):
                raise exception.ImageNotWritable(
                    image_id=image_id,
                    reason=_('Glance made it %s') % status)
            return status == 'active'

        def gave_up(retry_state):
            raise exception.Timeout(
                what=_('image %s to become active') % image_id,
                seconds=round(time.monotonic() - started, 1))
        tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda done: not done),
            stop=tenacity.stop_after_delay(limit),
            wait=tenacity.wait_fixed(ACTIVE_POLL),
            retry_error_callback=gave_up)(active)


class _ReadProgress:
    """``data`` (a file) whose reads are reported as
    ``progress(bytes_read, size)``."""

    def __init__(self, data, size, progress):
        self.data, self.size, self.progress = data, size, progress
        self.done = 0

    def read(self, n=-1):
        chunk = self.data.read(n)
        self.done += len(chunk)
        if chunk:
            self.progress(self.done, self.size)
        return chunk
