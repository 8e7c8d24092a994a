"""Turning a Glance image into an instance's root disk on Ceph.

Strategies, fastest first:

* ``existing``: the instance's disk is already there (an idempotent retry).
* ``clone``: Glance keeps the image as an RBD snapshot in our cluster, so the
  disk is a copy-on-write clone of it (Nova's direct_fetch path).
* ``download``: anything else is downloaded once into the base cache,
  checked, converted to raw and imported, skipping all-zero blocks.
"""

import time

from oslo_concurrency import lockutils
from oslo_log import log as logging
from oslo_utils import units

from imaged import exception
from imaged.i18n import _
from imaged.image import cache as image_cache
from imaged.image import locations as image_locations
from imaged.storage import location as rbd_location
from imaged.storage import rbd as rbd_storage

LOG = logging.getLogger(__name__)


class _Timings:
    def __init__(self):
        self.steps = []
        self._start = time.monotonic()

    def step(self, name):
        now = time.monotonic()
        self.steps.append('%s %.2fs' % (name, now - self._start))
        self._start = now


class RootDisks:
    """Creates and deletes root disks; the manager validates arguments."""

    def __init__(self, conf, glance_api, storage, cache):
        self.conf = conf
        self.glance = glance_api
        self.storage = storage
        self.cache = cache
        self.locations = image_locations.CloneableLocations(
            conf, glance_api, storage)
        self._instance_locks = lockutils.Semaphores()

    def _result(self, instance_uuid, image_id, name, info, strategy):
        return {'instance_uuid': instance_uuid, 'image_id': image_id,
                'pool': self.storage.pool, 'name': name,
                'size_bytes': info['size_bytes'], 'strategy': strategy,
                'parent': info['parent']}

    def create(self, context, instance_uuid, image_id, size_gb):
        name = rbd_storage.disk_name(instance_uuid)
        size_bytes = size_gb * units.Gi
        with lockutils.lock(name, semaphores=self._instance_locks):
            timings = _Timings()
            info = self.storage.disk_info(name)
            if info is not None:
                if info['size_bytes'] < size_bytes:
                    raise exception.InvalidInput(
                        argument='size_gb',
                        reason=_('root disk %(name)s already exists with '
                                 '%(have)d bytes, less than the %(want)d '
                                 'requested; imaged never resizes an '
                                 'existing disk') %
                        {'name': name, 'have': info['size_bytes'],
                         'want': size_bytes})
                LOG.info('Root disk %s/%s already exists', self.storage.pool,
                         name)
                return self._result(instance_uuid, image_id, name, info,
                                    'existing')
            image = self.glance.show(context, image_id)
            timings.step('glance')
            self._check_record(image, size_bytes)
            location, parent_size = self.locations.cloneable(
                context, image, timings)
            if location is not None:
                strategy = 'clone'
                info = self._clone(image, location, parent_size, name,
                                   size_bytes, timings)
            else:
                strategy = 'download'
                info = self._download(context, image, name, size_bytes,
                                      timings)
            LOG.info('Created root disk %s/%s for instance %s from image %s '
                     'by %s: %s', self.storage.pool, name, instance_uuid,
                     image_id, strategy, ', '.join(timings.steps))
            return dict(self._result(instance_uuid, image_id, name, info,
                                     strategy), timings=timings.steps)

    def _check_record(self, image, size_bytes):
        """Refuse early what Glance's record already rules out."""
        image_id = image['id']
        if image.get('status') != 'active':
            raise exception.ImageUnacceptable(
                image_id=image_id,
                reason=_('its status is %s, not active') % image.get('status'))
        if not image.get('disk_format'):
            raise exception.ImageUnacceptable(
                image_id=image_id, reason=_('it has no disk_format'))
        known = image.get('virtual_size')
        if not known and image.get('disk_format') == 'raw':
            known = image.get('size')
        if known and known > size_bytes:
            raise exception.ImageTooLarge(image_id=image_id,
                                          virtual_size=known,
                                          size_bytes=size_bytes)

    def _clone(self, image, location, parent_size, name, size_bytes,
               timings):
        """Clone a snapshot into the disk; returns the disk's info."""
        if parent_size > size_bytes:
            raise exception.ImageTooLarge(image_id=image['id'],
                                          virtual_size=parent_size,
                                          size_bytes=size_bytes)
        self.storage.clone(location, name, size_bytes)
        timings.step('clone')
        return {'size_bytes': size_bytes,
                'parent': rbd_location.format_rbd_location(*location)}

    def _progress(self, image_id, name, size):
        return image_cache.ProgressLog(
            'Import of image %s into %s' % (image_id, name), size,
            self.conf.glance.progress_interval)

    def _download(self, context, image, name, size_bytes, timings):
        if self.conf.image_cache.rbd_base_images:
            return self._clone_rbd_base(context, image, name, size_bytes,
                                        timings)
        self._import(context, image, name, size_bytes, timings)
        return {'size_bytes': size_bytes, 'parent': None}

    def _import(self, context, image, name, size_bytes, timings):
        self._fill(context, image, name, size_bytes, timings)

    def _fill(self, context, image, name, size_bytes, timings,
              snapshot=None):
        """Make image ``name`` while the image downloads, or from its file.

        A root disk grows to ``size_bytes``; a base image (with
        ``snapshot``) keeps the image's own size.
        """
        with self.cache.base_image(
                context, image, max_virtual_size=size_bytes,
                tee=lambda size: self.storage.import_writer(name, size)
                ) as cached:
            timings.step('download' if cached.downloaded else 'cache hit')
            final_size = cached.size_bytes if snapshot else size_bytes
            try:
                self._check_base_size(image['id'], cached, size_bytes)
                if cached.tee is not None:  # filled while it streamed in
                    cached.tee.finish(final_size, snapshot=snapshot)
                    return
            finally:
                if cached.tee is not None:
                    cached.tee.abort()  # a no-op once finished
            self.storage.import_file(
                cached.path, name, final_size,
                self._progress(image['id'], name, cached.size_bytes),
                snapshot=snapshot)
            timings.step('import')

    def _clone_rbd_base(self, context, image, name, size_bytes, timings):
        """Clone the image's base in Ceph, making it first if needed."""
        image_id = image['id']
        with self.cache.image_lock('rbd-base-%s' % image_id):
            base, base_size = self.storage.base_location(image_id)
            if base is not None:
                self.cache.touch(image_id)
                timings.step('base hit')
            else:
                base, base_size = self._make_rbd_base(context, image,
                                                      size_bytes, timings)
            return self._clone(image, base, base_size, name, size_bytes,
                               timings)

    def _make_rbd_base(self, context, image, size_bytes, timings):
        image_id = image['id']
        try:
            self._fill(context, image, rbd_storage.base_name(image_id),
                       size_bytes, timings,
                       snapshot=rbd_storage.BASE_SNAPSHOT)
        except exception.DiskExists:
            # Another agent sharing the pool made it meanwhile.
            LOG.info('Base image of %s was made by another agent', image_id)
        return self.storage.base_location(image_id)

    @staticmethod
    def _check_base_size(image_id, cached, size_bytes):
        if cached.size_bytes > size_bytes:
            raise exception.ImageTooLarge(image_id=image_id,
                                          virtual_size=cached.size_bytes,
                                          size_bytes=size_bytes)

    def clean_rbd_bases(self):
        """Remove base images whose base file is gone and that have no clone.

        :returns: the image ids whose base image was removed.
        """
        cached = {entry['image_id'] for entry in self.cache.list()}
        removed = []
        for image_id in self.storage.base_image_ids():
            if image_id in cached:
                continue
            with self.cache.image_lock('rbd-base-%s' % image_id):
                if self.storage.remove_base_unless_cloned(image_id):
                    LOG.info('Removed the base image of %s from pool %s',
                             image_id, self.storage.pool)
                    removed.append(image_id)
        return removed

    def delete(self, instance_uuid):
        name = rbd_storage.disk_name(instance_uuid)
        with lockutils.lock(name, semaphores=self._instance_locks):
            if self.storage.remove(name):
                LOG.info('Deleted root disk %s/%s', self.storage.pool, name)
            else:
                LOG.info('Root disk %s/%s was already gone',
                         self.storage.pool, name)
