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

"""Eviction: what this host's image cache removes, and when.

One owner for every way a complete cached copy goes (nova keeps it all in
its ``imagecache``): :class:`Eviction` runs, every ``[image_cache]
manager_interval`` seconds (on the schedule of :mod:`imaged.leftovers`,
which owns what is left *incomplete*: partials, trashed bases, scratch)

* on every host: its local base files unused for
  ``[image_cache] remove_unused_base_images_min_age``, then the least
  recently used ones above ``max_size_gb``;
* on the pool's cleanup host (one at a time, ``[image_cache]
  pool_cleanup``): the base images in Ceph no host used for
  ``rbd_base_min_age``;
* and the copies of images deleted in Glance (:class:`DeletedImages`), and
  ``purge_image`` for a purge asked for now.

Deleted images: each cached image is asked about at most every
``[image_cache] glance_check_interval`` seconds, with imaged's own
credentials. Only a clear answer deletes: a record whose status says the
image is gone, or a 404 when imaged's user may see every image (Glance
gives the same 404 for a private image of another project). Glance
unreachable, slow, failing or refusing (403) means "keep everything", and
the rest of that run asks nothing more.
"""

import time
from typing import Any, Callable, Iterable

from oslo_log import log as logging
from oslo_utils import units

from imaged import context as imaged_context
from imaged import exception
from imaged.imagecache import files as base_files

LOG = logging.getLogger(__name__)

GONE_STATUSES = ('deleted', 'pending_delete', 'killed')
DELETED = 'deleted'


class DeletedImages:
    """Asks Glance about cached images; purges the deleted ones.

    Remembers when each cached image was last asked about.
    """

    def __init__(self, conf: Any, glance_api: Any,
                 purge_image: Callable[[str, str], Any], notifications: Any,
                 clock: Any = time.monotonic) -> None:
        """:param purge_image: ``purge_image(image_id, reason)`` removes
            the image's copies now and returns what it removed."""
        self.conf = conf
        self.glance = glance_api
        self.purge_image = purge_image
        self.notifications = notifications
        self._clock = clock
        # Image id -> when Glance last answered.
        self._checked: dict[str, float] = {}
        # Deleted in Glance but still cached (an RBD base with clones):
        # removed at each run, without asking again, until it is gone.
        self._deleted: set[str] = set()
        self._warned_blind = False

    def _is_deleted(self, ctxt, image_id):
        """True/False from a clear answer; raises BackendUnavailable or
        ImageNotAuthorized when Glance gives none."""
        try:
            image = self.glance.show(ctxt, image_id)
        except exception.ImageNotFound:
            if self.glance.sees_every_image():
                return True
            # Glance hides other projects' private images from non-admin
            # users with the same 404 it gives for deleted ones.
            if not self._warned_blind:
                LOG.warning('Glance does not show imaged\'s own user every '
                            'image (no "admin" role): a 404 for a cached '
                            'image may be a private image of a project, so '
                            'nothing is purged on a 404')
                self._warned_blind = True
            return False
        return image.status in GONE_STATUSES

    def run(self, cached_image_ids: Iterable[str],
            base_image_ids: Iterable[str] = ()) -> list[dict[str, str]]:
        """Ask about the images due; purge the deleted ones.

        :param cached_image_ids: what ``list_cached_images`` shows.
        :param base_image_ids: the images with a base image in the pool: a
            deleted image's base still cloned when its file went stays
            there, and is retried until it goes.
        :returns: what was removed, ``[{'image_id', 'where'}]``.
        """
        interval = self.conf.image_cache.glance_check_interval
        cached = sorted(set(cached_image_ids))
        for gone in set(self._checked) - set(cached):
            del self._checked[gone]
        self._deleted &= set(cached) | set(base_image_ids)
        removed = []
        for image_id in sorted(self._deleted):
            removed.extend(self._purge(image_id))
        if not interval:
            return removed
        ctxt = imaged_context.get_admin_context()
        now = self._clock()
        for image_id in cached:
            if image_id in self._deleted:
                continue
            last = self._checked.get(image_id)
            if last is not None and now - last < interval:
                continue
            try:
                deleted = self._is_deleted(ctxt, image_id)
            except exception.ImageNotAuthorized as e:
                # Not a "no": maybe our role changed. Keep it, ask later.
                LOG.warning('Keeping cached image %s: %s', image_id, e)
                self._checked[image_id] = now
                continue
            except exception.ImagedException as e:
                LOG.warning('Cannot ask Glance whether cached images were '
                            'deleted; keeping them all: %s', e)
                break
            self._checked[image_id] = now
            if deleted:
                self._deleted.add(image_id)
                removed.extend(self._purge(image_id))
        return removed

    def _purge(self, image_id):
        try:
            removed = self.purge_image(image_id, DELETED)
        except exception.ImagedException as e:
            LOG.warning('Image %s was deleted in Glance, but its cached '
                        'copies cannot be removed now: %s', image_id, e)
            return []
        for entry in removed:
            LOG.info('Removed the %s base of image %s: deleted in Glance',
                     entry['where'], image_id)
            self.notifications.evict(image_id, entry['where'], DELETED)
        return removed


class Eviction:
    """The periodic cleanup and ``purge_image`` of one host."""

    def __init__(self, conf: Any, glance_api: Any, storage: Any, files: Any,
                 notifications: Any) -> None:
        self.conf = conf
        self.storage = storage
        self.files = files
        self.notifications = notifications
        self.deleted = DeletedImages(conf, glance_api, self.purge_image,
                                     notifications)

    def run(self, now: float | None = None, pool_wide: bool = False) -> None:
        """One cleanup run: this host's files, the pool's unused bases if
        this host cleans the pool now (``pool_wide``), then the deleted
        images' copies."""
        for entry in self.clean_files(now):
            self.notifications.evict(entry['image_id'], entry['where'],
                                     entry['reason'])
        if pool_wide:
            try:
                for image_id in self.clean_rbd_bases():
                    self.notifications.evict(image_id, base_files.RBD, 'age')
            except exception.ImagedException as e:
                LOG.warning('Cannot clean base images in Ceph now: %s', e)
        try:
            self.forget_removed_bases()
            cached = [entry['image_id'] for entry in self.files.list()
                      if pool_wide or entry['where'] == base_files.FILE]
            bases = self.storage.bases.image_ids() if pool_wide else ()
        except exception.ImagedException as e:
            LOG.warning('Cannot list the cached images now: %s', e)
            return
        self.deleted.run(cached, bases)

    # -- local base files -----------------------------------------------------

    def clean_files(self, now: float | None = None) -> list[dict[str, Any]]:
        """Remove entries unused for too long, then evict LRU files to fit.

        Records of RBD bases that age out are only records: the base itself
        goes by :meth:`clean_rbd_bases`.

        :returns: ``[{'image_id', 'where', 'reason': 'age' | 'size'}]`` of
            the base files removed.
        """
        now = time.time() if now is None else now
        opts = self.conf.image_cache
        min_age = opts.remove_unused_base_images_min_age
        max_bytes = opts.max_size_gb * units.Gi
        removed, kept = [], []
        for entry in self.files.entries():
            if min_age and now - entry.mtime >= min_age and \
                    self.files.remove_unless_used(entry):
                LOG.info('Removed cached image %s (%s), unused for %ds',
                         entry.image_id, entry.where, now - entry.mtime)
                removed.append({'image_id': entry.image_id,
                                'where': entry.where, 'reason': 'age'})
            else:
                kept.append(entry)
        used = sum(e.used_bytes for e in kept)
        for entry in kept:
            if not max_bytes or used <= max_bytes:
                break
            if entry.where == base_files.FILE and \
                    self.files.remove_unless_used(entry):
                LOG.info('Evicted base file %s to keep the cache under '
                         '%.1f GiB', entry.image_id, opts.max_size_gb)
                used -= entry.used_bytes
                removed.append({'image_id': entry.image_id,
                                'where': base_files.FILE, 'reason': 'size'})
        if removed:
            LOG.info('Image cache cleanup removed %d base files',
                     len(removed))
        return [e for e in removed if e['where'] == base_files.FILE]

    # -- the pool's base images -----------------------------------------------

    def clean_rbd_bases(self, now: float | None = None) -> list[str]:
        """Remove the base images no host used for the minimum age.

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
                        self.files.forget(image_id)
            except exception.ImagedException as e:
                # One base that cannot go now never stops the others.
                LOG.warning('Cannot remove the base image of %s now: %s',
                            image_id, e)
        return removed

    def forget_removed_bases(self) -> None:
        """Drop this host's records of base images no longer in the pool
        (one listing of the pool, no image opened)."""
        present = set(self.storage.bases.image_ids())
        for entry in self.files.list():
            if entry['where'] == base_files.RBD and \
                    entry['image_id'] not in present:
                self.files.forget(entry['image_id'])

    # -- now ------------------------------------------------------------------

    def purge_image(self, image_id: str, reason: str) -> list[dict[str, str]]:
        """Remove ``image_id``'s base file now, its RBD base if unused.

        :returns: ``[{'image_id', 'where'}]`` of what was removed.
        """
        LOG.info('Purging cached image %s: %s', image_id, reason)
        self.files.base_image_path(image_id)  # validates the id
        removed = [{'image_id': e.image_id, 'where': e.where}
                   for e in self.files.entries()
                   if e.image_id == image_id and
                   self.files.remove_unless_used(e)]
        removed = [e for e in removed if e['where'] == base_files.FILE]
        bases = self.storage.bases
        # A base being cloned now stays: the next purge run tries again.
        # The base of an image deleted in Glance goes even with clones
        # (to the RBD trash, until its last clone is gone).
        with bases.lock(image_id, timeout=0) as held:
            if held and bases.remove_if_unused(image_id, None,
                                               deleted=reason == DELETED):
                removed.append({'image_id': image_id,
                                'where': base_files.RBD})
        return removed
