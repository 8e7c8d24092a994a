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

"""Turning a Glance image into an instance's root disk on Ceph.

Strategies, fastest first:

* ``existing``: the instance's disk is already there (an idempotent retry).
* ``clone``: Glance keeps the image as an RBD snapshot in our cluster, so the
  disk is a copy-on-write clone of it (Nova's direct_fetch path).
* ``download``: anything else comes from the image cache
  (:mod:`imaged.imagecache.manager`), which downloads it once, checked and
  converted to raw: a clone of its base image in Ceph (with ``[image_cache]
  rbd_base_images``), else an import of its local base file.

A disk made by cloning is flattened (``[rbd] flatten_root_disks``) when
asked, or when its chain of clones would be longer than ``[rbd]
max_clone_depth`` (:mod:`imaged.flattening`). Who may touch a disk, and
when, is :mod:`imaged.disk_access`'s.

This module chooses; the image cache keeps the bytes; ``storage`` writes
them.
"""

from concurrent import futures
import functools
import time
from typing import Any

from oslo_log import log as logging
from oslo_utils import units
import tenacity

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _
from imaged.image import record
from imaged.image import signature
from imaged import policy
from imaged.storage import disks as rbd_disks
from imaged.storage import location as rbd_location

LOG = logging.getLogger(__name__)

# A record read while the disk's locks were being taken is used if taking
# them took less than this (seconds); else it is read again.
RECORD_FRESH = 1.0


class Timings:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self._start = time.monotonic()

    def step(self, name: str) -> None:
        now = time.monotonic()
        self.steps.append('%s %.2fs' % (name, now - self._start))
        self._start = now


class RootDisks:
    """Creates and deletes root disks; the manager validates arguments."""

    def __init__(self, conf: Any, glance_api: Any, storage: Any,
                 image_cache: Any, signatures: Any, locations: Any,
                 access: Any, flattening: Any, flattens: Any) -> None:
        """Parts from :mod:`imaged.wiring`: ``signatures`` an
        :class:`imaged.image.signature.Signatures` (None: none verified),
        ``locations`` the image's cloneable locations, ``access`` a
        :class:`imaged.disk_access.DiskAccess`, ``flattening`` a
        :class:`imaged.flattening.RootDiskFlattens` and ``flattens`` the
        background's queue."""
        self.conf = conf
        self.signatures = signatures
        self.glance = glance_api
        self.storage = storage
        self.image_cache = image_cache
        self.locations = locations
        self.access = access
        self.flattening = flattening
        self.flattens = flattens
        # Reads Glance's record of an image while a create takes its
        # disk's locks: one thread per long call at most.
        self._records = futures.ThreadPoolExecutor(
            max_workers=conf.max_concurrent_long_calls,
            thread_name_prefix='glance-record')

    def _result(self, instance_uuid, image_id, name, info, strategy,
                timings, signed=None):
        return {'instance_uuid': instance_uuid, 'image_id': image_id,
                'pool': self.storage.pool, 'name': name,
                'size_bytes': info['size_bytes'], 'strategy': strategy,
                'parent': info['parent'], 'timings': timings.steps,
                'signature': signed.summary() if signed else None}

    def _read_record(self, context, image_id):
        context.update_store()  # this thread logs the call's request id
        return self.record(context, image_id)

    def record(self, context: Any, image_id: str) -> Any:
        """The image's record, as the caller may read it: with its token;
        for a call without one, read as imaged's user and refused unless
        public or community.

        :raises NotAuthorized: a tokenless call for any other image.
        """
        caller = policy.caller_of(context)
        if caller.anonymous:
            image = self.glance.show(context, image_id, as_service=True)
            caller.may_use(image)
            return image
        return self.glance.show(context, image_id)

    def create(self, context: Any, instance_uuid: str, image_id: str,
               size_gb: int) -> dict[str, Any]:
        name = rbd_disks.disk_name(instance_uuid)
        size_bytes = size_gb * units.Gi
        # The record is read with the caller's token beside the locks and
        # the look for an existing disk, which need no Glance.
        started = time.monotonic()
        timings = Timings()
        early = self._records.submit(self._read_record, context, image_id)
        # Disks to flatten in the background, once unlocked.
        later: list[str] = []
        try:
            with self.access.instance_lock(context, name):
                timings.step('locks')
                if time.monotonic() - started < RECORD_FRESH:
                    record_of = early.result
                else:  # waited for the locks: read it again
                    record_of = functools.partial(self.record, context,
                                                  image_id)
                result = self._create(context, instance_uuid, image_id,
                                      name, size_bytes, record_of, timings,
                                      later)
        finally:
            early.cancel()  # unless it runs already
        for disk in later:
            self.flattens.submit(disk)
        return result

    def _create(self, context, instance_uuid, image_id, name, size_bytes,
                record_of, timings, later):
        info = self.storage.disks.info(name)
        if info is not None and not info['complete']:
            self.storage.incomplete_disks.remove_incomplete(name)
            info = None
        caller = policy.caller_of(context)
        if info is not None:
            self.access.check_owner(context, name, info, _('use'))
            self._check_existing(name, info, image_id, size_bytes)
            if getattr(context, 'auth_token', None) or caller.anonymous:
                # A caller gets no disk of an image it cannot see.
                record_of()
                timings.step('glance')
            LOG.info('Root disk %s/%s already exists', self.storage.pool,
                     name)
            return self._result(instance_uuid, image_id, name, info,
                                'existing', timings)
        image = record_of()
        timings.step('glance')
        record.check(image, size_bytes, self.conf,
                     self.image_cache.needs_local_room(image))
        signed = self._signed(context, image, timings)
        spec = self.storage.disks.final_image(name, size_bytes, image_id,
                                              caller.owner_of_new_disk())
        strategy, info = self._make(context, image, spec, timings)
        if signed is not None and signed.outcome is None:
            signed.verified(signature.CACHED, 0.0)
        # A base imaged made is never a clone: a disk cloned from it is
        # one deep (its chain not opened: a lazy base's reads its source).
        info = self.flattening.shorten_chain(
            context, name, info, timings, later,
            parent_depth=0 if strategy == 'download' else None)
        LOG.info('Created root disk %s/%s for instance %s from image %s '
                 'by %s: %s%s', self.storage.pool, name, instance_uuid,
                 image_id, strategy, ', '.join(timings.steps),
                 '; signature %(outcome)s (%(seconds).2fs)' %
                 signed.summary() if signed else '')
        return self._result(instance_uuid, image_id, name, info, strategy,
                            timings, signed)

    def _signed(self, context, image, timings):
        """The call's ``signature.Signed`` image, or None when signatures
        are not verified: an unsigned or untrusted image is refused here,
        before any byte moves."""
        if self.signatures is None:
            return None
        signed = self.signatures.check(context, image)
        if signed is not None:
            timings.step('certificate')
        return signed

    def _check_existing(self, name, info, image_id, size_bytes):
        if info['image_id'] is not None and info['image_id'] != image_id:
            raise exception.DiskImageMismatch(
                name=name, pool=self.storage.pool,
                existing_image_id=info['image_id'], image_id=image_id)
        if info['size_bytes'] < size_bytes:
            raise exception.InvalidInput(
                argument='size_gb',
                reason=_('root disk %(name)s already exists with %(have)d '
                         'bytes, less than the %(want)d requested; imaged '
                         'never resizes an existing disk') %
                {'name': name, 'have': info['size_bytes'],
                 'want': size_bytes})

    def _make(self, context, image, spec, timings):
        """``(strategy, info)`` of the new disk ``spec``: a clone of the
        image's cloneable location, else from the image cache."""
        def look_again(retry_state):
            # Gone since it was found (and forgotten): look it up once
            # more, and download if Glance keeps it nowhere cloneable.
            LOG.info('Image %s is no longer at the location imaged found '
                     '(%s); looking it up again', image.id,
                     retry_state.outcome.exception())
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(
                exception.CloneSourceNotFound),
            stop=tenacity.stop_after_attempt(2), before_sleep=look_again,
            reraise=True)(self._clone_or_download, context, image, spec,
                          timings)

    def _clone_or_download(self, context, image, spec, timings):
        location, parent_size = self.locations.cloneable(context, image,
                                                         timings)
        if location is None:
            return 'download', self._download(context, image, spec, timings)
        call_deadline.of(context).check(_('the root disk %s') % spec.name)
        try:
            self._verify_clone_source(context, image, location, timings)
            return 'clone', self._clone(image, location, parent_size, spec,
                                        timings)
        except exception.CloneSourceNotFound:
            self.locations.forget(image.id)
            raise

    def _verify_clone_source(self, context, image, location, timings):
        """A signed image's snapshot is verified (once per pool) before
        it is cloned: a clone never reads the bytes itself."""
        if self.signatures is None:
            return
        signed = self.signatures.check(context, image)
        if signed is not None:
            self.signatures.verify_snapshot(context, image, location, signed)
            timings.step('signature')

    def _clone(self, image, location, parent_size, spec, timings):
        """Clone a snapshot into the disk; returns the disk's info."""
        if parent_size > spec.min_size:
            raise exception.ImageTooLarge(image_id=image.id,
                                          virtual_size=parent_size,
                                          size_bytes=spec.min_size)
        self.storage.disks.clone(location, spec, parent_size, timings.step)
        return {'size_bytes': spec.min_size,
                'parent': rbd_location.format_rbd_location(*location)}

    def _download(self, context, image, spec, timings):
        """A disk from the image cache: a clone of the image's base in
        Ceph, else an import of its local base file."""
        image_cache = self.image_cache
        if self.conf.image_cache.rbd_base_images:
            def clone(base, base_size):
                call_deadline.of(context).check(
                    _('the root disk %s') % spec.name)
                return self._clone(image, base, base_size, spec, timings)
            try:
                return image_cache.with_base(context, image, spec.min_size,
                                             timings, clone)[1]
            except exception.ForeignBaseImage as e:
                LOG.warning('Image %s gets no base image in Ceph: %s; its '
                            'disks are imported from a local base file',
                            image.id, e)
        image_cache.with_local_file(context, image, spec.min_size, timings,
                                    disk=spec)
        return {'size_bytes': spec.min_size, 'parent': None}

    def cache_image(self, context: Any, image_id: str) -> str:
        """Make sure a later root disk from ``image_id`` needs no download.

        :returns: ``'cached'`` if it was downloaded now, else ``'existing'``.
        """
        image = self.glance.show(context, image_id)
        image_cache = self.image_cache
        record.check(image, image_cache.max_size(), self.conf,
                     image_cache.needs_local_room(image))
        timings = Timings()
        location, _size = self.locations.cloneable(context, image, timings)
        if location is not None:
            # Ahead of the storm: the clones find the record.
            self._verify_clone_source(context, image, location, timings)
            return 'existing'
        self._signed(context, image, timings)
        return image_cache.prepare(context, image, timings)

    def delete(self, instance_uuid: str, context: Any = None) -> None:
        name = rbd_disks.disk_name(instance_uuid)
        # A background flatten holds the disk: it stops for the delete.
        self.flattens.cancel(name)
        with self.access.instance_lock(context, name):
            info = self.storage.disks.info(name)
            if info is not None and info['complete']:
                # A crashed create's leftover is anyone's to remove.
                self.access.check_owner(context, name, info, _('delete'))
            if self.storage.disks.remove(name):
                LOG.info('Deleted root disk %s/%s', self.storage.pool, name)
            else:
                LOG.info('Root disk %s/%s was already gone',
                         self.storage.pool, name)
            self.storage.disk_locks.forget_lock(name)
