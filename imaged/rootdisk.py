"""Turning a Glance image into an instance's root disk on Ceph.

Strategies, fastest first:

* ``existing``: the instance's disk is already there (an idempotent retry).
* ``clone``: Glance keeps the image as an RBD snapshot in our cluster, so the
  disk is a copy-on-write clone of it (Nova's direct_fetch path).
* ``download``: anything else is downloaded once, checked and converted to
  raw, into a base image in Ceph that the disk is a clone of (with
  ``[image_cache] rbd_base_images``), else into a local base file that is
  imported into each disk.

This module chooses; ``image.fetch`` moves the bytes (``image.download``
streams them into sinks); ``storage`` writes them.
"""

import contextlib
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging
from oslo_utils import units

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _
from imaged.image import fetch
from imaged.image import locations as image_locations
from imaged.image import record
from imaged.storage import disks as rbd_disks
from imaged.storage import location as rbd_location

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

    def __init__(self, conf, glance_api, storage, cache, notifications=None):
        self.conf = conf
        self.glance = glance_api
        self.storage = storage
        self.cache = cache
        self.fetcher = fetch.Fetcher(conf, glance_api, cache,
                                     storage.partials, notifications)
        self.locations = image_locations.CloneableLocations(
            conf, glance_api, storage)
        self._instance_locks = lockutils.Semaphores()

    @contextlib.contextmanager
    def _instance_lock(self, context, name):
        """This host's lock on disk ``name``, then the pool's."""
        timeout = call_deadline.of(context).cap(self.conf.long_rpc_timeout)
        started = time.monotonic()
        lock = self._instance_locks.get(name)
        if not lock.acquire(timeout=timeout):
            raise exception.RootDiskBusy(
                name=name, pool=self.storage.pool,
                reason=_('another call for it is still running'))
        try:
            left = max(timeout - (time.monotonic() - started), 0)
            with self.storage.disks.lock(name, left):
                yield
        finally:
            lock.release()

    def _result(self, instance_uuid, image_id, name, info, strategy,
                timings):
        return {'instance_uuid': instance_uuid, 'image_id': image_id,
                'pool': self.storage.pool, 'name': name,
                'size_bytes': info['size_bytes'], 'strategy': strategy,
                'parent': info['parent'], 'timings': timings.steps}

    def _keeps_file(self, image):
        return not self.conf.image_cache.rbd_base_images or \
            image.get('disk_format') not in ('raw', 'iso')

    def create(self, context, instance_uuid, image_id, size_gb):
        name = rbd_disks.disk_name(instance_uuid)
        size_bytes = size_gb * units.Gi
        with self._instance_lock(context, name):
            timings = _Timings()
            info = self.storage.disks.info(name)
            if info is not None:
                self._check_existing(name, info, image_id, size_bytes)
                if getattr(context, 'auth_token', None):
                    # A caller gets no disk of an image it cannot see.
                    self.glance.show(context, image_id)
                    timings.step('glance')
                LOG.info('Root disk %s/%s already exists', self.storage.pool,
                         name)
                return self._result(instance_uuid, image_id, name, info,
                                    'existing', timings)
            image = self.glance.show(context, image_id)
            timings.step('glance')
            record.check(image, size_bytes, self.conf,
                         self._keeps_file(image))
            spec = self.storage.disks.partial_spec(name, size_bytes,
                                                   image_id)
            location, parent_size = self.locations.cloneable(
                context, image, timings)
            if location is not None:
                strategy = 'clone'
                call_deadline.of(context).check(_('the root disk %s') % name)
                info = self._clone(image, location, parent_size, spec,
                                   timings)
            else:
                strategy = 'download'
                info = self._download(context, image, spec, timings)
            LOG.info('Created root disk %s/%s for instance %s from image %s '
                     'by %s: %s', self.storage.pool, name, instance_uuid,
                     image_id, strategy, ', '.join(timings.steps))
            return self._result(instance_uuid, image_id, name, info, strategy,
                                timings)

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

    def _clone(self, image, location, parent_size, spec, timings):
        """Clone a snapshot into the disk; returns the disk's info."""
        if parent_size > spec.min_size:
            raise exception.ImageTooLarge(image_id=image['id'],
                                          virtual_size=parent_size,
                                          size_bytes=spec.min_size)
        self.storage.partials.clone(location, spec)
        timings.step('clone')
        return {'size_bytes': spec.min_size,
                'parent': rbd_location.format_rbd_location(*location)}

    # -- base images in Ceph --------------------------------------------------

    def _use_base(self, context, image, max_size, timings, spec=None,
                  retried=False):
        """Clone (or, without ``spec``, just find) the complete base,
        making it first if no host of the pool has it.

        :returns: ``(made now, disk info or None)``.
        """
        image_id = image['id']

        def build():
            self._make_base(context, image, max_size, timings)
        deadline = call_deadline.of(context)
        try:
            found_base = self.storage.bases.use(image_id, build, deadline)
            with found_base as found:
                base, base_size, made = found
                if not made:
                    timings.step('base hit')
                info = None
                if spec is not None:
                    deadline.check(_('the root disk %s') % spec.name)
                    info = self._clone(image, base, base_size, spec,
                                       timings)
        except exception.ImageTooLarge as e:
            # Another call's build, for a smaller disk, refused the image:
            # it may fit this one. Then this call builds it itself.
            if retried or \
                    e.kwargs.get('size_bytes', max_size) >= max_size or \
                    e.kwargs.get('virtual_size', max_size + 1) > max_size:
                raise
            LOG.info('Image %s was too large for another call\'s disk (%s '
                     'bytes); building its base for this one', image_id,
                     e.kwargs.get('size_bytes'))
            return self._use_base(context, image, max_size, timings, spec,
                                  retried=True)
        self.cache.record(image_id, base_size)
        return made, info

    def _download(self, context, image, spec, timings):
        """A disk from a base in Ceph, else from the local base file."""
        image_id = image['id']
        if self.conf.image_cache.rbd_base_images:
            try:
                return self._use_base(context, image, spec.min_size,
                                      timings, spec)[1]
            except exception.ForeignBaseImage as e:
                LOG.warning('Image %s gets no base image in Ceph: %s; its '
                            'disks are imported from a local base file',
                            image_id, e)
        with self.cache.in_use(image_id), self.cache.lock(image_id):
            self.fetcher.fill(context, image, spec, spec.min_size, True,
                              timings)
        return {'size_bytes': spec.min_size, 'parent': None}

    def _make_base(self, context, image, max_size, timings):
        """Make the base: this host is the pool's one builder of it now."""
        image_id = image['id']
        with self.cache.in_use(image_id), self.cache.lock(image_id):
            self.fetcher.fill(context, image,
                              self.storage.bases.partial_spec(image_id),
                              max_size, False, timings)

    # -- the cache, for the fleet ---------------------------------------------

    def cache_image(self, context, image_id):
        """Make sure a later root disk from ``image_id`` needs no download.

        :returns: ``'cached'`` if it was downloaded now, else ``'existing'``.
        """
        image = self.glance.show(context, image_id)
        max_size = self.fetcher.max_size()
        record.check(image, max_size, self.conf, self._keeps_file(image))
        timings = _Timings()
        location, _size = self.locations.cloneable(context, image, timings)
        if location is not None:
            return 'existing'
        if self.conf.image_cache.rbd_base_images:
            try:
                made, _info = self._use_base(context, image, max_size,
                                             timings)
                return 'cached' if made else 'existing'
            except exception.ForeignBaseImage as e:
                LOG.warning('Image %s gets no base image in Ceph: %s',
                            image_id, e)
        with self.cache.in_use(image_id), self.cache.lock(image_id):
            if self.cache.lookup(image_id) is not None:
                return 'existing'
            self.fetcher.fill(context, image, None, max_size, True, timings)
            return 'cached'

    def list_cached_images(self):
        """This host's base files and the RBD bases it uses."""
        return self.cache.list()

    def purge_image(self, image_id, reason):
        """Remove ``image_id``'s base file now, its RBD base if unused.

        :returns: ``[{'image_id', 'where'}]`` of what was removed.
        """
        LOG.info('Purging cached image %s: %s', image_id, reason)
        removed = [e for e in self.cache.purge(image_id)
                   if e['where'] == 'file']
        bases = self.storage.bases
        # A base being cloned now stays: the next purge run tries again.
        with bases.lock(image_id, timeout=0) as held:
            if held and bases.remove_if_unused(image_id, None):
                removed.append({'image_id': image_id, 'where': 'rbd'})
        return removed

    def clean_rbd_bases(self, now=None):
        """Remove our base images no host used for the minimum age.

        :returns: the image ids whose base image was removed.
        """
        min_age = max(self.conf.image_cache.rbd_base_min_age,
                      self.conf.rbd.base_lock_duration)
        bases = self.storage.bases
        removed = []
        for image_id in bases.unused(min_age, now):
            try:
                with bases.lock(image_id, timeout=0) as held:
                    if held and bases.remove_if_unused(image_id, min_age,
                                                       now):
                        removed.append(image_id)
                        self.cache.forget(image_id)
            except exception.ImagedException as e:
                # One base that cannot go now never stops the others.
                LOG.warning('Cannot remove the base image of %s now: %s',
                            image_id, e)
        return removed

    def forget_removed_bases(self):
        """Drop this host's records of base images no longer in the pool
        (one listing of the pool, no image opened)."""
        present = set(self.storage.bases.image_ids())
        for entry in self.cache.list():
            if entry['where'] == 'rbd' and entry['image_id'] not in present:
                self.cache.forget(entry['image_id'])

    def delete(self, instance_uuid, context=None):
        name = rbd_disks.disk_name(instance_uuid)
        with self._instance_lock(context, name):
            if self.storage.disks.remove(name):
                LOG.info('Deleted root disk %s/%s', self.storage.pool, name)
            else:
                LOG.info('Root disk %s/%s was already gone',
                         self.storage.pool, name)
            self.storage.disks.forget_lock(name)
