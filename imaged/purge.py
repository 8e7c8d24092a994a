"""Purge of the cached copies of images deleted in Glance.

The cleanup task hands over what is cached; each image is asked about at
most every ``[image_cache] glance_check_interval`` seconds, with imaged's
own credentials. Only a clear answer deletes: a record whose status says
the image is gone, or a 404 when imaged's user may see every image (Glance
gives the same 404 for a private image of another project). Glance
unreachable, slow, failing or refusing (403) means "keep everything", and
the rest of that run asks nothing more.
"""

import time

from oslo_log import log as logging

from imaged import context as imaged_context
from imaged import exception

LOG = logging.getLogger(__name__)

GONE_STATUSES = ('deleted', 'pending_delete', 'killed')
DELETED = 'deleted'


class DeletedImagePurge:
    """Remembers when each cached image was last asked about."""

    def __init__(self, conf, glance_api, root_disks, notifications,
                 clock=time.monotonic):
        self.conf = conf
        self.glance = glance_api
        self.root_disks = root_disks
        self.notifications = notifications
        self._clock = clock
        self._checked = {}  # image_id -> when Glance last answered
        # Deleted in Glance but still cached (an RBD base with clones):
        # removed at each run, without asking again, until it is gone.
        self._deleted = set()
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
        return image.get('status') in GONE_STATUSES

    def run(self, cached_image_ids, base_image_ids=()):
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
            removed = self.root_disks.purge_image(image_id, DELETED)
        except exception.ImagedException as e:
            LOG.warning('Image %s was deleted in Glance, but its cached '
                        'copies cannot be removed now: %s', image_id, e)
            return []
        for entry in removed:
            LOG.info('Removed the %s base of image %s: deleted in Glance',
                     entry['where'], image_id)
            self.notifications.evict(image_id, entry['where'], DELETED)
        return removed
