"""Which location of an image can be cloned: the one place that decides.

Only a raw image can be a copy-on-write clone. Its candidate locations come,
first that answers:

1. the image record: ``locations`` (Glance's ``show_multiple_locations``),
   else ``direct_url`` (``show_image_direct_url``), both off in a securely
   configured Glance;
2. Glance's service-only locations API, asked as imaged's own user;
3. with ``[glance] rbd_store_name`` set and no location cloneable: a copy of
   the image into that store (``copy-image``), then its locations again.

Each candidate is probed by the storage driver (``probe_location(url)``:
in our cluster, opens read-only). Every step taken lands in the call's
timings; a location is logged only through :func:`imaged.redact.location`.
"""

import collections
import threading

from oslo_log import log as logging

from imaged.image import store_copy
from imaged import redact

LOG = logging.getLogger(__name__)

NOT_CLONEABLE = (None, None)

# Images whose "cannot clone" reason was logged at info already.
_LOGGED_IMAGES = 4096


def record_urls(image):
    """The locations the record shows: ``locations``, else ``direct_url``."""
    urls = [loc.get('url') for loc in image.get('locations') or []
            if isinstance(loc, dict) and loc.get('url')]
    if not urls and image.get('direct_url'):
        urls = [image['direct_url']]
    return urls


def _urls(locations):
    return [loc.get('url') for loc in locations or []
            if isinstance(loc, dict) and loc.get('url')]


class CloneableLocations:
    """Finds a cloneable location of an image, asking Glance as needed."""

    def __init__(self, conf, glance_api, storage, copier=None):
        self.conf = conf
        self.glance = glance_api
        self.storage = storage
        self.copier = copier or store_copy.StoreCopier(conf, glance_api)
        self._logged = collections.OrderedDict()
        self._logged_lock = threading.Lock()

    def cloneable(self, context, image, timings):
        """``(location, parent_size)`` to clone, or ``(None, None)``.

        :param image: the record, as read with the caller's context (which
            proves the caller may read the image).
        :param timings: has ``step(name)``; gets one step per Glance call.
        """
        image_id = image['id']
        if image.get('disk_format') != 'raw':
            LOG.debug('Image %s is %s, not raw: not cloneable', image_id,
                      image.get('disk_format'))
            return NOT_CLONEABLE
        shown = record_urls(image)
        found = self._probe(image_id, shown)
        if found is not None:
            return found
        if image.get('locations'):
            # Glance shows every location in the record: none is ours.
            read_again = self._record_reader(context, image_id)
        else:
            urls, why = self.glance.image_locations(context, image_id)
            timings.step('locations api')
            if urls is None:
                # Blind, a copy could not be found either: download.
                self._log_once(image_id, 'Glance shows imaged no location '
                               'of image %s, so it is downloaded, not '
                               'cloned: %s', image_id, why)
                return NOT_CLONEABLE
            found = self._probe(image_id, _urls(urls))
            if found is not None:
                return found
            read_again = self._api_reader(context, image_id)
        return self._copy_and_probe(context, image, read_again, timings)

    def _record_reader(self, context, image_id):
        def read():
            return record_urls(self.glance.show(context, image_id))
        return read

    def _api_reader(self, context, image_id):
        def read():
            return _urls(self.glance.image_locations(context, image_id)[0])
        return read

    def _copy_and_probe(self, context, image, read_again, timings):
        image_id = image['id']
        store = self.conf.glance.rbd_store_name
        if not store:
            return NOT_CLONEABLE
        if store_copy.store_state(image, store) == 'present':
            self._log_once(image_id, 'Image %s is in store %s but no '
                           'location of it is cloneable here: is '
                           '[glance] rbd_store_name the store in this '
                           'cluster?', image_id, store)
            return NOT_CLONEABLE
        result = self.copier.copy(context, image_id, store)
        if result.outcome != store_copy.COPIED:
            timings.step('copy-image %s' % result.outcome)
            LOG.warning('Copy of image %s into store %s %s (%s): '
                        'downloading it instead', image_id, store,
                        result.outcome, result.reason)
            return NOT_CLONEABLE
        timings.step('copy-image')
        found = self._probe(image_id, read_again())
        if found is None:
            LOG.warning('Image %s was copied into store %s but no location '
                        'of it is cloneable here: is [glance] rbd_store_name '
                        'the store in this cluster?', image_id, store)
            return NOT_CLONEABLE
        return found

    def _probe(self, image_id, urls):
        for url in urls:
            location, size, reason = self.storage.probe_location(url)
            if location is not None:
                return location, size
            LOG.debug('Location %s of image %s is not cloneable: %s',
                      redact.location(url), image_id, reason)
        return None

    def _log_once(self, image_id, msg, *args):
        """Log at info the first time for an image, at debug after."""
        with self._logged_lock:
            first = image_id not in self._logged
            self._logged[image_id] = True
            while len(self._logged) > _LOGGED_IMAGES:
                self._logged.popitem(last=False)
        (LOG.info if first else LOG.debug)(msg, *args)
